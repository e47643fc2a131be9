"""Named tidy queries: the questions a user asks of a study, as pandas DataFrames with readable labels.

    mods = pipeline.open_existing("neuralreg_demo")
    queries.classifiers(mods)            one row per trained classifier
    queries.noise_curves(mods)           per classifier, noise set and noise sd: the accuracy
    queries.minimal_perturbations(mods)  per classifier, attack suite and norm: the minimal adversarial distances
    queries.perturbation_budgets(mods)   the same per query budget (every attack limited to that many iterations)
    queries.layer_weights(mods)          per regularized classifier and layer: the final gamma_k (Eq. 10)
    queries.predictive_models(mods)      per scan, predictive-model recipe and seed: its test and oracle correlations
    queries.similarity_checks(mods)      per scan group, predictive model and scan: the Fig. 1D correlations
    queries.autoattack(mods)             per classifier, AutoAttack config and budget: the robust accuracy
    queries.corruptions(mods)            per classifier, corruption set, corruption and severity: the accuracy
    queries.join(A, B)                   A * B for two tables whose secondary attributes share names

Every DataFrame has a plain row index; the labels come first (data set, recipe `config_name`,
`regularizer`, `seed`, `noise_name`, `noise_sd`, `suite`, `norm`, `scan`, ...), the measured values
next, the content hashes (`clf_hash`, `reg_hash`, `model_hash`) last, so a row can be traced back to its
key. The column names are those of the report's CSVs (report/columns.py). An empty table gives an empty
DataFrame with the same columns.

Why `join`: every computed table records where it ran (`device`, `torch_version`, `code_version`,
`host`), and some share other secondary names (`alpha`, `seconds`, `n_samples`, ...). DataJoint 2 joins
only on attributes of one lineage and refuses `NoiseRobustness * RegularizedClassifier` with a
"lineage" error: the fix is not `schema.rebuild_lineage()` but a projection of the right-hand table,
which `join` writes for you (its namesakes become `<table>_<attribute>`, e.g. `regularized_classifier_device`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CLASSIFIER_KEYS = ["clf_hash", "reg_hash"]


def join(a, b):
    """`a * b`, with every secondary attribute of `b` whose name `a` also has renamed to
    `<b's table name>_<attribute>`: DataJoint 2 refuses to join namesakes of different lineage (the
    provenance attributes of two computed tables, for one). Keys join as usual."""
    a, b = (t() if isinstance(t, type) else t for t in (a, b))      # a table class or an expression
    names = set(a.heading.names)
    stem = getattr(b, "table_name", "right").lstrip("_#~") or "right"
    keep = [n for n in b.heading.secondary_attributes if n not in names]
    renamed = {f"{stem}_{n}": n for n in b.heading.secondary_attributes if n in names}
    return a * b.proj(*keep, **renamed)


def _labels(modules):
    """The classifier labels every classifier query joins: data set name, recipe, regularizer."""
    clf = modules["classifier"]
    return (clf.Regularizer.proj("kind", "scan_group", regularizer="label")
            * clf.ClassifierConfig.proj("config_name", "arch", recipe_alpha="alpha")
            * clf.ClassificationDataset.proj("is_stand_in", dataset_name="display_name"))


def _frame(rel, columns: list[str], infinite=()) -> pd.DataFrame:
    """`rel` fetched as a DataFrame with exactly `columns`, in that order, on a plain index; null
    distances in `infinite` become inf (the tables store an infinite distance as null)."""
    df = rel.proj(*[c for c in columns if c not in rel.primary_key]).to_pandas().reset_index()
    if df.empty:
        return pd.DataFrame(columns=columns)
    for column in infinite:
        df[column] = df[column].astype(float).fillna(np.inf)
    return df[columns]


CLASSIFIER_COLUMNS = ["dataset", "dataset_name", "is_stand_in", "config_name", "arch", "regularizer", "kind",
                      "scan_group", "seed", "alpha", "recipe_alpha", "test_accuracy", "train_accuracy",
                      "initial_heldout_loss", "heldout_loss", "epochs_run", "resumed_from_epoch", "pairs_per_step",
                      "train_seconds", "device", "code_version"] + CLASSIFIER_KEYS


def classifiers(modules) -> pd.DataFrame:
    """One row per trained classifier: its data set, recipe, regularizer and seed, the alpha applied
    (0 for None) and the recipe's, clean accuracies, the held-out Eq. 8 loss before and after, where it ran."""
    rel = modules["classifier"].RegularizedClassifier * _labels(modules)
    return _frame(rel, CLASSIFIER_COLUMNS).sort_values(["dataset", "config_name", "regularizer", "seed"],
                                                       ignore_index=True)


