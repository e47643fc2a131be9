"""The paper's figures and tables, redrawn from queries alone: `write_report(prefix, out_dir)`.

Every figure comes with the CSV of exactly the numbers it plots (the CSV is the query result, the
PNG its picture). What is drawn when the tables hold it:

    fig1_similarity_<group>.png   Fig. 1A-B: S_oracle and S_model on the oracle images of a scan group,
                                  rows and columns in one order (hierarchical clustering of S_oracle);
                                  Fig. 1C: histograms of Eq. 4 (across scans) and Eq. 5 (across repeats);
                                  Fig. 1D: r(S_model, S_oracle) and r(S_data, S_oracle) per scan
    fig1_checks.csv               the Fig. 1C/D numbers per scan group and predictive model config
    fig4_noise_<dataset>_<config>.png / fig4_noise.csv
                                  Fig. 4: accuracy vs noise sd per regularizer, mean +- SEM over seeds
    fig5_minimal_perturbation_<dataset>_<config>_<suite>.png / fig5_minimal_perturbation.csv
                                  Fig. 5: the median minimal adversarial distance (minimum over the
                                  suite's attacks) against the query budget, every attack limited to that
                                  many iterations per run (MinimalPerturbation.Budget), per regularizer
                                  and norm, mean +- SEM over seeds of the per-model median; dashed: the
                                  median without the clean errors. At the largest budget it is the
                                  final score.
    fig7_mean_perturbation_<dataset>_<config>_<suite>.png / fig7_mean_perturbation.csv
                                  supplement Fig. 7: the mean minimal distance per regularizer and norm
                                  (bars: mean over seeds of the per-model mean; error bars: SEM over
                                  seeds, or over samples for one seed); the CSV has the median and the
                                  mean, each with and without the clean errors (`_correct`), and the
                                  SEM over samples
    fig6_alpha_<dataset>.png / fig6_alpha.csv
                                  supplement Fig. 6: accuracy vs noise per alpha (Neural (model); alpha 0
                                  = None), when more than one alpha was trained
    table1_gamma.csv              supplement Table 1: mean final gamma_k per layer and alpha
    controls_<dataset>_<config>_<noise>.png / controls.csv
                                  the known-answer controls (when Lowpass or Highpass classifiers were
                                  trained): accuracy vs noise sd per regularizer, mean +- SEM over seeds,
                                  and each regularizer's paired difference from None: per seed (same
                                  seed, same noisy test images) acc - acc_None, its mean, SEM over seeds
                                  and a two-sided paired t-test over seeds (scipy.stats.ttest_rel); per
                                  test image the seed-averaged difference of correctness, with a
                                  two-sided Wilcoxon signed-rank test over images (scipy.stats.wilcoxon,
                                  images whose difference is 0 left out)
    classifiers.csv               every classifier: clean accuracy, held-out loss, device, ...; per attack
                                  suite: the clean accuracy on the attacked samples and the robust
                                  accuracy at RobustBench's budgets (Linf 8/255, L2 0.5) from the stored
                                  per-sample minimal distances (robust: no attack found an adversarial
                                  at or below the budget; clean errors are not robust)

The data set's display name goes into every figure title, so the offline stand-in is never
mistaken for CIFAR.

The summaries `neuralreg demo` prints come from here too: demo_summary (per scan: Eq. 1 weights and
the predictive model against the simulation's truth; per scan group: the Fig. 1C/D checks; the
regularization targets) and classifier_summary (per data set, recipe and regularizer, over seeds),
as dicts (the demo's --json) and as text (format_demo_summary, format_classifiers).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("neuralreg.report")

REG_ORDER = ["None", "Neural (model)", "Neural (data)", "Shuffle", "VGG", "Lowpass", "Highpass"]
CONTROL_KINDS = ("lowpass", "highpass")       # the known-answer pixel controls (a controls study)
from .compute.attack_scores import NORMS  # noqa: E402  (numpy only)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()


def _sem(x) -> float:
    """Standard error of the mean (0 for one value, nan when a value is infinite)."""
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all():
        return float("nan")
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def _save(fig, out: Path, stem: str, keys) -> Path:
    """Save a figure as <stem>_<slug of keys>.png (or <stem>.png) in `out` and close it."""
    path = out / (f"{stem}_{_slug('_'.join(str(k) for k in keys))}.png" if keys else f"{stem}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _reg_sort(labels) -> list:
    return sorted(labels, key=lambda s: (REG_ORDER.index(s) if s in REG_ORDER else len(REG_ORDER), s))


# ------------------------------------------------------------------ queries

def classifier_table(modules) -> pd.DataFrame:
    """One row per trained classifier with its regularizer label, config name, alpha and data set name."""
    clf = modules["classifier"]
    rel = (clf.RegularizedClassifier * clf.Regularizer.proj("kind", "label", "scan_group")
           * clf.ClassifierConfig.proj("config_name", cfg_alpha="alpha", arch="arch")
           * clf.ClassificationDataset.proj("display_name", "is_stand_in"))
    df = pd.DataFrame(rel.to_dicts())
    if df.empty:
        return df
    keep = ["dataset", "display_name", "is_stand_in", "config_name", "arch", "cfg_alpha", "alpha", "kind", "label",
            "scan_group", "seed", "test_accuracy", "train_accuracy", "initial_heldout_loss", "heldout_loss",
            "epochs_run", "resumed_from_epoch", "pairs_per_step", "train_seconds", "device", "code_version",
            "clf_hash", "reg_hash"]
    return df[keep]


CLASSIFIER_KEY = ["dataset", "clf_hash", "reg_hash", "seed"]


def _labelled(rel, modules) -> pd.DataFrame:
    """The rows of `rel` (keyed by classifier) joined with the classifier's labels."""
    df = pd.DataFrame(rel.to_dicts())
    return df if df.empty else df.merge(classifier_table(modules), on=CLASSIFIER_KEY)


