"""What `neuralreg demo` prints: demo_summary (per scan: Eq. 1 weights and the predictive model against
the simulation's truth; per scan group: the Fig. 1C/D checks; the regularization targets) and
classifier_summary (per data set, recipe and regularizer, over seeds), as dicts (--json) and as text."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import tables
from .tables import CLASSIFIER_KEY


def demo_summary(modules, model: dict | None = None) -> dict:
    """The numbers the demo prints: per scan, Spearman(w_a, true reliability), the predictive
    model's correlations and Spearman(v_a, true reliability); per group, the Fig. 1C/D checks.
    `model` ({'model_hash': ..., 'model_seed': ...}) picks the predictive model (default: the first
    config and its first seed; a key without 'model_seed' means seed 0)."""
    from scipy.stats import spearmanr
    experiment, predictive, similarity = modules["experiment"], modules["predictive"], modules["similarity"]
    if model is None:
        models = (predictive.PredictiveModelConfig.proj() * predictive.PredictiveSeed.proj()).keys(
            order_by="model_hash, model_seed")
        model = models[0] if models else {"model_hash": "", "model_seed": 0}
    model = predictive.model_key(model)
    scans = {}
    for key in experiment.Scan.keys(order_by="animal_id, session, scan_idx"):
        scan = (experiment.Scan & key).fetch1()
        row = {"neurons": scan["n_neurons"], "trials": scan["n_trials"],
               "oracle_images": scan["n_oracle_images"], "source": scan["source"]}
        joined = experiment.Neuron.Unit * experiment.SimulatedUnit & key
        if len(joined):
            w, truth = joined.to_arrays("snr_weight", "true_reliability")
            row["median_w"] = float(np.median(w))
            row["spearman_w_truth"] = float(spearmanr(w, truth).statistic)
        for fit in (predictive.PredictiveModel & key & model).to_dicts():
            mkey = {**key, **model}
            row["model_test_corr"] = fit["mean_test_corr"]
            row["model_oracle_corr"] = fit["mean_oracle_corr"]
            row["model_epochs"] = fit["epochs_run"]
            row["model_seconds"] = fit["train_seconds"]
            units = predictive.PredictiveModel.Unit * experiment.SimulatedUnit & mkey
            if len(units):
                v, truth = units.to_arrays("test_corr", "true_reliability")
                row["spearman_v_truth"] = float(spearmanr(v, truth).statistic)
        scans["{animal_id}-{session}-{scan_idx}".format(**key)] = row
    groups = {}
    for st in (similarity.SimilarityStability & model).to_dicts(order_by="scan_group"):
        groups[st["scan_group"]] = {
            "scans": st["n_scans"], "oracle_images": st["n_oracle_images"],
            "r_model_oracle": st["r_model_oracle"], "r_data_oracle": st["r_data_oracle"],
            "eq4_scan_std": (st["scan_fluctuation"] or {}).get("std"),
            "eq5_repeat_std": st["repeat_fluctuation"]["std"]}
    configs = similarity.SimilarityConfig & [model, "model_hash is null"]
    targets = [{"group": r["scan_group"], "label": (similarity.SimilarityConfig & r).fetch1("label"),
                "images": r["n_images"], "scans": r["n_scans"], "std_offdiag": r["std_offdiag"]}
               for r in (similarity.AveragedSimilarity & configs.proj()).to_dicts(order_by="scan_group, sim_hash")]
    return {"scans": scans, "groups": groups, "targets": targets}


def format_demo_summary(summary: dict) -> str:
    """demo_summary as the demo prints it: a table of scans, the Fig. 1C/D checks per scan group and the
    regularization targets."""
    nan = float("nan")
    lines = []
    lines.append(f"\n{'scan':>14} {'neurons':>8} {'trials':>7} {'oracle':>7} {'median w_a':>11} {'rho(w_a,true)':>14} "
                 f"{'test r':>7} {'oracle r':>9} {'rho(v_a,true)':>14} {'train s':>8}")
    for name, row in summary["scans"].items():
        lines.append(f"{name:>14} {row['neurons']:>8} {row['trials']:>7} {row['oracle_images']:>7} "
                     f"{row.get('median_w', nan):>11.3f} {row.get('spearman_w_truth', nan):>14.3f} "
                     f"{row.get('model_test_corr', nan):>7.3f} {row.get('model_oracle_corr', nan):>9.3f} "
                     f"{row.get('spearman_v_truth', nan):>14.3f} {row.get('model_seconds', nan):>8.0f}")
    for name, g in summary["groups"].items():
        eq4 = g["eq4_scan_std"]
        lines.append(f"\nscan group {name} ({g['scans']} scans, {g['oracle_images']} oracle images):\n"
                     f"  r(S_model, S_oracle) = {g['r_model_oracle']:.3f}   r(S_data, S_oracle) = {g['r_data_oracle']:.3f}"
                     f"   (paper, Fig. 1D: 0.73 and 0.39)\n"
                     f"  s.d. of Eq. 4 (across scans) = {eq4 if eq4 is None else format(eq4, '.3f')}   "
                     f"s.d. of Eq. 5 (across repeats) = {g['eq5_repeat_std']:.3f}   (paper, Fig. 1C: Eq. 4 narrower)")
    if summary["targets"]:
        lines.append("\naveraged similarity matrices (regularization targets):")
        for t in summary["targets"]:
            lines.append(f"  {t['group']:<16} {t['label']:<24} {t['images']:>5} images x {t['scans']} scans, "
                         f"s.d. off-diagonal {t['std_offdiag']:.3f}")
    return "\n".join(lines)


def classifier_summary(modules) -> list[dict]:
    """Per data set, classifier recipe and regularizer: clean test accuracy over seeds, the held-out
    similarity loss before and after training, the layer with the largest final gamma_k, the accuracy
    at the strongest level of the first noise config and the median and mean minimal L2 / Linf
    perturbation of the first attack suite (clean errors as 0; when evaluated). Built on the queries
    above (one query per table)."""
    runs = tables.classifier_table(modules)
    if runs.empty:
        return []
    key = CLASSIFIER_KEY
    runs = runs.sort_values(["dataset", "config_name", "kind", "seed"], kind="stable")
    noisy, noise_sd = pd.Series(dtype=float), None
    noise = tables.noise_table(modules)
    if not noise.empty:
        noise = noise[noise["noise_name"] == sorted(noise["noise_name"].unique())[0]]
        noise_sd = float(noise["sigma"].max())
        noisy = noise[noise["sigma"] == noise_sd].set_index(key)["accuracy"]
    medians, means = {}, {}
    perturbation = tables.perturbation_table(modules)
    if not perturbation.empty:
        perturbation = perturbation[perturbation["suite"] == sorted(perturbation["suite"].unique())[0]]
        medians = {norm: part.set_index(key)["median"] for norm, part in perturbation.groupby("norm")}
        means = {norm: part.set_index(key)["mean"] for norm, part in perturbation.groupby("norm")}
    weights = pd.DataFrame(modules["classifier"].RegularizedClassifier.LayerWeight.to_dicts())
    top = (weights.loc[weights.groupby(key)["gamma"].idxmax()].set_index(key)["layer"] if not weights.empty
           else pd.Series(dtype=int))
    out = []
    for (_, config, label, group), part in runs.groupby(["dataset", "config_name", "label", "scan_group"],
                                                         sort=False, dropna=False):
        index = pd.MultiIndex.from_frame(part[key])
        held = part.dropna(subset=["heldout_loss"])
        acc = part["test_accuracy"].to_numpy(float)
        out.append({
            "dataset": part["dataset"].iloc[0], "config": config, "regularizer": label,
            "scan_group": None if pd.isna(group) else group,
            "accuracy": acc.tolist(), "seconds": part["train_seconds"].tolist(),
            "heldout_before": held["initial_heldout_loss"].tolist(), "heldout_after": held["heldout_loss"].tolist(),
            "top_layer": [int(k) for k in top.reindex(index).dropna()],
            "noisy_accuracy": noisy.reindex(index).dropna().tolist(), "noise_sd": noise_sd if len(noisy) else None,
            **{f"median_{n}": medians[n].reindex(index).dropna().tolist() if n in medians else []
               for n in ("l2", "linf")},
            **{f"mean_{n}": means[n].reindex(index).dropna().tolist() if n in means else []
               for n in ("l2", "linf")},
            "seeds": len(acc), "mean_accuracy": float(acc.mean()),
            "sem_accuracy": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else 0.0})
    return out


def format_classifiers(rows: list[dict]) -> str:
    """classifier_summary as the demo prints it: one line per data set, recipe and regularizer."""
    if not rows:
        return ""
    lines = []
    sd = next((r["noise_sd"] for r in rows if r["noise_sd"] is not None), None)
    noisy = f"acc. at sd {sd:g}" if sd is not None else "noisy acc."
    lines.append(f"\n{'classifier':<36} {'seeds':>5} {'clean accuracy':>16} {noisy:>14} {'median L2':>10} "
                 f"{'mean L2':>8} {'median Linf':>11} {'mean Linf':>10} {'held-out Eq. 8 loss':>22} {'top layer':>10} "
                 f"{'train s':>8}")

    def mean(values, fmt):
        return format(float(np.mean(values)), fmt) if values else "-"

    for r in rows:
        held = (f"{np.mean(r['heldout_before']):.3f} -> {np.mean(r['heldout_after']):.3f}"
                if r["heldout_after"] else "-")
        top = ",".join(str(k) for k in r["top_layer"]) or "-"
        name = f"{r['regularizer']} ({r['config']}, {r['dataset']})"
        lines.append(f"{name:<36} {r['seeds']:>5} {r['mean_accuracy']:>9.3f} +- {r['sem_accuracy']:.3f} "
                     f"{mean(r['noisy_accuracy'], '.3f'):>14} {mean(r['median_l2'], '.4f'):>10} "
                     f"{mean(r['mean_l2'], '.4f'):>8} {mean(r['median_linf'], '.4f'):>11} {mean(r['mean_linf'], '.4f'):>10} "
                     f"{held:>22} {top:>10} {np.mean(r['seconds']):>8.0f}")
    return "\n".join(lines)
