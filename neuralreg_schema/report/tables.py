"""The report's queries: the tables behind every figure and CSV, as pandas DataFrames (mean and SEM
over seeds, paired differences from None for the known-answer controls), built on the named queries of
neuralreg_schema/queries.py (renamed here to the short names the figures use: `label` for the
regularizer, `sigma` for the noise sd, `median`/`mean` for the distances). See the package docstring."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import queries


REG_ORDER = ["None", "Neural (model)", "Neural (data)", "Shuffle", "VGG", "Lowpass", "Highpass",
             "Neural (model, low)", "Neural (model, high)"]
TUNED = ("low", "high")                 # the known-answer populations (simulate.TUNINGS), groups <group>-<tuning>
CONTROL_KINDS = ("lowpass", "highpass")       # the known-answer pixel controls (a controls study)


def standard_error(x) -> float:
    """Standard error of the mean (0 for one value, nan when a value is infinite)."""
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all():
        return float("nan")
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def reg_sort(labels) -> list:
    return sorted(labels, key=lambda s: (REG_ORDER.index(s) if s in REG_ORDER else len(REG_ORDER), s))


# a named query's columns -> the names the report's tables and figures use
SHORT = {"dataset_name": "display_name", "regularizer": "label", "recipe_alpha": "cfg_alpha", "noise_sd": "sigma",
         **{name: short for name, short in queries.DISTANCE_NAMES.items()}}


def classifier_table(modules) -> pd.DataFrame:
    """One row per trained classifier with its regularizer label, config name, alpha and data set name
    (queries.classifiers)."""
    df = queries.classifiers(modules).rename(columns=SHORT)
    if df.empty:
        return pd.DataFrame()
    keep = ["dataset", "display_name", "is_stand_in", "config_name", "arch", "cfg_alpha", "alpha", "kind", "label",
            "scan_group", "seed", "test_accuracy", "train_accuracy", "initial_heldout_loss", "heldout_loss",
            "epochs_run", "resumed_from_epoch", "pairs_per_step", "train_seconds", "device", "code_version",
            "clf_hash", "reg_hash"]
    return df[keep]


CLASSIFIER_KEY = ["dataset", "clf_hash", "reg_hash", "seed"]


def _labelled(df: pd.DataFrame, modules, values) -> pd.DataFrame:
    """The result of a named query (keyed by classifier), its `values` columns under their short names,
    joined with the classifier's labels (classifier_table)."""
    if df.empty:
        return pd.DataFrame()
    df = df.rename(columns=SHORT)
    return df[CLASSIFIER_KEY + list(values)].merge(classifier_table(modules), on=CLASSIFIER_KEY)


def over_seeds(df: pd.DataFrame, groups: list, value: str, name: str) -> pd.DataFrame:
    """mean_<name>, sem_<name> of `value` over seeds within `groups`, with the number of seeds."""
    if df.empty:
        return df
    return df.groupby(groups, as_index=False).agg(**{f"mean_{name}": (value, "mean"), f"sem_{name}": (value, standard_error),
                                                     "seeds": ("seed", "nunique")})


def noise_table(modules) -> pd.DataFrame:
    """Per classifier and noise level: accuracy (with the classifier's labels; queries.noise_curves)."""
    return _labelled(queries.noise_curves(modules), modules, ["noise_name", "sigma", "accuracy"])


def noise_summary(modules) -> pd.DataFrame:
    """Fig. 4: mean and SEM over seeds of the accuracy per data set, config, regularizer and sd."""
    return over_seeds(noise_table(modules), ["display_name", "config_name", "noise_name", "label", "sigma"],
                       "accuracy", "accuracy")


SCORES = ("median", "mean", "median_correct", "mean_correct")   # null in the database: infinite
# beside the mean, which one never-fooled sample makes infinite (supplement Fig. 7): the fraction of
# samples fooled and the mean over the fooled ones
FOOLED = ("success_rate", "mean_success")
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
    df = _labelled(queries.minimal_perturbations(modules), modules,
                   ["suite", "norm", *SCORES, "sem", "sem_correct", "success_rate", "mean_success"])
    if not df.empty:
        df["mean_success"] = df["mean_success"].astype(float)     # null: no sample fooled (nan, not inf)
    return df if df.empty else _infinite_nulls(df, SCORES)