def _over_seeds(df: pd.DataFrame, groups: list, value: str, name: str) -> pd.DataFrame:
    """mean_<name>, sem_<name> of `value` over seeds within `groups`, with the number of seeds."""
    if df.empty:
        return df
    return df.groupby(groups, as_index=False).agg(**{f"mean_{name}": (value, "mean"), f"sem_{name}": (value, _sem),
                                                     "seeds": ("seed", "nunique")})


def noise_table(modules) -> pd.DataFrame:
    """Per classifier and noise level: accuracy (with the classifier's labels)."""
    return _labelled(modules["evaluation"].NoiseRobustness.Level.proj("sigma", "accuracy"), modules)


def noise_summary(modules) -> pd.DataFrame:
    """Fig. 4: mean and SEM over seeds of the accuracy per data set, config, regularizer and sd."""
    return _over_seeds(noise_table(modules), ["display_name", "config_name", "noise_name", "label", "sigma"],
                       "accuracy", "accuracy")


SCORES = ("median", "mean", "median_correct", "mean_correct")   # null in the database: infinite
PERTURBATION_GROUP = ["display_name", "config_name", "suite", "label", "norm"]


def _infinite_nulls(df: pd.DataFrame, columns) -> pd.DataFrame:
    for c in columns:
        if c in df:
            df[c] = df[c].astype(float).fillna(np.inf)
    return df


def perturbation_table(modules) -> pd.DataFrame:
    """Figs. 5/7: per classifier, suite and norm the median and mean minimal perturbation, each also
    over the clean-correct samples only (`_correct`), and the mean's SEM over samples (a null score,
    i.e. too many samples never fooled, is infinite: it raises the mean over seeds instead of
    vanishing from it)."""
    rel = modules["evaluation"].MinimalPerturbation.Norm.proj(*SCORES, "sem", "sem_correct", "success_rate")
    df = _labelled(rel, modules)
    return df if df.empty else _infinite_nulls(df, SCORES)


def _score_summary(df: pd.DataFrame, groups: list, scores) -> pd.DataFrame:
    """mean_<s> and sem_<s> over seeds of every score s within `groups`, with the number of seeds."""
    if df.empty:
        return df
    aggs = {}
    for sc in scores:
        aggs[f"mean_{sc}"] = (sc, "mean")
        aggs[f"sem_{sc}"] = (sc, _sem)
    return df.groupby(groups, as_index=False).agg(**aggs, seeds=("seed", "nunique"))


