"""The paper's figures drawn from the report's queries (report.tables): Fig. 1, 4, 5, 6, 7 and the
known-answer controls; each writes PNGs and returns their paths. See the package docstring."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..compute.evaluation.scores import NORMS      # numpy only
from . import tables
from .columns import write_csv
from .tables import REG_ORDER, over_seeds, reg_sort


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()


MAX_NAME = 70          # characters of a file name the report writes


def file_name(stem: str, keys) -> str:
    """<stem>_<slug of keys>.png (or <stem>.png), at most MAX_NAME characters: a longer slug is cut and
    ends in 6 hex digits of its md5, so two long names stay apart."""
    if not keys:
        return f"{stem}.png"
    slug = _slug("_".join(str(k) for k in keys))
    name = f"{stem}_{slug}.png"
    if len(name) <= MAX_NAME:
        return name
    import hashlib
    digest = hashlib.md5(slug.encode()).hexdigest()[:6]
    room = MAX_NAME - len(stem) - len("_-.png") - len(digest)
    return f"{stem}_{slug[:room].rstrip('-')}-{digest}.png"


def _save(fig, out: Path, stem: str, keys) -> Path:
    """Save a figure as file_name(stem, keys) in `out` and close it."""
    path = out / file_name(stem, keys)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


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
    checks = sim.SimilarityStability.to_dicts(order_by="scan_group, model_hash, model_seed")
    models_per_group = pd.Series([st["scan_group"] for st in checks]).value_counts().to_dict()
    for st in checks:
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
        fig.suptitle(f"Fig. 1, scan group {st['scan_group']} ({st['n_scans']} scans, {st['n_oracle_images']} oracle images)"
                     f"\npredictive model {st['model_hash'][:8]}, seed {st['model_seed']}", fontsize=10)
        # one picture per predictive model: a group with several models (configs, seeds) names each
        keys = [st["scan_group"]] + ([st["model_hash"][:8], f"seed{st['model_seed']}"]
                                     if models_per_group[st["scan_group"]] > 1 else [])
        written.append(_save(fig, out, "fig1_similarity", keys))
    if rows:
        path = out / "fig1_checks.csv"
        write_csv(pd.DataFrame(rows), path)
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
        curves = reg_sort(curves) if curve_col == "label" else sorted(curves)
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
    summary = tables.noise_summary(modules)
    if summary.empty:
        return []
    path = out / "fig4_noise.csv"
    write_csv(summary, path)
    return [path] + _line_panels(summary, ["display_name", "config_name", "noise_name"], "label", out, "fig4_noise",
                                 "Fig. 4: accuracy under Gaussian noise, mean +- SEM over seeds")


def figure6(modules, out: Path) -> list[Path]:
    df = tables.noise_table(modules)
    if df.empty:
        return []
    sweep = df[df["kind"].isin(["none", "neural-model"])].copy()
    sweep["sweep_alpha"] = np.where(sweep["kind"] == "none", 0.0, sweep["cfg_alpha"])
    if sweep[sweep["kind"] == "neural-model"]["cfg_alpha"].nunique() < 2:
        return []
    summary = over_seeds(sweep, ["display_name", "arch", "noise_name", "sweep_alpha", "sigma"], "accuracy", "accuracy")
    path = out / "fig6_alpha.csv"
    write_csv(summary, path)
    return [path] + _line_panels(summary, ["display_name", "arch", "noise_name"], "sweep_alpha", out, "fig6_alpha",
                                 "Supplement Fig. 6: Neural (model) at each alpha (0 = None)",
                                 curve_name=lambda a: f"alpha = {a:g}")


def _reg_color(label) -> str:
    return f"C{REG_ORDER.index(label) if label in REG_ORDER else 9}"


def _per_suite(summary: pd.DataFrame, out: Path, stem: str, panel_width: float, draw) -> list[Path]:
    """`summary` as <stem>.csv, then one figure per data set, recipe and attack suite with a panel per
    norm, drawn by draw(fig, axes, part, norms, keys); the CSV's and the PNGs' paths."""
    if summary.empty:
        return []
    plt = _plt()
    path = out / f"{stem}.csv"
    write_csv(summary, path)
    written = [path]
    for keys, part in summary.groupby(["display_name", "config_name", "suite"]):
        norms = [n for n in NORMS if n in set(part["norm"])]
        fig, axes = plt.subplots(1, len(norms), figsize=(panel_width * len(norms), 3.8), squeeze=False)
        draw(fig, axes[0], part, norms, keys)
        written.append(_save(fig, out, stem, keys))
    return written


def figure5(modules, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """Fig. 5: median minimal perturbation vs query budget per regularizer, one panel per norm."""
    summary = tables.budget_summary(modules) if summary is None else summary
    return _per_suite(summary, out, "fig5_minimal_perturbation", 3.6, _draw_figure5)


def _draw_figure5(fig, axes, part: pd.DataFrame, norms, keys) -> None:
    # x: the suite's measured model queries per sample at each budget (forward + gradient rows counted
    # at the model, AttackResult.Queries), mean over seeds; iterations per run where nothing was counted
    measured = "mean_queries" in part and bool(part["mean_queries"].notna().all()) \
        and bool((part["mean_queries"] > 0).all())
    x_col = "mean_queries" if measured else "budget"
    for ax, norm in zip(axes, norms):
        p_norm = part[part["norm"] == norm]
        missing = False
        for label in reg_sort(p_norm["label"].unique()):
            p = p_norm[p_norm["label"] == label].sort_values("budget")
            y = p["mean_median"].replace(np.inf, np.nan)
            missing |= bool(y.isna().any())
            ax.errorbar(p[x_col], y, yerr=p["sem_median"].replace(np.inf, np.nan), marker="o", ms=3,
                        capsize=2, color=_reg_color(label), label=f"{label} (n={int(p['seeds'].max())})")
            ax.plot(p[x_col], p["mean_median_correct"].replace(np.inf, np.nan), ls="--", lw=0.8,
                    color=_reg_color(label))
        ax.set_xscale("log")
        if measured:
            ax.set_xlabel("model queries per sample, whole suite (measured)")
        else:
            budgets = sorted(p_norm["budget"].unique())
            ax.set_xticks(budgets, [str(int(b)) for b in budgets], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("attack iterations per run (query budget; queries not counted)")
        ax.set_title(f"{norm.upper()} (median over samples)" + ("\nmissing points: infinite median" if missing else ""),
                     fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("minimal adversarial distance")
    axes[-1].legend(fontsize=7)
    fig.suptitle("Fig. 5: minimal perturbation over all attacks vs queries, mean +- SEM over seeds; "
                 f"dashed: clean errors left out\n{' / '.join(keys)}", fontsize=9)


def figure7(modules, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """Supplement Fig. 7: mean minimal perturbation per regularizer and norm (bars), with the CSV of
    both statistics, with and without the clean errors, the fraction of samples fooled and the mean
    over the fooled samples (the bar where a never-fooled sample makes the mean infinite)."""
    summary = tables.perturbation_summary(modules) if summary is None else summary
    return _per_suite(summary, out, "fig7_mean_perturbation", 3.2, _draw_figure7)


def _draw_figure7(fig, axes, part: pd.DataFrame, norms, keys) -> None:
    across_seeds = bool((part["seeds"] > 1).all())
    for ax, norm in zip(axes, norms):
        p = part[part["norm"] == norm].set_index("label").reindex(reg_sort(part["label"].unique())).dropna(
            subset=["mean_mean"])
        err = p["sem_mean"] if across_seeds else p.get("sem_samples", p["sem_mean"])
        infinite = np.isinf(p["mean_mean"].to_numpy(float))       # some sample never fooled
        fooled = p["mean_mean_success"].to_numpy(float) if "mean_mean_success" in p else np.full(len(p), np.nan)
        height = np.where(infinite, fooled, p["mean_mean"].to_numpy(float))
        ax.bar(range(len(p)), np.nan_to_num(height, nan=0.0), yerr=np.where(infinite, np.nan, err.to_numpy(float)),
               capsize=3, color=[_reg_color(lab) for lab in p.index],
               hatch=["//" if i else None for i in infinite], edgecolor="black", linewidth=0.3)
        rates = p["mean_success_rate"].to_numpy(float) if "mean_success_rate" in p else np.full(len(p), np.nan)
        for i, (inf, rate) in enumerate(zip(infinite, rates)):
            if inf:                        # the mean over all samples is infinite: the fooled ones, and how many
                ax.text(i, np.nan_to_num(height[i]), f"fooled\n{rate:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(p)), p.index, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{norm.upper()} (mean over samples)", fontsize=9)
    axes[0].set_ylabel("minimal adversarial distance")
    fig.suptitle("Supplement Fig. 7: mean minimal perturbation over all attacks, clean errors as 0; error bars: "
                 f"SEM over {'seeds' if across_seeds else 'samples'}; hatched: some sample never fooled, so the "
                 f"bar is the mean over the fooled samples\n(its fooled fraction above it; the mean over all is "
                 f"infinite)  {' / '.join(keys)}", fontsize=8)


def attack_queries_csv(modules, out: Path) -> list[Path]:
    """attack_queries.csv: per classifier and attack of a suite, the measured model queries per attacked
    sample (forward and gradient rows, summed over the attack's runs)."""
    df = tables.attack_queries(modules)
    if df.empty:
        return []
    keep = ["display_name", "config_name", "suite", "attack", "label", "seed", "runs", "forward_per_sample",
            "gradient_per_sample", "queries_per_sample", "clf_hash", "reg_hash"]
    path = out / "attack_queries.csv"
    write_csv(df[keep].sort_values(["display_name", "config_name", "suite", "attack", "label", "seed"]), path)
    return [path]


def figure_corruptions(modules, out: Path) -> list[Path]:
    """corruptions.csv and, per data set, recipe and corruption set, accuracy vs severity (0: clean) per
    regularizer, the mean over the set's corruptions (as Fig. 4 draws noise; mean +- SEM over seeds)."""
    summary = tables.corruption_summary(modules)
    if summary.empty:
        return []
    plt = _plt()
    path = out / "corruptions.csv"
    write_csv(summary, path)
    written = [path]
    mean = summary[summary["corruption"] == "mean"]
    for keys, part in mean.groupby(["display_name", "config_name", "corruption_set"]):
        published = bool(part["is_published"].iloc[0])
        n_corr = summary[(summary["corruption_set"] == keys[2]) & (summary["corruption"] != "mean")]["corruption"].nunique()
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for label in reg_sort(part["label"].unique()):
            p = part[part["label"] == label].sort_values("severity")
            ax.errorbar(p["severity"], p["mean_accuracy"], yerr=p["sem_accuracy"], marker="o", ms=3, capsize=2,
                        color=_reg_color(label), label=f"{label} (n={int(p['seeds'].max())})")
        ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
        ax.set_xlabel("corruption severity")
        ax.set_ylabel(f"test accuracy, mean over {n_corr} corruptions")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        what = "published CIFAR-10-C (grey)" if published else "LOCAL corruption set, NOT CIFAR-10-C"
        ax.set_title(f"Common corruptions ({what}): {keys[2]}\n{keys[0]} / {keys[1]}; mean +- SEM over seeds",
                     fontsize=9)
        written.append(_save(fig, out, "corruptions", keys))
    return written


def _significance_markers(ax, part: pd.DataFrame, significant: np.ndarray, color) -> None:
    """The paired differences from None of one regularizer: filled where `significant`, open elsewhere."""
    x, y = part["noise_sd"].to_numpy(), part["diff_vs_none_mean"].to_numpy()
    ax.scatter(x[significant], y[significant], color=color, s=30, zorder=3)
    ax.scatter(x[~significant], y[~significant], facecolor="white", edgecolor=color, s=30, zorder=3)


def figure_controls(modules, out: Path, table: pd.DataFrame | None = None) -> list[Path]:
    """controls.csv and one figure per data set, recipe and noise config: accuracy vs noise sd, and
    the paired difference from None (filled markers: paired t-test over seeds p < 0.05)."""
    summary = tables.controls_summary(modules, table)
    if summary.empty:
        return []
    plt = _plt()
    path = out / "controls.csv"
    write_csv(summary.drop(columns=["clf_hash"]), path)
    written = [path]
    for keys, part in summary.groupby(["display_name", "config_name", "noise_name"]):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for label in reg_sort(part["regularizer"].unique()):
            p = part[part["regularizer"] == label].sort_values("noise_sd")
            color = _reg_color(label)
            left.errorbar(p["noise_sd"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                          color=color, label=f"{label} (n={int(p['seeds'].max())})")
            if label == "None":
                right.axhline(0, color=color, lw=1, label="None")
                continue
            right.errorbar(p["noise_sd"], p["diff_vs_none_mean"], yerr=p["diff_vs_none_sem"], color=color,
                           marker=None, capsize=2, label=label)
            _significance_markers(right, p, (p["p_seeds_paired_t"] < 0.05).to_numpy(), color)
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


def figure_neuron_controls(modules, out: Path, table: pd.DataFrame | None = None) -> list[Path]:
    """population_targets.csv, neuron_controls.csv and, per data set, recipe and noise config of a study
    with known-answer populations, one figure: accuracy vs noise sd (mean +- SEM over seeds) and the
    paired difference from None (filled: Holm-adjusted paired t-test over seeds p < 0.05; the
    pre-declared primary comparison ringed)."""
    written = []
    targets = tables.population_targets(modules)
    if not targets.empty:
        path = out / "population_targets.csv"
        write_csv(targets, path)
        written.append(path)
    summary = tables.neuron_controls_summary(tables.controls_summary(modules, table))
    if summary.empty:
        return written
    plt = _plt()
    path = out / "neuron_controls.csv"
    write_csv(summary.drop(columns=["clf_hash"]), path)
    written.append(path)
    for keys, part in summary.groupby(["display_name", "config_name", "noise_name"]):
        fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
        for label in reg_sort(part["regularizer"].unique()):
            p = part[part["regularizer"] == label].sort_values("noise_sd")
            color = _reg_color(label)
            style = "--" if label in ("Lowpass", "Highpass", "Shuffle") else "-"
            n = int(p["seeds"].max())
            left.errorbar(p["noise_sd"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                          color=color, ls=style, label=f"{label} (n={n})")
            if label == "None":
                right.axhline(0, color=color, lw=1, label="None")
                continue
            right.errorbar(p["noise_sd"], p["diff_vs_none_mean"], yerr=p["diff_vs_none_sem"], color=color, ls=style,
                           capsize=2, label=f"{label} (n={n} paired seeds)")
            _significance_markers(right, p, (p["p_holm"] < 0.05).to_numpy(), color)
            prim = p[p["primary"]]
            if len(prim):
                right.scatter(prim["noise_sd"], prim["diff_vs_none_mean"], facecolor="none", edgecolor="black",
                              s=140, lw=1.5, zorder=4, label="primary comparison (pre-declared)")
        left.set_ylim(0, 1)
        left.set_ylabel("test accuracy (mean +- SEM over seeds)")
        right.set_ylabel("accuracy - accuracy of None (paired by seed)")
        for ax in (left, right):
            ax.set_xlabel("Gaussian noise s.d. (images in [0, 1])")
            ax.grid(alpha=0.3)
        left.legend(fontsize=7)
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(f"Known answers from spikes: {keys[0]}, recipe {keys[1]}, noise levels {keys[2]}\n"
                     "simulated populations (mouse, low, high) through Eq. 1, predictive models and S_model; "
                     "filled: Holm-adjusted paired t-test over seeds p < 0.05", fontsize=9)
        written.append(_save(fig, out, "neuron_controls", keys))
    return written


def figure_dose_response(modules, out: Path) -> list[Path]:
    """dose_response.csv and, per data set, recipe and noise config, clean accuracy, accuracy under noise
    and the held-out Eq. 8 loss against alpha (supplement Fig. 6 at demo size), per regularizer."""
    summary = tables.dose_response(modules)
    if summary.empty:
        return []
    plt = _plt()
    path = out / "dose_response.csv"
    write_csv(summary.rename(columns={"dataset": "display_name", "config": "base_config"}), path)
    written = [path]
    for keys, part in summary.groupby(["dataset", "config", "noise_name"]):
        levels = sorted(part["noise_sd"].unique())
        noisy = [x for x in levels if x > 0]
        shown = [x for x in (0.1, 0.2, 0.3) if x in noisy] or noisy[-1:]
        fig, axes = plt.subplots(1, 2 + len(shown), figsize=(4.2 * (2 + len(shown)), 4))
        for label in reg_sort(part["regularizer"].unique()):
            reg = part[part["regularizer"] == label]
            color = _reg_color(label)
            for ax, sd in zip(axes[:1 + len(shown)], [0.0] + shown):
                p = reg[np.isclose(reg["noise_sd"], sd)].sort_values("alpha")
                ax.errorbar(p["alpha"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                            color=color, label=f"{label} (n={int(p['seeds'].max())})")
                ax.set_title("clean" if sd == 0 else f"Gaussian noise s.d. {sd:g}", fontsize=9)
                ax.set_ylabel("test accuracy (mean +- SEM over seeds)")
            p = reg[np.isclose(reg["noise_sd"], 0.0) & (reg["alpha"] > 0)].sort_values("alpha")
            axes[-1].errorbar(p["alpha"], p["heldout_loss_mean"], yerr=p["heldout_loss_sem"], marker="o", ms=3,
                              capsize=2, color=color, label=label)
        axes[-1].set_title("held-out similarity loss after training", fontsize=9)
        axes[-1].set_ylabel("Eq. 8 loss over held-out stimulus pairs")
        for ax in axes:
            ax.set_xlabel("alpha (Eq. 7; 0 = None)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"Dose-response (supplement Fig. 6 at demo size): {keys[0]}, recipe {keys[1]}, "
                     f"noise levels {keys[2]}", fontsize=9)
        written.append(_save(fig, out, "dose_response", keys))
    return written