def _score_summary(df: pd.DataFrame, groups: list, scores) -> pd.DataFrame:
    """mean_<s> and sem_<s> over seeds of every score s within `groups`, with the number of seeds."""
    if df.empty:
        return df
    aggs = {}
    for sc in scores:
        aggs[f"mean_{sc}"] = (sc, "mean")
        aggs[f"sem_{sc}"] = (sc, standard_error)
    return df.groupby(groups, as_index=False).agg(**aggs, seeds=("seed", "nunique"))


def perturbation_summary(modules) -> pd.DataFrame:
    """Figs. 5/7: mean and SEM over seeds of the per-model median and mean (with and without the
    clean errors), and the mean over seeds of the per-model SEM over samples, per regularizer and norm."""
    df = perturbation_table(modules)
    out = _score_summary(df, PERTURBATION_GROUP, [s for s in SCORES + FOOLED if s in df])
    if not df.empty and "sem" in df:
        samples = df.groupby(PERTURBATION_GROUP, as_index=False)["sem"].mean().rename(columns={"sem": "sem_samples"})
        out = out.merge(samples, on=PERTURBATION_GROUP)
    return out


def budget_table(modules) -> pd.DataFrame:
    """Fig. 5's curve: per classifier, suite, norm and query budget the median and mean minimal
    perturbation when every attack may use at most `budget` iterations per run."""
    df = _labelled(queries.perturbation_budgets(modules), modules, ["suite", "norm", "budget", *SCORES, "success_rate"])
    return df if df.empty else _infinite_nulls(df, SCORES)


def budget_summary(modules) -> pd.DataFrame:
    """Fig. 5: mean and SEM over seeds of the per-model median (and the other scores) per budget, and of
    the suite's measured model queries per sample at that budget (`queries`, when counted)."""
    df = budget_table(modules)
    if df.empty:
        return df
    queries = budget_query_table(modules)
    if not queries.empty:
        df = df.merge(queries, on=CLASSIFIER_KEY + ["suite", "budget"], how="left")
    return _score_summary(df, PERTURBATION_GROUP + ["budget"], SCORES + (("queries",) if "queries" in df else ()))


def budget_query_table(modules) -> pd.DataFrame:
    """Per classifier, suite and budget of MinimalPerturbation.Budget: the model queries per sample the
    whole suite makes when every attack is limited to that budget (compute.evaluation.scores.budget_queries
    over AttackResult.Queries: forward and gradient rows counted at the model). Empty where no
    AttackResult of the suite has query counts (rows computed before issue 22)."""
    from ..compute.evaluation.scores import budget_queries
    ev = (modules or {}).get("evaluation")
    if ev is None:
        return pd.DataFrame()
    try:
        runs = ev.AttackResult.Queries.to_dicts(order_by="run")
    except Exception:              # a schema declared before AttackResult.Queries (read-only: not created)
        return pd.DataFrame()
    if not runs:
        return pd.DataFrame()
    group = CLASSIFIER_KEY + ["suite"]
    by_attack: dict = {}
    for r in runs:
        by_attack.setdefault(tuple(r[k] for k in group) + (r["attack_hash"],), []).append(r)
    attack_budgets: dict = {}
    for b in ev.AttackResult.Budget.proj().to_dicts():
        attack_budgets.setdefault(tuple(b[k] for k in group) + (b["attack_hash"],), []).append(int(b["budget"]))
    members = {}
    for m in ev.AttackResult.proj().to_dicts():
        members.setdefault(tuple(m[k] for k in group), []).append(m["attack_hash"])
    union: dict = {}
    for b in ev.MinimalPerturbation.Budget.proj().to_dicts():
        union.setdefault(tuple(b[k] for k in group), set()).add(int(b["budget"]))
    rows = []
    for key, budgets in union.items():
        hashes = members.get(key, [])
        if not hashes or any(key + (h,) not in by_attack for h in hashes):
            continue                # an attack without counts: no honest total
        per_attack = [(sorted(attack_budgets.get(key + (h,), [])), by_attack[key + (h,)]) for h in hashes]
        points = sorted(budgets)
        for b, q in zip(points, budget_queries(per_attack, points)):
            rows.append({**dict(zip(group, key)), "budget": b, "queries": float(q)})
    return pd.DataFrame(rows)