def perturbation_summary(modules) -> pd.DataFrame:
    """Figs. 5/7: mean and SEM over seeds of the per-model median and mean (with and without the
    clean errors), and the mean over seeds of the per-model SEM over samples, per regularizer and norm."""
    df = perturbation_table(modules)
    out = _score_summary(df, PERTURBATION_GROUP, [s for s in SCORES if s in df])
    if not df.empty and "sem" in df:
        samples = df.groupby(PERTURBATION_GROUP, as_index=False)["sem"].mean().rename(columns={"sem": "sem_samples"})
        out = out.merge(samples, on=PERTURBATION_GROUP)
    return out


def budget_table(modules) -> pd.DataFrame:
    """Fig. 5's curve: per classifier, suite, norm and query budget the median and mean minimal
    perturbation when every attack may use at most `budget` iterations per run."""
    rel = modules["evaluation"].MinimalPerturbation.Budget.proj(*SCORES, "success_rate")
    df = _labelled(rel, modules)
    return df if df.empty else _infinite_nulls(df, SCORES)


def budget_summary(modules) -> pd.DataFrame:
    """Fig. 5: mean and SEM over seeds of the per-model median (and the other scores) per budget."""
    return _score_summary(budget_table(modules), PERTURBATION_GROUP + ["budget"], SCORES)


def robust_accuracy_table(modules) -> pd.DataFrame:
    """Per classifier and attack suite: the clean accuracy on the attacked samples and the robust
    accuracy at RobustBench's budgets (compute.attack_scores.ROBUSTBENCH_BUDGETS: Linf 8/255, L2 0.5) from
    the stored per-sample minimal distances, one column per suite (wide, keyed by CLASSIFIER_KEY)."""
    from .compute.attack_scores import ROBUSTBENCH_BUDGETS, robust_accuracy
    ev = modules["evaluation"]
    rel = ev.MinimalPerturbation.Norm & [{"norm": n} for n in ROBUSTBENCH_BUDGETS]
    rows = {}
    for r in (rel * ev.MinimalPerturbation.proj("n_correct", "n_samples")).to_dicts():
        key = tuple(r[k] for k in CLASSIFIER_KEY)
        row = rows.setdefault(key, dict(zip(CLASSIFIER_KEY, key)))
        row[f"attacked_clean_acc_{r['suite']}"] = r["n_correct"] / r["n_samples"] if r["n_samples"] else np.nan
        row[f"robust_acc_{r['norm']}_{ROBUSTNESS_LABELS[r['norm']]}_{r['suite']}"] = \
            robust_accuracy(np.asarray(r["distances"], float), ROBUSTBENCH_BUDGETS[r["norm"]])
    return pd.DataFrame(list(rows.values()))


ROBUSTNESS_LABELS = {"linf": "8_255", "l2": "0.5"}     # column names of ROBUSTBENCH_BUDGETS


def gamma_table(modules) -> pd.DataFrame:
    """Table 1: mean final gamma_k per layer and alpha over the regularized classifiers."""
    clf = modules["classifier"]
    rel = clf.RegularizedClassifier.LayerWeight * clf.ClassifierConfig.proj("alpha") \
        * clf.Regularizer.proj("label")
    df = pd.DataFrame(rel.to_dicts())
    if df.empty:
        return df
    table = (df.groupby(["label", "alpha", "layer"], as_index=False)
             .agg(mean_gamma=("gamma", "mean"), models=("seed", "count")))
    return table.pivot_table(index=["label", "alpha"], columns="layer", values="mean_gamma").reset_index() \
        .rename(columns=lambda c: f"gamma_{c}" if isinstance(c, (int, np.integer)) else c)


def noise_correct_table(modules) -> pd.DataFrame:
    """Per classifier and noise level: accuracy and the per-test-image correctness (bool array)."""
    return _labelled(modules["evaluation"].NoiseRobustness.Level.proj("sigma", "accuracy", "correct"), modules)