NOISE_COLUMNS = ["dataset", "dataset_name", "config_name", "regularizer", "seed", "noise_name", "noise_sd",
                 "accuracy"] + CLASSIFIER_KEYS


def noise_curves(modules, per_image: bool = False) -> pd.DataFrame:
    """Per classifier, noise set (`noise_name`: one set of levels per curve) and noise sd: the test
    accuracy under additive Gaussian noise (Fig. 4). per_image: a column `correct` too, per test image
    whether it was classified correctly (bool array; the same noisy images for every classifier)."""
    level = modules["evaluation"].NoiseRobustness.Level.proj("accuracy", "correct", noise_sd="sigma")
    columns = NOISE_COLUMNS + (["correct"] if per_image else [])
    return _frame(level * _labels(modules), columns).sort_values(
        ["dataset_name", "config_name", "regularizer", "seed", "noise_name", "noise_sd"], ignore_index=True)


DISTANCES = ["median_distance", "mean_distance", "median_distance_correct", "mean_distance_correct"]
SAMPLE_SEMS = ["mean_distance_sem_samples", "mean_distance_correct_sem_samples"]
PERTURBATION_COLUMNS = ["dataset", "dataset_name", "config_name", "regularizer", "seed", "suite", "norm"] + DISTANCES \
    + SAMPLE_SEMS + ["success_rate", "mean_distance_fooled"] + CLASSIFIER_KEYS
DISTANCE_NAMES = dict(median_distance="median", mean_distance="mean", median_distance_correct="median_correct",
                       mean_distance_correct="mean_correct", mean_distance_sem_samples="sem",
                       mean_distance_correct_sem_samples="sem_correct", mean_distance_fooled="mean_success")


def minimal_perturbations(modules) -> pd.DataFrame:
    """Per classifier, attack suite and norm: the median and mean over samples of the minimal adversarial
    distance (minimum over the suite's attacks; clean errors count 0; inf: too many samples never fooled),
    the same over the clean-correct samples (`_correct`), the standard errors over samples of the two
    means (`_sem_samples`), the fraction of samples fooled and the mean over the fooled ones
    (`mean_distance_fooled`, finite even where a never-fooled sample makes the mean infinite; Fig. 7)."""
    norm = modules["evaluation"].MinimalPerturbation.Norm.proj("success_rate", **DISTANCE_NAMES)
    return _frame(norm * _labels(modules), PERTURBATION_COLUMNS, infinite=DISTANCES).sort_values(
        ["dataset_name", "config_name", "suite", "regularizer", "seed", "norm"], ignore_index=True)


BUDGET_COLUMNS = [c for c in PERTURBATION_COLUMNS[:7] + ["budget"] + PERTURBATION_COLUMNS[7:]
                  if c not in ("mean_distance_correct_sem_samples", "mean_distance_fooled")]   # the Budget rows keep one SEM


def perturbation_budgets(modules) -> pd.DataFrame:
    """minimal_perturbations per query budget: every attack of the suite limited to `budget`
    iterations per run (Fig. 5's curve; at the largest budget, the final result)."""
    names = {k: v for k, v in DISTANCE_NAMES.items() if k in BUDGET_COLUMNS}
    budget = modules["evaluation"].MinimalPerturbation.Budget.proj("success_rate", **names)
    return _frame(budget * _labels(modules), BUDGET_COLUMNS, infinite=DISTANCES).sort_values(
        ["dataset_name", "config_name", "suite", "regularizer", "seed", "norm", "budget"], ignore_index=True)


LAYER_COLUMNS = ["dataset", "dataset_name", "config_name", "regularizer", "seed", "alpha", "recipe_alpha", "layer",
                 "gamma"] + CLASSIFIER_KEYS


def layer_weights(modules) -> pd.DataFrame:
    """Per regularized classifier and conv layer: the final layer weight gamma_k of Eq. 10 (Table 1)."""
    clf = modules["classifier"]
    rel = clf.RegularizedClassifier.LayerWeight * clf.RegularizedClassifier.proj("alpha") * _labels(modules)
    return _frame(rel, LAYER_COLUMNS).sort_values(["dataset_name", "config_name", "regularizer", "seed", "layer"],
                                                  ignore_index=True)


def _scan_column(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "scan", [f"{a}-{s}-{i}" for a, s, i in zip(df["animal_id"], df["session"], df["scan_idx"])])
    return df


