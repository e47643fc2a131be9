"""The report's CSV columns: one vocabulary across every CSV, values rounded to their precision, and
the data dictionary (README.md in the report folder) that describes every column.

    write_csv(df, path)          the DataFrame under the report's column names (RENAME, RENAME_PATTERNS),
                                 floats rounded (round_values), written without the index
    describe(column)             what a CSV column holds (COLUMNS, PATTERNS); None when undocumented
    write_readme(out, csvs, ...) README.md: what the folder holds, and every column of every CSV

The queries (report.tables) keep their own names (`label`, `sigma`, `mean_accuracy`, ...), which the
figures use; only what a reader of the CSVs sees is renamed here.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

# query name -> CSV name: one name per quantity in every CSV
RENAME = {
    "label": "regularizer", "sigma": "noise_sd", "sweep_alpha": "alpha", "cfg_alpha": "recipe_alpha",
    "mean_accuracy": "accuracy_mean", "sem_accuracy": "accuracy_sem",
    "mean_median": "median_distance_mean", "sem_median": "median_distance_sem",
    "mean_mean": "mean_distance_mean", "sem_mean": "mean_distance_sem",
    "mean_median_correct": "median_distance_correct_mean", "sem_median_correct": "median_distance_correct_sem",
    "mean_mean_correct": "mean_distance_correct_mean", "sem_mean_correct": "mean_distance_correct_sem",
    "sem_samples": "mean_distance_sem_samples",
    "mean_success_rate": "fooled_fraction_mean", "sem_success_rate": "fooled_fraction_sem",
    "mean_mean_success": "mean_distance_fooled_mean", "sem_mean_success": "mean_distance_fooled_sem",
    "mean_queries": "queries_mean", "sem_queries": "queries_sem",
}
RENAME_PATTERNS = [(re.compile(r"^robust_acc_(.+)$"), r"robust_accuracy_\1"),
                   (re.compile(r"^attacked_clean_acc_(.+)$"), r"attacked_clean_accuracy_\1")]

SEEDS_NOTE = "over the seeds of a regularizer (the `seeds` column)"
COLUMNS = {
    # who: data set, recipe, regularizer, seed
    "dataset": "classification data set (key of ClassificationDataset: cifar10, cifar100, offline, offline-photos)",
    "display_name": "the data set's name in figures; the offline ones say 'stand-in' (not CIFAR)",
    "is_stand_in": "True: the small offline substitute, not CIFAR",
    "config_name": "classifier recipe (ClassifierConfig.config_name, e.g. 'demo', 'demo-alpha5')",
    "base_config": "classifier recipe without its '-alpha<value>' suffix (the recipe of an alpha sweep)",
    "clf_hash": "content hash of the classifier recipe (ClassifierConfig key)",
    "arch": "network: resnet18 or resnet34",
    "regularizer": "what the similarity loss matched: None, Neural (model), Neural (data), Shuffle, VGG, Lowpass, "
                   "Highpass, Neural (model, low|high) (Regularizer.label)",
    "kind": "the regularizer's kind (Regularizer.kind: none, neural-model, neural-data, shuffle, vgg, lowpass, highpass)",
    "reg_hash": "content hash of the regularizer (Regularizer key)",
    "scan_group": "the scan group whose averaged similarity matrix was the target (empty for None)",
    "population": "the simulated population of the scan group: mouse (V1-like; every real recording), low, high",
    "seed": "classifier training seed",
    "seeds": "number of seeds (trained classifiers) a mean and SEM are taken over",
    "paired_seeds": "seeds both this regularizer and None were trained with (the pairs of the paired test)",
    "models": "number of classifiers averaged",
    # training
    "recipe_alpha": "Eq. 7 weight alpha of the recipe",
    "alpha": "Eq. 7 weight alpha applied in training (0 for None)",
    "test_accuracy": "(fraction correct) clean test accuracy of the final network",
    "train_accuracy": "(fraction correct) accuracy on the last epoch's augmented training batches",
    "initial_heldout_loss": "Eq. 8 loss over the held-out stimulus pairs before training",
    "heldout_loss": "Eq. 8 loss over the held-out stimulus pairs after training",
    "epochs_run": "epochs trained",
    "resumed_from_epoch": "epochs restored from a checkpoint (0: trained in one run)",
    "pairs_per_step": "similarity pairs per training step (0: unregularized)",
    "train_seconds": "(s) wall time of the run that finished training",
    "device": "where it ran, e.g. cpu or the GPU's name",
    "code_version": "neuralreg version (and git commit) that computed it",
    # noise
    "noise_name": "set of noise levels (NoiseConfig: default, wide)",
    "noise_sd": "(pixels in [0, 1]) standard deviation of the added Gaussian noise; 0 = clean",
    "accuracy": "(fraction correct) test accuracy",
    "accuracy_mean": "(fraction correct) test accuracy, mean " + SEEDS_NOTE,
    "accuracy_sem": "(fraction correct) standard error of that mean over seeds (0 for one seed)",
    "diff_vs_none_mean": "(fraction correct) accuracy minus the accuracy of None with the same seed, mean over the "
                         "paired seeds",
    "diff_vs_none_sem": "(fraction correct) standard error of that mean over the paired seeds",
    "p_seeds_paired_t": "two-sided paired t-test over seeds of accuracy against None (empty: fewer than 2 pairs or "
                        "no variation)",
    "p_holm": "p_seeds_paired_t with Holm's adjustment over the regularizers at the same noise level",
    "primary": "True: the pre-declared primary comparison (docs/controls.md)",
    "n_images": "test images of the per-image comparison",
    "diff_images_mean": "(fraction correct) per test image, seed-averaged correctness minus None's, mean over images",
    "p_images_wilcoxon": "two-sided Wilcoxon signed-rank test over test images of that difference (zeros left out)",
    "heldout_loss_mean": "Eq. 8 loss over the held-out stimulus pairs after training, mean " + SEEDS_NOTE,
    "heldout_loss_sem": "standard error of that mean over seeds",
    # adversarial
    "suite": "attack suite (AttackSuite: tiny, demo, paper)",
    "norm": "distance norm: l0 (pixels changed), l1, l2, linf (pixels in [0, 1])",
    "budget": "attack iterations per run (query budget) every attack of the suite was limited to",
    "median_distance_mean": "(norm units) per classifier the median over samples of the minimal adversarial distance "
                            "(min over the suite's attacks; clean errors count 0; inf: most samples never fooled), "
                            "mean " + SEEDS_NOTE,
    "median_distance_sem": "standard error of median_distance_mean over seeds",
    "mean_distance_mean": "(norm units) per classifier the mean over samples of the minimal adversarial distance "
                          "(clean errors count 0; inf: a sample never fooled), mean " + SEEDS_NOTE,
    "mean_distance_sem": "standard error of mean_distance_mean over seeds",
    "median_distance_correct_mean": "as median_distance_mean, over the samples the classifier got right only",
    "median_distance_correct_sem": "standard error of median_distance_correct_mean over seeds",
    "mean_distance_correct_mean": "as mean_distance_mean, over the samples the classifier got right only",
    "mean_distance_correct_sem": "standard error of mean_distance_correct_mean over seeds",
    "mean_distance_sem_samples": "standard error over samples of the per-classifier mean distance, mean over seeds",
    "fooled_fraction_mean": "(fraction of samples) with a finite minimal distance (fooled by some attack, or "
                            "misclassified clean), mean " + SEEDS_NOTE,
    "fooled_fraction_sem": "standard error of fooled_fraction_mean over seeds",
    "mean_distance_fooled_mean": "(norm units) per classifier the mean minimal distance over the fooled samples only "
                                 "(finite where mean_distance_mean is inf: the figure's hatched bar), mean " + SEEDS_NOTE,
    "mean_distance_fooled_sem": "standard error of mean_distance_fooled_mean over seeds",
    "queries_mean": "(model queries per sample) the whole suite limited to `budget`: forward and gradient rows "
                    "through the model, counted (AttackResult.Queries), per attacked sample, mean " + SEEDS_NOTE,
    "queries_sem": "standard error of queries_mean over seeds",
    "corruption_set": "common-corruptions set (CorruptionSet: e.g. cifar10-c, or <dataset>-local-c built here)",
    "is_published": "True: Hendrycks & Dietterich's published CIFAR-10-C files (grey); False: a LOCAL set built by "
                    "compute/evaluation/corruption_functions.py on a stand-in's test images, not CIFAR-10-C",
    "corruption": "corruption (a published CIFAR-10-C name, e.g. gaussian_noise); 'mean': the mean over the set's "
                  "corruptions",
    "severity": "corruption severity 1..5 (0: the same test images, clean)",
    "attack": "attack of the suite (compute/evaluation/specs.py ATTACKS, e.g. ddn-l2, pgd-linf, jsma-l0)",
    "runs": "runs of the attack (settings x repeats of its grid)",
    "forward_per_sample": "(images per attacked sample) rows of every forward pass of the attack, summed over its runs",
    "gradient_per_sample": "(images per attacked sample) rows of every gradient that reached the input, summed over "
                           "its runs",
    "queries_per_sample": "(model queries per attacked sample) forward_per_sample + gradient_per_sample",
    # AutoAttack (report/autoattack.py)
    "epsilon": "(norm units, pixels in [0, 1]) AutoAttack budget",
    "n_samples": "test samples attacked",
    "robust_accuracy_mean": "(fraction) AutoAttack robust accuracy at the budget (clean errors are not robust), mean "
                            + SEEDS_NOTE,
    "robust_accuracy_sem": "standard error of robust_accuracy_mean over seeds",
    "autoattack_clean_accuracy_mean": "(fraction correct) clean accuracy on AutoAttack's samples, mean " + SEEDS_NOTE,
    # Fig. 1 and the similarity targets
    "model_hash": "content hash of the predictive-model recipe (PredictiveModelConfig key)",
    "model_seed": "seed of the predictive model",
    "scan": "scan as animal_id-session-scan_idx",
    "r_model_oracle": "Pearson r of S_model with S_oracle on the oracle images (Fig. 1D; paper: 0.73)",
    "r_data_oracle": "Pearson r of S_data with S_oracle on the oracle images (Fig. 1D; paper: 0.39)",
    "repeat_fluctuation_std": "s.d. of the similarity differences between repeats of one scan (Eq. 5)",
    "eq4_std": "s.d. of the similarity differences across scans of the group (Eq. 4; empty for one scan)",
    "eq5_std": "s.d. of the similarity differences across repeats, over the group (Eq. 5)",
    "matrix": "the neural average compared (SimilarityConfig.label, e.g. model/stimulus)",
    "n_scans": "scans averaged into the matrix",
    "r_lowpass": "Pearson r of the matrix's off-diagonal entries with the lowpass pixel target on the same images",
    "r_highpass": "Pearson r of the matrix's off-diagonal entries with the highpass pixel target on the same images",
}
PATTERNS = [
    (re.compile(r"^gamma_(\d+)$"), "final layer weight gamma_k of conv layer {0} (Eq. 10), mean over the classifiers"),
    (re.compile(r"^robust_accuracy_(l2|linf)_(.+?)_([^_]+)$"),
     "(fraction) robust accuracy of attack suite {2} at RobustBench's {0} budget ({1}): the samples no attack "
     "fooled at or below it (clean errors are not robust)"),
    (re.compile(r"^attacked_clean_accuracy_(.+)$"), "(fraction correct) clean accuracy on the samples suite {0} attacked"),
    (re.compile(r"^autoattack_robust_accuracy_(l2|linf)_(.+)$"),
     "(fraction) AutoAttack (standard) robust accuracy in {0} at budget {1} (8_255: 8/255): the samples it did not "
     "fool (clean errors are not robust)"),
    (re.compile(r"^autoattack_clean_accuracy_(l2|linf)$"), "(fraction correct) clean accuracy on AutoAttack's {0} samples"),
    (re.compile(r"^autoattack_missed_(l2|linf)_(.+)$"),
     "cross-check: samples AutoAttack fooled at a {0} budget although their minimal {0} distance from suite {1} is "
     "larger (adversarials the minimal-perturbation search missed; 0 is consistent)"),
    (re.compile(r"^autoattack_compared_(l2|linf)_(.+)$"),
     "samples of that cross-check: clean-correct ones both AutoAttack ({0}) and suite {1} evaluated"),
]

SIGNIFICANT = 4                   # significant digits of a float in a CSV
SIGNIFICANT_P = 3                 # ... of a p-value
DECIMALS = {"noise_sd": 6, "alpha": 6, "recipe_alpha": 6}     # set by hand: kept as written


def csv_name(column: str) -> str:
    if column in RENAME:
        return RENAME[column]
    for pattern, repl in RENAME_PATTERNS:
        if pattern.match(column):
            return pattern.sub(repl, column)
    return column


def describe(column: str) -> str | None:
    """What the CSV column `column` (a CSV name) holds; None when the dictionary does not know it."""
    if column in COLUMNS:
        return COLUMNS[column]
    for pattern, text in PATTERNS:
        m = pattern.match(column)
        if m:
            return text.format(*m.groups())
    return None


def _round(value, digits: int):
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return float(f"{value:.{digits}g}")
    return value


def round_values(df: pd.DataFrame) -> pd.DataFrame:
    """Floats to SIGNIFICANT digits (p-values to SIGNIFICANT_P; settings such as noise_sd and alpha to 6
    decimals: exactly as configured); integers, text, inf and empty cells as they are."""
    df = df.copy()
    for column in df.columns:
        if not pd.api.types.is_float_dtype(df[column]) and not pd.api.types.is_object_dtype(df[column]):
            continue
        if column in DECIMALS:
            df[column] = df[column].map(lambda v: round(v, DECIMALS[column]) if isinstance(v, (float, np.floating))
                                        and np.isfinite(v) else v)
            continue
        digits = SIGNIFICANT_P if column.startswith("p_") else SIGNIFICANT
        df[column] = df[column].map(lambda v: _round(v, digits))
    return df


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """The DataFrame as a CSV shows it: report column names, rounded values."""
    return round_values(df.rename(columns=csv_name))


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    tidy(df).to_csv(path, index=False)
    return Path(path)


FILES = {          # what each CSV of a report is (README.md); figures: the PNGs of the same stem
    "classifiers.csv": "every trained classifier: recipe, regularizer, seed, accuracies, losses, provenance; per "
                       "attack suite the clean and robust accuracy",
    "table1_gamma.csv": "supplement Table 1: mean final gamma_k per regularizer, alpha and layer",
    "fig1_checks.csv": "Fig. 1C/D: per scan group, predictive model and scan the similarity checks",
    "fig4_noise.csv": "Fig. 4: accuracy under Gaussian noise per regularizer and noise level, over seeds",
    "fig5_minimal_perturbation.csv": "Fig. 5: minimal adversarial distance per regularizer, norm and query budget",
    "fig6_alpha.csv": "supplement Fig. 6: accuracy under noise per alpha (Neural (model); 0 = None)",
    "fig7_mean_perturbation.csv": "supplement Fig. 7: minimal adversarial distance per regularizer and norm, the "
                                  "fraction of samples fooled and the mean over the fooled ones",
    "corruptions.csv": "common corruptions: accuracy per regularizer, corruption (and their mean) and severity, "
                       "over seeds",
    "attack_queries.csv": "measured model queries per attacked sample of every attack, per classifier",
    "controls.csv": "known-answer controls: accuracy per regularizer and noise level, and the paired comparison "
                    "with None",
    "population_targets.csv": "per simulated population: r of its neural similarity with the pixel targets",
    "neuron_controls.csv": "known answers from spikes: controls.csv's numbers with Holm's adjustment",
    "dose_response.csv": "accuracy and held-out loss against alpha for Neural (model) and Lowpass",
    "autoattack.csv": "AutoAttack (standard) robust accuracy per regularizer, norm and budget, over seeds",
}


def write_readme(out: Path, paths, prefix: str) -> Path:
    """README.md in the report folder: what each file is, and every column of every CSV (the data
    dictionary). A column the dictionary does not know is listed as '(not described)'."""
    lines = [f"# Report of the schemas '{prefix}_*'", "",
             "Written by `neuralreg report` (neuralreg_schema/report) from queries alone: each figure (PNG) "
             "comes with the CSV of the numbers it plots. Every CSV uses the same column names for the same "
             "quantity; floats are rounded to "
             f"{SIGNIFICANT} significant digits (p-values to {SIGNIFICANT_P}); 'inf' is an infinite distance "
             "(a sample no attack fooled), an empty cell a value that does not exist. SEM: standard error of "
             "the mean.", "",
             "Reading the CSVs with pandas: the regularizer without a similarity loss is labelled `None`, which "
             "`pd.read_csv` reads as a missing value unless told otherwise: use `pd.read_csv(path, "
             "keep_default_na=False, na_values=[''])` (an empty cell stays missing, `None` stays the label).",
             "", "## Files", ""]
    csvs = [Path(p) for p in paths if Path(p).suffix == ".csv"]
    pngs = [Path(p) for p in paths if Path(p).suffix == ".png"]
    for p in csvs:
        lines.append(f"- `{p.name}`: {FILES.get(p.name, '')}")
    for p in pngs:
        lines.append(f"- `{p.name}`")
    lines += ["", "## Columns", ""]
    for p in csvs:
        lines += [f"### {p.name}", "", "| column | meaning |", "|---|---|"]
        for column in pd.read_csv(p, nrows=0).columns:
            lines.append(f"| `{column}` | {describe(column) or '(not described)'} |")
        lines.append("")
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines))
    return path


__all__ = ["COLUMNS", "FILES", "PATTERNS", "RENAME", "csv_name", "describe", "round_values", "tidy", "write_csv",
           "write_readme"]