def _paired(reg: pd.DataFrame, none: pd.DataFrame) -> dict:
    """The paired comparison of one regularizer with None at one noise level. reg/none: one row per
    seed with 'seed', 'accuracy', 'correct'. Pairs are the seeds both have (same noisy images)."""
    from scipy import stats
    both = sorted(set(reg["seed"]) & set(none["seed"]))
    out = {"paired_seeds": len(both), "diff_vs_none_mean": np.nan, "diff_vs_none_sem": np.nan,
           "p_seeds_paired_t": np.nan, "n_images": 0, "diff_images_mean": np.nan, "p_images_wilcoxon": np.nan}
    if not both:
        return out
    r, n = reg.set_index("seed").loc[both], none.set_index("seed").loc[both]
    diff = r["accuracy"].to_numpy(float) - n["accuracy"].to_numpy(float)
    out["diff_vs_none_mean"], out["diff_vs_none_sem"] = float(diff.mean()), _sem(diff)
    if len(both) > 1 and np.ptp(diff) > 0:
        out["p_seeds_paired_t"] = float(stats.ttest_rel(r["accuracy"].to_numpy(float),
                                                        n["accuracy"].to_numpy(float)).pvalue)
    correct_r = np.stack([np.asarray(c, dtype=float) for c in r["correct"]])
    correct_n = np.stack([np.asarray(c, dtype=float) for c in n["correct"]])
    if correct_r.shape == correct_n.shape:
        per_image = (correct_r - correct_n).mean(axis=0)          # seed-averaged, per test image
        out["n_images"] = int(per_image.size)
        out["diff_images_mean"] = float(per_image.mean())
        if np.any(per_image != 0):
            out["p_images_wilcoxon"] = float(stats.wilcoxon(per_image, zero_method="wilcox").pvalue)
    return out


CONTROL_GROUP = ["dataset", "display_name", "config_name", "clf_hash", "noise_name"]