def attack_queries(modules) -> pd.DataFrame:
    """Per classifier and attack of a suite: its runs and the model queries per attacked sample, summed
    over its runs (forward and gradient rows; AttackResult.Queries), with the classifier's labels."""
    ev = (modules or {}).get("evaluation")
    if ev is None:
        return pd.DataFrame()
    try:
        rows = (ev.AttackResult.Queries * ev.AttackConfig.proj("attack")).to_dicts()
    except Exception:
        return pd.DataFrame()
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["forward_per_sample"] = df["forward_rows"] / df["attacked"].clip(lower=1)
    df["gradient_per_sample"] = df["gradient_rows"] / df["attacked"].clip(lower=1)
    out = df.groupby(CLASSIFIER_KEY + ["suite", "attack"], as_index=False).agg(
        runs=("run", "count"), forward_per_sample=("forward_per_sample", "sum"),
        gradient_per_sample=("gradient_per_sample", "sum"), queries_per_sample=("queries_per_sample", "sum"))
    return out.merge(classifier_table(modules), on=CLASSIFIER_KEY)


def robust_accuracy_table(modules) -> pd.DataFrame:
    """Per classifier and attack suite: the clean accuracy on the attacked samples and the robust
    accuracy at RobustBench's budgets (compute.evaluation.scores.ROBUSTBENCH_BUDGETS: Linf 8/255, L2 0.5) from
    the stored per-sample minimal distances, one column per suite (wide, keyed by CLASSIFIER_KEY)."""
    from ..compute.evaluation.scores import ROBUSTBENCH_BUDGETS, robust_accuracy
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
    """Table 1: mean final gamma_k per layer and alpha (the recipe's) over the regularized classifiers
    (queries.layer_weights)."""
    df = queries.layer_weights(modules)
    if df.empty:
        return pd.DataFrame()
    df = df.drop(columns=["alpha"]).rename(columns={"regularizer": "label", "recipe_alpha": "alpha"})
    table = (df.groupby(["label", "alpha", "layer"], as_index=False)
             .agg(mean_gamma=("gamma", "mean"), models=("seed", "count")))
    return table.pivot_table(index=["label", "alpha"], columns="layer", values="mean_gamma").reset_index() \
        .rename(columns=lambda c: f"gamma_{c}" if isinstance(c, (int, np.integer)) else c)


def noise_correct_table(modules) -> pd.DataFrame:
    """Per classifier and noise level: accuracy and the per-test-image correctness (bool array)."""
    return _labelled(queries.noise_curves(modules, per_image=True), modules, ["noise_name", "sigma", "accuracy", "correct"])


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
    out["diff_vs_none_mean"], out["diff_vs_none_sem"] = float(diff.mean()), standard_error(diff)
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
            for label in reg_sort(level["label"].unique()):
                part = level[level["label"] == label]
                acc = part["accuracy"].to_numpy(float)
                rows.append({**dict(zip(CONTROL_GROUP, keys)), "regularizer": label, "kind": part["kind"].iloc[0],
                             "noise_sd": float(sigma), "seeds": int(part["seed"].nunique()),
                             "accuracy_mean": float(acc.mean()), "accuracy_sem": standard_error(acc),
                             **_paired(part, none)})
    return pd.DataFrame(rows)


def population(scan_group) -> str:
    """The simulated population of a scan group by its name: '<group>-low' -> 'low', '<group>-high' ->
    'high', else 'mouse' (the default tuning, and every real recording)."""
    for t in TUNED:
        if isinstance(scan_group, str) and scan_group.endswith(f"-{t}"):
            return t
    return "mouse"


