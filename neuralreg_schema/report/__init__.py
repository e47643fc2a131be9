"""The paper's figures and tables, redrawn from queries alone: `write_report(prefix, out_dir)`.

Every figure comes with the CSV of exactly the numbers it plots (the CSV is the query result, the
PNG its picture). What is drawn when the tables hold it:

    fig1_similarity_<group>.png   Fig. 1A-B: S_oracle and S_model on the oracle images of a scan group,
                                  rows and columns in one order (hierarchical clustering of S_oracle);
                                  Fig. 1C: histograms of Eq. 4 (across scans) and Eq. 5 (across repeats);
                                  Fig. 1D: r(S_model, S_oracle) and r(S_data, S_oracle) per scan;
                                  a group with several predictive models (configs or seeds) gets one
                                  fig1_similarity_<group>-<model hash>-seed<seed>.png per model
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
    corruptions_<dataset>_<config>_<set>.png / corruptions.csv
                                  common corruptions (CorruptionAccuracy): accuracy vs severity (0 = clean)
                                  per regularizer, mean over the set's corruptions, mean +- SEM over
                                  seeds; the CSV also per corruption; a LOCAL set (the offline
                                  stand-ins: not CIFAR-10-C) says so in the title and `is_published`
    attack_queries.csv            per classifier and attack: the measured model queries per attacked
                                  sample (forward and gradient rows, AttackResult.Queries)
    fig7_mean_perturbation_<dataset>_<config>_<suite>.png / fig7_mean_perturbation.csv
                                  supplement Fig. 7: the mean minimal distance per regularizer and norm
                                  (bars: mean over seeds of the per-model mean; error bars: SEM over
                                  seeds, or over samples for one seed); where a sample was never fooled
                                  (the mean is infinite) a hatched bar shows the mean over the fooled
                                  samples with the fooled fraction above it; the CSV has the median and
                                  the mean, each with and without the clean errors (`_correct`), the
                                  SEM over samples, the fooled fraction and the mean over the fooled
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
    population_targets.csv        per scan group (a simulated population: mouse, low, high) and neural
                                  average (S_data, S_oracle, S_model): r with the lowpass and highpass
                                  pixel targets of the same images (docs/controls.md)
    neuron_controls_<dataset>_<config>_<noise>.png / neuron_controls.csv
                                  the known answers from spikes (a study with the low / high populations):
                                  controls.csv's numbers for it, with Holm's adjustment over the
                                  regularizers at each noise level (p_holm) and the pre-declared primary
                                  comparison marked (Neural (model, low) - None at sd 0.2, 'wide')
    dose_response_<dataset>_<config>_<noise>.png / dose_response.csv
                                  clean accuracy, accuracy under noise and the held-out Eq. 8 loss against
                                  alpha for Neural (model) and Lowpass (alpha 0 = None)
    classifiers.csv               every classifier: clean accuracy, held-out loss, device, ...; per attack
                                  suite: the clean accuracy on the attacked samples and the robust
                                  accuracy at RobustBench's budgets (Linf 8/255, L2 0.5) from the stored
                                  per-sample minimal distances (robust: no attack found an adversarial
                                  at or below the budget; clean errors are not robust); with AutoAttack
                                  results: its robust accuracy per norm and budget and the cross-check
                                  count per norm and suite (report/autoattack.py)
    autoattack.csv                AutoAttack robust accuracy per regularizer, norm and budget over seeds

    README.md                     what each file is, and every column of every CSV (report/columns.py: one
                                  column vocabulary across the CSVs, floats rounded to 4 significant digits)

The folder holds one report: `write_report` writes into a new folder beside it, then removes the files
of the earlier report (its manifest, .neuralreg-report, lists them) and moves the new ones in. File
names longer than 70 characters are cut and end in a hash (figures.file_name).

The data set's display name goes into every figure title, so the offline stand-in is never
mistaken for CIFAR. Every figure gives a regularizer the same colour (figures.regularizer_color(label)),
names n (seeds, scans or images) in a legend or title, labels every axis and has a legend entry for
every line and marker style; no content hash appears in a title.

The summaries `neuralreg demo` prints come from here too: demo_summary (per scan: Eq. 1 weights and
the predictive model against the simulation's truth; per scan group: the Fig. 1C/D checks; the
regularization targets) and classifier_summary (per data set, recipe and regularizer, over seeds),
as dicts (the demo's --json) and as text (format_demo_summary, format_classifiers).

The package: `tables` (the queries, as DataFrames), `figures` (the PNGs drawn from them), `summaries`
(what the demo prints); `write_report` here writes them all.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from .autoattack import autoattack_summary, autoattack_table
from .columns import write_csv, write_readme
from .figures import (attack_queries_csv, figure1, figure4, figure5, figure6, figure7, figure_controls,
                      figure_corruptions, figure_dose_response, figure_neuron_controls, norm_label, regularizer_color)
from .summaries import classifier_summary, demo_summary, format_classifiers, format_demo_summary
from .tables import (CLASSIFIER_KEY, CONTROL_GROUP, CONTROL_KINDS, PERTURBATION_GROUP, REG_ORDER, ROBUSTNESS_LABELS,
                     SCORES, budget_summary, budget_table, classifier_table, controls_summary, gamma_table,
                     dose_response, holm, neuron_controls_summary, noise_correct_table, noise_summary, noise_table,
                     over_seeds, perturbation_summary, perturbation_table, population_targets, reg_sort,
                     robust_accuracy_table)

__all__ = [
    "CLASSIFIER_KEY", "CONTROL_GROUP", "CONTROL_KINDS", "PERTURBATION_GROUP", "REG_ORDER", "ROBUSTNESS_LABELS", "SCORES",
    "budget_summary", "budget_table", "classifier_summary", "classifier_table", "controls_summary", "demo_summary",
    "dose_response", "figure1", "figure4", "figure5", "figure6", "figure7", "figure_controls",
    "figure_dose_response", "figure_neuron_controls", "format_classifiers", "holm", "neuron_controls_summary",
    "population_targets",
    "format_demo_summary", "gamma_table", "noise_correct_table", "noise_summary", "noise_table", "over_seeds",
    "perturbation_summary", "perturbation_table", "reg_sort", "robust_accuracy_table", "write_report",
    "earlier_report", "MANIFEST", "norm_label", "regularizer_color",
]


MANIFEST = ".neuralreg-report"        # in a report folder: the files the last report wrote, one a line
# the names a report gives its files (also those of reports written before the manifest existed)
REPORT_FILE = re.compile(r"^(classifiers|table1_gamma|fig[0-9]+_[a-z_]+|controls|population_targets|neuron_controls|"
                         r"dose_response|attack_queries|corruptions|autoattack)([_.-].*)?\.(png|csv)$")


def write_report(prefix: str, out_dir, say=None) -> list[Path]:
    """Write every figure and table the database can support into `out_dir`, with README.md (what each
    file is, and the data dictionary of every CSV column); return the paths. The report is written
    into a new folder beside `out_dir` first; only then are the files of an earlier report in
    `out_dir` (listed in its manifest, or named as a report names its files) removed and the new ones
    moved in, so the folder never holds files of two reports. say(message): told what was replaced.
    Other files in the folder are left alone."""
    from .. import pipeline
    modules = pipeline.activate(prefix)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.new-", dir=out.resolve().parent))
    try:
        written = _write_all(modules, staging)
        if written:
            written.append(write_readme(staging, written, prefix))
            (staging / MANIFEST).write_text("".join(f"{p.name}\n" for p in written))
        removed = earlier_report(out)
        for path in removed:
            path.unlink()
        for path in written + ([staging / MANIFEST] if written else []):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shown = [p.name for p in removed if p.name != MANIFEST]
    if shown and say is not None:
        say(f"replaced the earlier report in {out}: removed its {len(shown)} files "
            f"({', '.join(sorted(shown)[:6])}{', ...' if len(shown) > 6 else ''})")
    return [out / p.name for p in written]


def earlier_report(out: Path) -> list[Path]:
    """The files of an earlier report in `out`: those its manifest lists (and the manifest), and files
    named as a report names its files."""
    found = set()
    manifest = out / MANIFEST
    if manifest.is_file():
        found.add(manifest)
        for name in manifest.read_text().splitlines():
            if name and Path(name).name == name and (out / name).is_file():
                found.add(out / name)
    found |= {p for p in out.iterdir() if p.is_file() and REPORT_FILE.match(p.name)}
    return sorted(found)


def _write_all(modules, out: Path) -> list[Path]:
    written = []
    table = classifier_table(modules)
    if not table.empty:
        robust = robust_accuracy_table(modules)
        if not robust.empty:
            table = table.merge(robust, on=CLASSIFIER_KEY, how="left")
        aa = autoattack_table(modules)
        if not aa.empty:
            table = table.merge(aa, on=CLASSIFIER_KEY, how="left")
        written.append(write_csv(table, out / "classifiers.csv"))
    summary = autoattack_summary(modules)
    if not summary.empty:
        written.append(write_csv(summary, out / "autoattack.csv"))
    gamma = gamma_table(modules)
    if not gamma.empty:
        written.append(write_csv(gamma, out / "table1_gamma.csv"))
    for make in (figure1, figure4, figure_corruptions, figure5, figure7, attack_queries_csv, figure6, figure_controls,
                 figure_neuron_controls, figure_dose_response):
        written += make(modules, out)
    return written