PREDICTIVE_COLUMNS = ["scan", "config_name", "model_seed", "mean_test_corr", "mean_oracle_corr", "best_epoch",
                      "device", "animal_id", "session", "scan_idx", "model_hash"]


def predictive_models(modules) -> pd.DataFrame:
    """Per scan, predictive-model recipe and seed: the mean correlation of its predictions with the
    held-out responses (test tier and oracle repeats), the epoch kept by early stopping."""
    pred = modules["predictive"]
    rel = pred.PredictiveModel * pred.PredictiveModelConfig.proj("config_name")
    base = [c for c in PREDICTIVE_COLUMNS if c != "scan"]
    df = _frame(rel, base)
    return _scan_column(df)[PREDICTIVE_COLUMNS] if not df.empty else pd.DataFrame(columns=PREDICTIVE_COLUMNS)


CHECK_COLUMNS = ["scan_group", "scan", "config_name", "model_seed", "r_model_oracle", "r_data_oracle",
                 "repeat_fluctuation_std", "animal_id", "session", "scan_idx", "model_hash"]


def similarity_checks(modules) -> pd.DataFrame:
    """Per scan group, predictive model and scan: the Fig. 1D correlations r(S_model, S_oracle) and
    r(S_data, S_oracle) (the paper: 0.73 against 0.39) and the s.d. of the scan's repeat fluctuations."""
    pred, sim = modules["predictive"], modules["similarity"]
    rel = sim.SimilarityStability.Member * pred.PredictiveModelConfig.proj("config_name")
    base = [c for c in CHECK_COLUMNS if c != "scan"]
    df = _frame(rel, base)
    return _scan_column(df)[CHECK_COLUMNS] if not df.empty else pd.DataFrame(columns=CHECK_COLUMNS)


AUTOATTACK_COLUMNS = ["dataset", "dataset_name", "config_name", "regularizer", "seed", "norm", "version", "epsilon",
                      "robust_accuracy", "clean_accuracy", "attacked", "n_samples", "rejected"] + CLASSIFIER_KEYS \
    + ["aa_hash"]


def autoattack(modules) -> pd.DataFrame:
    """Per classifier, AutoAttack configuration and budget: the robust accuracy (fraction of the samples
    not fooled within `epsilon`; clean errors are not robust), the clean accuracy on the same samples,
    the samples AutoAttack ran on at that budget (nested budgets: the others were clean errors or fooled
    at a smaller one), and the claimed adversarials that failed the re-check (`rejected`, counted
    robust). The cross-check against the minimal perturbations: `neuralreg report` (classifiers.csv)."""
    aa = modules.get("autoattack")
    if aa is None:
        return pd.DataFrame(columns=AUTOATTACK_COLUMNS)
    rel = (aa.AutoAttackResult.Budget.proj("epsilon", "robust_accuracy", "attacked")
           * aa.AutoAttackResult.proj("clean_accuracy", "n_samples", "rejected")
           * aa.AutoAttackConfig.proj("norm", "version") * _labels(modules))
    return _frame(rel, AUTOATTACK_COLUMNS).sort_values(
        ["dataset_name", "config_name", "regularizer", "seed", "norm", "epsilon"], ignore_index=True)


CORRUPTION_COLUMNS = ["dataset", "dataset_name", "config_name", "regularizer", "seed", "corruption_set",
                      "is_published", "corruption", "severity", "accuracy", "clean_accuracy", "n_images"] \
    + CLASSIFIER_KEYS


def corruptions(modules) -> pd.DataFrame:
    """Per classifier, corruption set, corruption and severity (1-5): the accuracy on the corrupted
    test images, and the clean accuracy on the same images. `is_published` False marks a LOCAL set
    (`neuralreg corruptions local`), not CIFAR-10-C."""
    ct = modules.get("corruptions")
    if ct is None:
        return pd.DataFrame(columns=CORRUPTION_COLUMNS)
    rel = (ct.CorruptionAccuracy.Severity * ct.CorruptionAccuracy.proj("clean_accuracy", "n_images")
           * ct.CorruptionSet.proj("is_published") * _labels(modules))
    df = _frame(rel, CORRUPTION_COLUMNS)
    df["is_published"] = df["is_published"].astype(bool)            # MySQL/MariaDB return 0 / 1
    return df.sort_values(["dataset_name", "config_name", "corruption_set", "regularizer", "seed", "corruption",
                           "severity"], ignore_index=True)


__all__ = ["autoattack", "classifiers", "corruptions", "join", "layer_weights", "minimal_perturbations",
           "noise_curves", "perturbation_budgets",
           "predictive_models", "similarity_checks"]