def population_targets(modules) -> pd.DataFrame:
    """population_targets.csv: for every scan group and every neural average (S_data, S_oracle, S_model
    of each image subset), the Pearson r of its off-diagonal entries with the lowpass and highpass
    pixel targets of the same group and image subset, on the images both hold."""
    from ..compute.similarity import rsa
    sim = modules["similarity"]
    rel = sim.AveragedSimilarity * sim.SimilarityConfig.proj("method", "image_subset", "label")
    rows = pd.DataFrame(rel.proj("method", "image_subset", "label", "image_ids", "n_scans").to_dicts())
    if rows.empty:
        return rows
    out = []
    for (group, subset), part in rows.groupby(["scan_group", "image_subset"]):
        pixel = {m: part[part["method"] == m] for m in ("lowpass", "highpass")}
        if any(v.empty for v in pixel.values()):
            continue
        targets = {}
        for m, row in pixel.items():
            row = row.iloc[0]
            targets[m] = ((sim.AveragedSimilarity & {k: row[k] for k in ("scan_group", "sim_hash")})
                          .fetch1("matrix").load(), np.asarray(row["image_ids"]))
        for _, row in part[part["method"].isin(["data", "oracle", "model"])].iterrows():
            matrix = (sim.AveragedSimilarity & {k: row[k] for k in ("scan_group", "sim_hash")}).fetch1("matrix").load()
            ids = np.asarray(row["image_ids"])
            entry = {"scan_group": group, "population": population(group), "matrix": row["label"],
                     "n_scans": int(row["n_scans"])}
            for m, (target, target_ids) in targets.items():
                common, a, b = np.intersect1d(ids, target_ids, return_indices=True)
                entry["n_images"] = len(common)
                entry[f"r_{m}"] = (round(rsa.matrix_correlation(matrix[np.ix_(a, a)], target[np.ix_(b, b)]), 3)
                                   if len(common) > 2 else np.nan)
            out.append(entry)
    return pd.DataFrame(out).sort_values(["scan_group", "matrix"]).reset_index(drop=True) if out else pd.DataFrame()


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (nan stays nan, not counted)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    m, running = len(order), 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


PRIMARY = {"regularizer": "Neural (model, low)", "noise_sd": 0.2, "noise_name": "wide"}   # docs/controls.md


def neuron_controls_summary(controls: pd.DataFrame) -> pd.DataFrame:
    """neuron_controls.csv: the rows of `controls_summary` of the studies with known-answer populations,
    with Holm's adjustment of the paired seed test over the regularizers at each noise level
    (`p_holm`) and the pre-declared primary comparison marked (`primary`: Neural (model, low) - None
    at sd 0.2 of the 'wide' levels)."""
    if controls.empty or not controls["regularizer"].isin(["Neural (model, low)", "Neural (model, high)"]).any():
        return pd.DataFrame()
    keep = []
    for _, part in controls.groupby(CONTROL_GROUP):
        if not part["regularizer"].isin(["Neural (model, low)", "Neural (model, high)"]).any():
            continue
        part = part.copy()
        part["p_holm"] = np.nan
        for _, level in part.groupby("noise_sd"):
            family = level[level["kind"] != "none"]
            part.loc[family.index, "p_holm"] = holm(family["p_seeds_paired_t"])
        part["primary"] = ((part["regularizer"] == PRIMARY["regularizer"])
                           & np.isclose(part["noise_sd"], PRIMARY["noise_sd"])
                           & (part["noise_name"] == PRIMARY["noise_name"]))
        keep.append(part)
    return pd.concat(keep, ignore_index=True) if keep else pd.DataFrame()


