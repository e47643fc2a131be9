"""The paper's figures drawn from the report's queries (report.tables): Fig. 1, 4, 5, 6, 7 and the
known-answer controls; each writes PNGs and returns their paths. See the package docstring."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..compute.evaluation.scores import NORMS      # numpy only
from .. import queries
from . import tables
from .columns import write_csv
from .tables import REG_ORDER, over_seeds, reg_sort


# one colour per regularizer in every figure (matplotlib's tab10, colour-blind-friendlier order first);
# a label outside REG_ORDER gets a colour from its name's hash, the same in every figure and run
REGULARIZER_COLORS = dict(zip(REG_ORDER, ("#4d4d4d", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                                          "#e377c2", "#17becf", "#d62728")))
_OTHER_COLORS = ("#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a", "#c5b0d5", "#ffbb78", "#c49c94", "#f7b6d2")
NORM_LABELS = {"l0": "L0", "l1": "L1", "l2": "L2", "linf": "L\u221e"}
NORM_UNITS = {"l0": "pixels changed", "l1": "sum of |pixel change|", "l2": "Euclidean norm",
              "linf": "largest pixel change"}


def regularizer_color(label) -> str:
    """The colour of a regularizer (its label, e.g. 'Neural (model)') in every figure of the report."""
    if label in REGULARIZER_COLORS:
        return REGULARIZER_COLORS[label]
    import hashlib
    return _OTHER_COLORS[int(hashlib.md5(str(label).encode()).hexdigest(), 16) % len(_OTHER_COLORS)]


_reg_color = regularizer_color        # the earlier private name, for code written against it


def norm_label(norm: str) -> str:
    """'linf' -> 'L\u221e', 'l2' -> 'L2': a norm as figures name it."""
    return NORM_LABELS.get(norm, norm.upper())


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


def _save(fig, out: Path, stem: str, keys, rect=None) -> Path:
    """Save a figure as file_name(stem, keys) in `out` and close it (rect: the part of the figure
    tight_layout fills, leaving the rest to a figure legend)."""
    path = out / file_name(stem, keys)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _cluster_order(matrix: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform
    d = np.clip(1 - matrix, 0, 2)
    np.fill_diagonal(d, 0)
    return leaves_list(linkage(squareform((d + d.T) / 2, checks=False), method="average"))


def _group_source(modules, scan_group) -> str:
    """'simulated', 'recorded' (Sensorium) or 'simulated and recorded': what the scans of a group are."""
    exp, sim = modules["experiment"], modules["similarity"]
    sources = set((exp.Scan & (sim.ScanGroup.Member & {"scan_group": scan_group}).proj()).to_arrays("source"))
    names = sorted({"simulated" if s == "simulated" else "recorded" for s in sources})
    return " and ".join(names) or "no scans"


def figure1(modules, out: Path) -> list[Path]:
    sim, pred = modules["similarity"], modules["predictive"]
    plt = _plt()
    written = []
    rows = []
    checks = sim.SimilarityStability.to_dicts(order_by="scan_group, model_hash, model_seed")
    checked = queries.similarity_checks(modules)          # per scan group, predictive model and scan
    models_per_group = pd.Series([st["scan_group"] for st in checks]).value_counts().to_dict()
    recipes = dict(zip(*pred.PredictiveModelConfig.to_arrays("model_hash", "config_name")))
    for st in checks:
        model = {"model_hash": st["model_hash"], "model_seed": st["model_seed"]}     # one trained predictive model
        key = {"scan_group": st["scan_group"], **model}
        members = checked[(checked["scan_group"] == st["scan_group"]) & (checked["model_hash"] == st["model_hash"])
                          & (checked["model_seed"] == st["model_seed"])].sort_values(["animal_id", "session", "scan_idx"])
        rows.append({**key, "eq4_std": (st["scan_fluctuation"] or {}).get("std"),
                     "eq5_std": st["repeat_fluctuation"]["std"]})
        cfg = sim.SimilarityConfig & "image_subset = 'oracle'"
        mats = {}
        for method in ("oracle", "model"):
            rel = sim.AveragedSimilarity & {"scan_group": st["scan_group"]} & \
                (cfg & {"method": method} & ([model] if method == "model" else {})).proj()
            if len(rel) == 1:
                mats[method] = np.asarray(rel.fetch1("matrix").load())
        fig = plt.figure(figsize=(18, 4.4))
        grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 0.05, 1.15, 1.15])
        axes = [fig.add_subplot(grid[0, i]) for i in (0, 1, 3, 4)]
        cax = fig.add_subplot(grid[0, 2])          # one colour bar for A and B
        if "oracle" in mats:
            order = _cluster_order(mats["oracle"])
            shown = {}
            for method in mats:
                m = mats[method][np.ix_(order, order)].copy()
                np.fill_diagonal(m, np.nan)
                shown[method] = m
            # one colour scale for A and B: they are compared entry by entry
            lim = float(max(np.nanpercentile(np.abs(m), 99) for m in shown.values())) or 1.0
            im = None
            n_images = len(order)
            for ax, (method, title) in zip(axes[:2], (("oracle", "A  S_oracle (Eq. 3)"),
                                                      ("model", "B  S_model (Eq. 6)"))):
                if method in shown:
                    im = ax.imshow(shown[method], cmap="RdBu_r", vmin=-lim, vmax=lim)
                else:
                    ax.text(0.5, 0.5, "no S_model for this model", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(f"{title}, n = {n_images} images", fontsize=9)
                ax.set_xlabel("oracle image (clustered by S_oracle)")
                ax.set_ylabel("oracle image")
            if im is not None:
                fig.colorbar(im, cax=cax, label="similarity (one scale for A and B)")
        if not hasattr(cax, "_colorbar"):
            cax.remove()
        values = {}
        for name in ("scan_values", "repeat_values"):
            if st[name] is not None:
                values[name] = np.asarray(st[name].load())
        ax = axes[2]
        for name, label, color in (("scan_values", "Eq. 4: across scans", "C0"),
                                   ("repeat_values", "Eq. 5: across repeats", "C1")):
            if name in values:
                ax.hist(values[name], bins=60, density=True, histtype="step", color=color,
                        label=f"{label} (s.d. {values[name].std():.3f}, n = {values[name].size})")
        ax.set_title("C  similarity fluctuations", fontsize=9)
        ax.set_xlabel("difference of similarity")
        ax.set_ylabel("density")
        if values:
            ax.legend(fontsize=7, loc="upper left")
        ax = axes[3]
        x = np.arange(len(members))
        ax.bar(x - 0.2, members["r_model_oracle"], 0.4, color="C0", label="r(S_model, S_oracle)")
        ax.bar(x + 0.2, members["r_data_oracle"], 0.4, color="C7", label="r(S_data, S_oracle)")
        ax.set_xticks(x, members["scan"], rotation=30, fontsize=7)
        ax.set_xlabel("scan")
        ax.set_ylabel("Pearson r with S_oracle")
        ax.set_title(f"D  n = {len(members)} scans; mean {st['r_model_oracle']:.2f} vs {st['r_data_oracle']:.2f}\n"
                     "(paper: 0.73 vs 0.39)", fontsize=9)
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=7, loc="upper center", ncol=2)
        recipe = recipes.get(st["model_hash"], "?")
        fig.suptitle(f"Fig. 1, scan group {st['scan_group']}: {_group_source(modules, st['scan_group'])} data, "
                     f"{st['n_scans']} scans, {st['n_oracle_images']} oracle images; "
                     f"predictive model recipe '{recipe}', seed {st['model_seed']}", fontsize=10)
        # one picture per predictive model: a group with several models (configs, seeds) names each
        keys = [st["scan_group"]] + ([st["model_hash"][:8], f"seed{st['model_seed']}"]
                                     if models_per_group[st["scan_group"]] > 1 else [])
        written.append(_save(fig, out, "fig1_similarity", keys))
    if rows:
        path = out / "fig1_checks.csv"
        columns = ["scan_group", "config_name", "model_seed", "scan", "r_model_oracle", "r_data_oracle",
                   "repeat_fluctuation_std", "model_hash"]
        write_csv(checked[columns].merge(pd.DataFrame(rows), on=["scan_group", "model_hash", "model_seed"]), path)
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
            color = regularizer_color(c) if curve_col == "label" else None
            ax.errorbar(p["sigma"], p["mean_accuracy"], yerr=p["sem_accuracy"], marker="o", ms=3, capsize=2,
                        color=color, label=f"{curve_name(c)} (n={int(p['seeds'].max())} seeds)")
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
        fig, axes = plt.subplots(1, len(norms), figsize=(panel_width * len(norms), 4.6), squeeze=False)
        draw(fig, axes[0], part, norms, keys)
        rows = max((-(-len(leg.get_texts()) // 4) for leg in fig.legends), default=0)   # the shared legend's
        written.append(_save(fig, out, stem, keys, rect=(0, 0.02 + 0.045 * rows, 1, 1)))
    return written


def figure5(modules, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """Fig. 5: median minimal perturbation vs query budget per regularizer, one panel per norm."""
    summary = tables.budget_summary(modules) if summary is None else summary
    return _per_suite(summary, out, "fig5_minimal_perturbation", 3.6, _draw_figure5)


def _style_legend(fig, handles) -> None:
    """One legend for the whole figure, below its panels."""
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)


def _draw_figure5(fig, axes, part: pd.DataFrame, norms, keys) -> None:
    from matplotlib.lines import Line2D
    labels = reg_sort(part["label"].unique())
    infinite_any = False
    # x: the suite's measured model queries per sample at each budget (forward + gradient rows counted
    # at the model, AttackResult.Queries), mean over seeds; iterations per run where nothing was counted
    measured = "mean_queries" in part and bool(part["mean_queries"].notna().all()) \
        and bool((part["mean_queries"] > 0).all())
    x_col = "mean_queries" if measured else "budget"
    for ax, norm in zip(axes, norms):
        p_norm = part[part["norm"] == norm]
        top = np.nanmax(np.concatenate([p_norm[c].replace(np.inf, np.nan).to_numpy(float)
                                        for c in ("mean_median", "mean_median_correct")] + [[np.nan]]))
        top = 1.25 * top if np.isfinite(top) and top > 0 else 1.0
        for label in labels:
            p = p_norm[p_norm["label"] == label].sort_values("budget")
            if p.empty:
                continue
            color = regularizer_color(label)
            y = p["mean_median"].replace(np.inf, np.nan).to_numpy(float)
            sem = np.nan_to_num(p["sem_median"].replace(np.inf, np.nan).to_numpy(float))
            # a distance is >= 0: the lower bar stops at 0; a bar beyond the panel is cut at its edge
            ax.errorbar(p[x_col], y, yerr=[np.minimum(sem, np.nan_to_num(y)), sem], marker="o", ms=3, capsize=2,
                        color=color, ls="-")
            ax.plot(p[x_col], p["mean_median_correct"].replace(np.inf, np.nan), ls="--", lw=0.9, color=color)
            infinite = np.isinf(p["mean_median"].to_numpy(float))
            if infinite.any():          # no finite median at this budget: a marker at the panel's top, one row each
                infinite_any = True
                row = 0.97 - min(0.05, 0.16 / len(labels)) * labels.index(label)
                ax.plot(p[x_col].to_numpy()[infinite], np.full(infinite.sum(), row), ls="none", marker="^",
                        ms=5, color=color, transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_ylim(0, top)
        ax.set_xscale("log")
        if measured:
            ax.set_xlabel("model queries per sample, whole suite (measured)", fontsize=8)
        else:
            budgets = sorted(p_norm["budget"].unique())
            ax.set_xticks(budgets, [str(int(b)) for b in budgets], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("attack iterations per run (query budget; queries not counted)", fontsize=8)
        ax.set_ylabel(f"minimal {norm_label(norm)} distance ({NORM_UNITS.get(norm, 'norm units')})", fontsize=8)
        ax.set_title(norm_label(norm), fontsize=10)
        ax.grid(alpha=0.3)
    seeds = part.groupby("label")["seeds"].max()
    handles = [Line2D([], [], color=regularizer_color(lab), marker="o", ms=3, label=f"{lab} (n={int(seeds[lab])} seeds)")
               for lab in labels]
    handles += [Line2D([], [], color="black", ls="-", marker="o", ms=3,
                       label="median over all samples (clean errors as 0), mean +- SEM over seeds"),
                Line2D([], [], color="black", ls="--", lw=0.9, label="median over the correctly classified samples")]
    if infinite_any:
        handles.append(Line2D([], [], color="black", ls="none", marker="^", ms=5,
                              label="at the top: infinite median (most samples not fooled within the budget)"))
    _style_legend(fig, handles)
    fig.suptitle("Fig. 5: minimal adversarial perturbation (minimum over the suite's attacks) against "
                 f"{'the measured model queries' if measured else 'the query budget'}\n{' / '.join(keys)}", fontsize=9)


def figure7(modules, out: Path, summary: pd.DataFrame | None = None) -> list[Path]:
    """Supplement Fig. 7: mean minimal perturbation per regularizer and norm (bars), with the CSV of
    both statistics, with and without the clean errors, the fraction of samples fooled and the mean
    over the fooled samples (the bar where a never-fooled sample makes the mean infinite)."""
    summary = tables.perturbation_summary(modules) if summary is None else summary
    return _per_suite(summary, out, "fig7_mean_perturbation", 3.2, _draw_figure7)


def _draw_figure7(fig, axes, part: pd.DataFrame, norms, keys) -> None:
    from matplotlib.patches import Patch
    across_seeds = bool((part["seeds"] > 1).all())
    labels = reg_sort(part["label"].unique())
    infinite_any = False
    for ax, norm in zip(axes, norms):
        p = part[part["norm"] == norm].set_index("label").reindex(labels).dropna(subset=["mean_mean"])
        err = (p["sem_mean"] if across_seeds else p.get("sem_samples", p["sem_mean"])).replace(np.inf, np.nan)
        infinite = np.isinf(p["mean_mean"].to_numpy(float))       # some sample never fooled
        fooled = p["mean_mean_success"].to_numpy(float) if "mean_mean_success" in p else np.full(len(p), np.nan)
        height = np.where(infinite, fooled, p["mean_mean"].to_numpy(float))
        ax.bar(range(len(p)), np.nan_to_num(height, nan=0.0), yerr=np.where(infinite, np.nan, err.to_numpy(float)),
               capsize=3, color=[regularizer_color(lab) for lab in p.index],
               hatch=["//" if i else None for i in infinite], edgecolor="black", linewidth=0.3)
        rates = p["mean_success_rate"].to_numpy(float) if "mean_success_rate" in p else np.full(len(p), np.nan)
        for i, (inf, rate) in enumerate(zip(infinite, rates)):
            if inf:                        # the mean over all samples is infinite: the fooled ones, and how many
                infinite_any = True
                ax.text(i, np.nan_to_num(height[i]), f"fooled\n{rate:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(p)), p.index, rotation=35, ha="right", fontsize=8)
        ax.set_xlabel("regularizer", fontsize=8)
        ax.set_ylabel(f"mean minimal {norm_label(norm)} distance\n({NORM_UNITS.get(norm, 'norm units')})", fontsize=8)
        ax.set_title(norm_label(norm), fontsize=10)
    seeds = part.groupby("label")["seeds"].max()
    handles = [Patch(color=regularizer_color(lab), label=f"{lab} (n={int(seeds[lab])} seeds)") for lab in labels]
    if infinite_any:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//",
                             label="hatched: some sample never fooled (the mean over all is infinite): "
                                   "the mean over the fooled samples, their fraction above the bar"))
    _style_legend(fig, handles)
    fig.suptitle("Supplement Fig. 7: mean minimal adversarial perturbation over all attacks, clean errors as 0; "
                 f"error bars: SEM over {'seeds' if across_seeds else 'samples'}\n{' / '.join(keys)}", fontsize=9)


def _significance_handles(test: str) -> list:
    """Legend entries for the filled and open markers of the paired differences."""
    from matplotlib.lines import Line2D
    return [Line2D([], [], ls="none", marker="o", color="black", label=f"filled: {test} p < 0.05"),
            Line2D([], [], ls="none", marker="o", markerfacecolor="white", markeredgecolor="black",
                   label=f"open: {test} p >= 0.05")]


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
                        color=regularizer_color(label), label=f"{label} (n={int(p['seeds'].max())} seeds)")
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
            color = regularizer_color(label)
            left.errorbar(p["noise_sd"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                          color=color, label=f"{label} (n={int(p['seeds'].max())} seeds)")
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
        left.legend(fontsize=8)
        handles, _ = right.get_legend_handles_labels()
        right.legend(handles=handles + _significance_handles("paired t-test over seeds"), fontsize=8)
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
            color = regularizer_color(label)
            style = "--" if label in ("Lowpass", "Highpass", "Shuffle") else "-"
            n = int(p["seeds"].max())
            left.errorbar(p["noise_sd"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                          color=color, ls=style, label=f"{label} (n={n} seeds)")
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
        handles, _ = right.get_legend_handles_labels()
        right.legend(handles=handles + _significance_handles("Holm-adjusted paired t-test"), fontsize=7,
                     loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
            color = regularizer_color(label)
            for ax, sd in zip(axes[:1 + len(shown)], [0.0] + shown):
                p = reg[np.isclose(reg["noise_sd"], sd)].sort_values("alpha")
                ax.errorbar(p["alpha"], p["accuracy_mean"], yerr=p["accuracy_sem"], marker="o", ms=3, capsize=2,
                            color=color, label=f"{label} (n={int(p['seeds'].max())} seeds)")
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