def controls_summary(modules=None, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """controls.csv: for every data set, recipe and noise config whose classifiers include a
    Lowpass or Highpass control and None, per regularizer and noise sd: seeds, accuracy mean and SEM
    over seeds, and the paired comparison with None (`_paired`)."""
    df = noise_correct_table(modules) if table is None else table
    if df.empty:
        return pd.DataFrame()
    rows = []
    for keys, group in df.groupby(CONTROL_GROUP, sort=True):
        kinds = set(group["kind"])
        if "none" not in kinds or not kinds & set(CONTROL_KINDS):
            continue
        for sigma, level in group.groupby("sigma", sort=True):
            none = level[level["kind"] == "none"]
            for label in _reg_sort(level["label"].unique()):
                part = level[level["label"] == label]
                acc = part["accuracy"].to_numpy(float)
                rows.append({**dict(zip(CONTROL_GROUP, keys)), "regularizer": label, "kind": part["kind"].iloc[0],
                             "noise_sd": float(sigma), "seeds": int(part["seed"].nunique()),
                             "accuracy_mean": float(acc.mean()), "accuracy_sem": _sem(acc),
                             **_paired(part, none)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ figures

def _cluster_order(matrix: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform
    d = np.clip(1 - matrix, 0, 2)
    np.fill_diagonal(d, 0)
    return leaves_list(linkage(squareform((d + d.T) / 2, checks=False), method="average"))


def figure1(modules, out: Path) -> list[Path]:
    sim = modules["similarity"]
    plt = _plt()
    written = []
    rows = []
    for st in sim.SimilarityStability.to_dicts(order_by="scan_group, model_hash, model_seed"):
        model = {"model_hash": st["model_hash"], "model_seed": st["model_seed"]}     # one trained predictive model
        key = {"scan_group": st["scan_group"], **model}
        members = (sim.SimilarityStability.Member & key).to_dicts(order_by="animal_id, session, scan_idx")
        rows += [{"scan_group": st["scan_group"], **model,
                  "scan": "{animal_id}-{session}-{scan_idx}".format(**m), "r_model_oracle": m["r_model_oracle"],
                  "r_data_oracle": m["r_data_oracle"], "repeat_fluctuation_std": m["repeat_fluctuation_std"],
                  "eq4_std": (st["scan_fluctuation"] or {}).get("std"),
                  "eq5_std": st["repeat_fluctuation"]["std"]} for m in members]
        cfg = sim.SimilarityConfig & "image_subset = 'oracle'"
        mats = {}
        for method in ("oracle", "model"):
            rel = sim.AveragedSimilarity & {"scan_group": st["scan_group"]} & \
                (cfg & {"method": method} & ([model] if method == "model" else {})).proj()
            if len(rel) == 1:
                mats[method] = np.asarray(rel.fetch1("matrix").load())
        fig, axes = plt.subplots(1, 4, figsize=(17, 4))
        if "oracle" in mats:
            order = _cluster_order(mats["oracle"])
            for ax, (method, title) in zip(axes[:2], (("oracle", "A  S_oracle (Eq. 3)"), ("model", "B  S_model (Eq. 6)"))):
                if method in mats:
                    m = mats[method][np.ix_(order, order)].copy()
                    np.fill_diagonal(m, np.nan)
                    lim = np.nanpercentile(np.abs(m), 99)
                    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
                    fig.colorbar(im, ax=ax, fraction=0.046)
                ax.set_title(title)
                ax.set_xlabel("oracle image (clustered by S_oracle)")
        values = {}
        for name in ("scan_values", "repeat_values"):
            if st[name] is not None:
                values[name] = np.asarray(st[name].load())
        ax = axes[2]
        for name, label in (("scan_values", "Eq. 4: across scans"), ("repeat_values", "Eq. 5: across repeats")):
            if name in values:
                ax.hist(values[name], bins=60, density=True, histtype="step", label=f"{label} (s.d. {values[name].std():.3f})")
        ax.set_title("C  similarity fluctuations")
        ax.set_xlabel("difference of similarity")
        ax.legend(fontsize=8)
        ax = axes[3]
        x = np.arange(len(members))
        ax.bar(x - 0.2, [m["r_model_oracle"] for m in members], 0.4, label="r(S_model, S_oracle)")
        ax.bar(x + 0.2, [m["r_data_oracle"] for m in members], 0.4, label="r(S_data, S_oracle)")
        ax.set_xticks(x, ["{animal_id}-{session}-{scan_idx}".format(**m) for m in members], rotation=30, fontsize=7)
        ax.set_title(f"D  mean {st['r_model_oracle']:.2f} vs {st['r_data_oracle']:.2f} (paper 0.73 vs 0.39)")
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=8, loc="upper center", ncol=2)
        fig.suptitle(f"Fig. 1, scan group {st['scan_group']} ({st['n_scans']} scans, {st['n_oracle_images']} oracle images)")
        written.append(_save(fig, out, "fig1_similarity", [st["scan_group"]]))
    if rows:
        path = out / "fig1_checks.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        written.append(path)
    return written


def _line_panels(summary: pd.DataFrame, group_cols, curve_col, out: Path, stem: str, title: str,
                 curve_name=str) -> list[Path]:
    plt = _plt()
    written = []
    for keys, part in summary.groupby(group_cols):
        keys = keys if isinstance(keys, tuple) else (keys,)
        fig, ax = plt.subplots(figsize=(6, 4.2))
        curves = part[curve_col].unique()
        curves = _reg_sort(curves) if curve_col == "label" else sorted(curves)
        for c in curves:
            p = part[part[curve_col] == c].sort_values("sigma")
            ax.errorbar(p["sigma"], p["mean_accuracy"], yerr=p["sem_accuracy"], marker="o", ms=3, capsize=2,
                        label=f"{curve_name(c)} (n={int(p['seeds'].max())})")
        ax.set_xlabel("Gaussian noise s.d. (images in [0, 1])")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{title}\n{' / '.join(str(k) for k in keys)}", fontsize=9)
        written.append(_save(fig, out, stem, keys))
    return written


def figure4(modules, out: Path) -> list[Path]:
    summary = noise_summary(modules)
    if summary.empty:
        return []
    path = out / "fig4_noise.csv"
    summary.to_csv(path, index=False)
    return [path] + _line_panels(summary, ["display_name", "config_name", "noise_name"], "label", out, "fig4_noise",
                                 "Fig. 4: accuracy under Gaussian noise, mean +- SEM over seeds")


def figure6(modules, out: Path) -> list[Path]:
    df = noise_table(modules)
    if df.empty:
        return []
    sweep = df[df["kind"].isin(["none", "neural-model"])].copy()
    sweep["sweep_alpha"] = np.where(sweep["kind"] == "none", 0.0, sweep["cfg_alpha"])
    if sweep[sweep["kind"] == "neural-model"]["cfg_alpha"].nunique() < 2:
        return []
    summary = _over_seeds(sweep, ["display_name", "arch", "noise_name", "sweep_alpha", "sigma"], "accuracy", "accuracy")
    path = out / "fig6_alpha.csv"
    summary.to_csv(path, index=False)
    return [path] + _line_panels(summary, ["display_name", "arch", "noise_name"], "sweep_alpha", out, "fig6_alpha",
                                 "Supplement Fig. 6: Neural (model) at each alpha (0 = None)",
                                 curve_name=lambda a: f"alpha = {a:g}")


def _reg_color(label) -> str:
    return f"C{REG_ORDER.index(label) if label in REG_ORDER else 9}"


def figure5(modules, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """Fig. 5: median minimal perturbation vs query budget per regularizer, one panel per norm."""
    summary = budget_summary(modules) if summary is None else summary
    if summary.empty:
        return []
    plt = _plt()
    path = out / "fig5_minimal_perturbation.csv"
    summary.to_csv(path, index=False)
    written = [path]
    for keys, part in summary.groupby(["display_name", "config_name", "suite"]):
        norms = [n for n in NORMS if n in set(part["norm"])]
        fig, axes = plt.subplots(1, len(norms), figsize=(3.6 * len(norms), 3.8), squeeze=False)
        for ax, norm in zip(axes[0], norms):
            p_norm = part[part["norm"] == norm]
            missing = False
            for label in _reg_sort(p_norm["label"].unique()):
                p = p_norm[p_norm["label"] == label].sort_values("budget")
                y = p["mean_median"].replace(np.inf, np.nan)
                missing |= bool(y.isna().any())
                ax.errorbar(p["budget"], y, yerr=p["sem_median"].replace(np.inf, np.nan), marker="o", ms=3,
                            capsize=2, color=_reg_color(label), label=f"{label} (n={int(p['seeds'].max())})")
                ax.plot(p["budget"], p["mean_median_correct"].replace(np.inf, np.nan), ls="--", lw=0.8,
                        color=_reg_color(label))
            ax.set_xscale("log")
            budgets = sorted(p_norm["budget"].unique())
            ax.set_xticks(budgets, [str(int(b)) for b in budgets], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("attack iterations per run (query budget)")
            ax.set_title(f"{norm.upper()} (median over samples)" + ("\nmissing points: infinite median" if missing else ""),
                         fontsize=9)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("minimal adversarial distance")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle("Fig. 5: minimal perturbation over all attacks vs query budget, mean +- SEM over seeds; "
                     f"dashed: clean errors left out\n{' / '.join(keys)}", fontsize=9)
        written.append(_save(fig, out, "fig5_minimal_perturbation", keys))
    return written


def figure7(modules, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """Supplement Fig. 7: mean minimal perturbation per regularizer and norm (bars), with the CSV of
    both statistics, with and without the clean errors."""
    summary = perturbation_summary(modules) if summary is None else summary
    if summary.empty:
        return []
    plt = _plt()
    path = out / "fig7_mean_perturbation.csv"
    summary.to_csv(path, index=False)
    written = [path]
    for keys, part in summary.groupby(["display_name", "config_name", "suite"]):
        norms = [n for n in NORMS if n in set(part["norm"])]
        fig, axes = plt.subplots(1, len(norms), figsize=(3.2 * len(norms), 3.8), squeeze=False)
        over_seeds = bool((part["seeds"] > 1).all())
        for ax, norm in zip(axes[0], norms):
            p = part[part["norm"] == norm].set_index("label").reindex(_reg_sort(part["label"].unique())).dropna(
                subset=["mean_mean"])
            err = p["sem_mean"] if over_seeds else p.get("sem_samples", p["sem_mean"])
            ax.bar(range(len(p)), p["mean_mean"].replace(np.inf, np.nan), yerr=err.replace(np.inf, np.nan), capsize=3,
                   color=[_reg_color(lab) for lab in p.index])
            for i, value in enumerate(p["mean_mean"]):
                if np.isinf(value):          # some sample never fooled
                    ax.text(i, 0, "inf", ha="center", va="bottom", fontsize=8)
            ax.set_xticks(range(len(p)), p.index, rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{norm.upper()} (mean over samples)", fontsize=9)
        axes[0][0].set_ylabel("minimal adversarial distance")
        fig.suptitle("Supplement Fig. 7: mean minimal perturbation over all attacks, clean errors as 0; error bars: "
                     f"SEM over {'seeds' if over_seeds else 'samples'}\n{' / '.join(keys)}", fontsize=9)
        written.append(_save(fig, out, "fig7_mean_perturbation", keys))
    return written


def figure_controls(modules, out: Path, table: pd.DataFrame | None = None) -> list[Path]:
    """controls.csv and one figure per data set, recipe and noise config: accuracy vs noise sd, and
    the paired difference from None (filled markers: paired t-test over seeds p < 0.05)."""
    summary = controls_summary(modules, table)
    if summary.empty:
        return []
    plt = _plt()
    path = out / "controls.csv"
    summary.drop(columns=["clf_hash"]).to_csv(path, index=False)
    written = [path]
    for keys, part in summary.groupby(["display_name", "config_name", "noise_name"]):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for label in _reg_sort(part["regularizer"].unique()):
            p = part[part["regularizer"] == label].sort_values("noise_sd")
            color = f"C{REG_ORDER.index(label) if label in REG_ORDER else 9}"
            left.errorbar(p["noise_sd"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                          color=color, label=f"{label} (n={int(p['seeds'].max())})")
            if label == "None":
                right.axhline(0, color=color, lw=1, label="None")
                continue
            right.errorbar(p["noise_sd"], p["diff_vs_none_mean"], yerr=p["diff_vs_none_sem"], color=color,
                           marker=None, capsize=2, label=label)
            sig = p["p_seeds_paired_t"] < 0.05
            right.scatter(p["noise_sd"][sig], p["diff_vs_none_mean"][sig], color=color, s=30, zorder=3)
            right.scatter(p["noise_sd"][~sig], p["diff_vs_none_mean"][~sig], facecolor="white",
                          edgecolor=color, s=30, zorder=3)
        left.set_ylim(0, 1)
        left.set_ylabel("test accuracy (mean +- SEM over seeds)")
        right.set_ylabel("accuracy - accuracy of None (paired by seed)")
        for ax in (left, right):
            ax.set_xlabel("Gaussian noise s.d. (images in [0, 1])")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Known-answer controls: {keys[0]}\nrecipe {keys[1]}, noise levels {keys[2]}; filled: "
                     "paired t-test over seeds p < 0.05", fontsize=9)
        written.append(_save(fig, out, "controls", keys))
    return written


# ------------------------------------------------------------------ summaries (what the demo prints)

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
    runs = classifier_table(modules)
    if runs.empty:
        return []
    key = CLASSIFIER_KEY
    runs = runs.sort_values(["dataset", "config_name", "kind", "seed"], kind="stable")
    noisy, noise_sd = pd.Series(dtype=float), None
    noise = noise_table(modules)
    if not noise.empty:
        noise = noise[noise["noise_name"] == sorted(noise["noise_name"].unique())[0]]
        noise_sd = float(noise["sigma"].max())
        noisy = noise[noise["sigma"] == noise_sd].set_index(key)["accuracy"]
    medians, means = {}, {}
    perturbation = perturbation_table(modules)
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


def write_report(prefix: str, out_dir) -> list[Path]:
    """Write every figure and table the database can support into `out_dir`; return the paths."""
    from . import pipeline
    modules = pipeline.activate(prefix)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    table = classifier_table(modules)
    if not table.empty:
        robust = robust_accuracy_table(modules)
        if not robust.empty:
            table = table.merge(robust, on=CLASSIFIER_KEY, how="left")
        path = out / "classifiers.csv"
        table.to_csv(path, index=False)
        written.append(path)
    gamma = gamma_table(modules)
    if not gamma.empty:
        path = out / "table1_gamma.csv"
        gamma.to_csv(path, index=False)
        written.append(path)
    for make in (figure1, figure4, figure5, figure7, figure6, figure_controls):
        written += make(modules, out)
    return written