def dose_response(modules) -> pd.DataFrame:
    """dose_response.csv: for Neural (model) and Lowpass trained at several alphas (one recipe with
    alpha overridden; alpha 0 is None), per alpha and noise sd: accuracy, and the held-out Eq. 8
    loss after training, mean and SEM over the seeds that every alpha of the curve has."""
    df = noise_table(modules)
    if df.empty:
        return pd.DataFrame()
    df = df.copy()
    df["base_config"] = df["config_name"].str.replace(r"-alpha[0-9.]+$", "", regex=True)
    out = []
    for (dataset, base, noise), part in df.groupby(["display_name", "base_config", "noise_name"]):
        none = part[part["kind"] == "none"]
        for label in reg_sort(part[part["kind"].isin(["neural-model", "lowpass"])]["label"].unique()):
            reg = part[part["label"] == label]          # one target: a population's label of its own
            if reg["cfg_alpha"].nunique() < 2 or none.empty:
                continue
            both = pd.concat([none.assign(sweep_alpha=0.0), reg.assign(sweep_alpha=reg["cfg_alpha"].astype(float))])
            # the seeds every alpha has (a recipe shared with another study may have more): one n per curve
            common = set.intersection(*(set(g["seed"]) for _, g in both.groupby("sweep_alpha")))
            both = both[both["seed"].isin(common)]
            for (alpha, sigma), cell in both.groupby(["sweep_alpha", "sigma"]):
                acc = cell["accuracy"].to_numpy(float)
                loss = cell["heldout_loss"].to_numpy(float)
                out.append({"dataset": dataset, "config": base, "noise_name": noise,
                            "regularizer": reg["label"].iloc[0], "alpha": alpha, "noise_sd": float(sigma),
                            "seeds": int(cell["seed"].nunique()), "accuracy_mean": float(acc.mean()),
                            "accuracy_sem": standard_error(acc),
                            "heldout_loss_mean": float(np.nanmean(loss)) if np.isfinite(loss).any() else np.nan,
                            "heldout_loss_sem": standard_error(loss) if np.isfinite(loss).all() else np.nan})
    return pd.DataFrame(out)


CORRUPTION_GROUP = ["display_name", "config_name", "corruption_set", "is_published"]


def corruption_table(modules) -> pd.DataFrame:
    """Per classifier, corruption set, corruption and severity: accuracy, with severity 0 the clean
    accuracy on the same test images (CorruptionAccuracy; with the classifier's labels)."""
    if not (modules or {}).get("evaluation"):           # the corruption tables live in the evaluation schema
        return pd.DataFrame()
    from .. import corruptions as ctables
    published = ctables.CorruptionSet.proj("is_published")
    sev = pd.DataFrame((ctables.CorruptionAccuracy.Severity * published).proj("accuracy", "is_published").to_dicts())
    if sev.empty:
        return sev
    clean = pd.DataFrame(ctables.CorruptionAccuracy.proj("clean_accuracy").to_dicts())
    keys = CLASSIFIER_KEY + ["corruption_set"]
    clean = (sev[keys + ["corruption", "is_published"]].drop_duplicates().merge(clean, on=keys)
             .rename(columns={"clean_accuracy": "accuracy"}).assign(severity=0))
    df = pd.concat([clean, sev], ignore_index=True)
    df["is_published"] = df["is_published"].astype(bool)          # MySQL/MariaDB return 0 / 1
    return df.merge(classifier_table(modules), on=CLASSIFIER_KEY)


def corruption_summary(modules) -> pd.DataFrame:
    """corruptions.csv / the Fig. 4-like figure: per data set, recipe, corruption set, regularizer and
    severity (0: clean), the accuracy per corruption and its mean over the corruptions
    (corruption 'mean'), each as mean and SEM over seeds."""
    df = corruption_table(modules)
    if df.empty:
        return df
    per_model_mean = (df.groupby(CORRUPTION_GROUP + ["label", "seed", "severity"], as_index=False)["accuracy"].mean()
                      .assign(corruption="mean"))
    both = pd.concat([df[CORRUPTION_GROUP + ["label", "seed", "severity", "corruption", "accuracy"]], per_model_mean],
                     ignore_index=True)
    return over_seeds(both, CORRUPTION_GROUP + ["corruption", "label", "severity"], "accuracy", "accuracy")
