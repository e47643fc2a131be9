"""The report folder (issue 26): `write_report` never leaves files of an earlier report beside the new
ones and says what it replaced, leaves other files alone and keeps the earlier report when it fails;
README.md describes every column of every CSV; one column vocabulary across the CSVs; floats
rounded; no file name over 70 characters. On synthetic query results, no database."""
import itertools
import re

import numpy as np
import pandas as pd
import pytest

from neuralreg_schema import pipeline, report
from neuralreg_schema.report import columns, figures, tables

LONG_NAME = "offline-photos (stand-in: patches of photos that ship with scikit-image, not CIFAR)"


@pytest.fixture
def no_database(monkeypatch):
    monkeypatch.setattr(pipeline, "activate", lambda prefix, **kw: {})


def _writer(names):
    def write_all(modules, out):
        return [columns.write_csv(pd.DataFrame({"seed": [0], "test_accuracy": [0.5]}), out / n) for n in names]
    return write_all


def test_a_report_replaces_the_earlier_one_and_says_so(monkeypatch, tmp_path, no_database):
    out = tmp_path / "report"
    out.mkdir()
    for stale in ("fig1_similarity_sim-tiny-0.png", "controls.csv", "fig4_noise_old-data-demo-wide.png"):
        (out / stale).write_text("an earlier report's file (before manifests)")
    (out / "notes.txt").write_text("mine")
    said = []
    monkeypatch.setattr(report, "_write_all", _writer(["classifiers.csv", "fig4_noise.csv"]))
    written = report.write_report("neuralreg_x", out, say=said.append)
    assert sorted(p.name for p in written) == ["README.md", "classifiers.csv", "fig4_noise.csv"]
    assert {p.name for p in out.iterdir()} == {"README.md", "classifiers.csv", "fig4_noise.csv", "notes.txt",
                                               report.MANIFEST}
    assert len(said) == 1 and "removed its 3 files" in said[0] and "controls.csv" in said[0], said
    # the next report, with fewer files: the earlier ones go (named by the manifest), the user's stay
    monkeypatch.setattr(report, "_write_all", _writer(["table1_gamma.csv"]))
    said.clear()
    report.write_report("neuralreg_x", out, say=said.append)
    assert {p.name for p in out.iterdir()} == {"README.md", "table1_gamma.csv", "notes.txt", report.MANIFEST}
    assert "removed its 3 files" in said[0] and "README.md" in said[0], said
    # a report that fails keeps the earlier one as it was, and leaves no staging folder behind
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(modules, out_):
        columns.write_csv(pd.DataFrame({"seed": [1]}), out_ / "classifiers.csv")
        raise RuntimeError("query failed")

    monkeypatch.setattr(report, "_write_all", broken)
    with pytest.raises(RuntimeError, match="query failed"):
        report.write_report("neuralreg_x", out, say=said.append)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def _classifiers():
    rows = []
    for (kind, label), seed in itertools.product((("none", "None"), ("neural-model", "Neural (model)"),
                                                  ("lowpass", "Lowpass")), range(2)):
        rows.append({"dataset": "offline-photos", "display_name": LONG_NAME, "is_stand_in": True,
                     "config_name": "demo", "arch": "resnet18", "cfg_alpha": 10.0, "alpha": 0.0 if kind == "none" else 10.0,
                     "kind": kind, "label": label, "scan_group": None if kind == "none" else "sim-demo-0", "seed": seed,
                     "test_accuracy": 0.61234567 + 0.01 * seed, "train_accuracy": 0.7, "initial_heldout_loss": 0.3,
                     "heldout_loss": 0.123456789, "epochs_run": 3, "resumed_from_epoch": 0, "pairs_per_step": 0,
                     "train_seconds": 12.3456, "device": "cpu", "code_version": "0.1", "clf_hash": "c" * 32,
                     "reg_hash": f"{kind:x<32}"[:32]})
    return pd.DataFrame(rows)


def _noise_correct():
    rng = np.random.default_rng(1)
    rows = []
    for _, r in _classifiers().iterrows():
        for sigma in (0.0, 0.1, 0.2):
            correct = rng.random(30) < 0.8 - sigma
            rows.append({**r.to_dict(), "noise_name": "wide", "sigma": sigma, "accuracy": correct.mean(),
                         "correct": correct})
    return pd.DataFrame(rows)


def _perturbations(budgets=None):
    rows = []
    for _, r in _classifiers().iterrows():
        for norm, budget in itertools.product(("l2", "linf"), budgets or [None]):
            base = 0.123456789 * (1 + r["seed"])
            row = {**r.to_dict(), "suite": "demo", "norm": norm, "median": base, "mean": base * 1.5,
                   "median_correct": base, "mean_correct": base * 2, "sem": 0.0123456, "success_rate": 1.0,
                   "mean_success": base * 1.5}
            if budget is not None:
                row["budget"] = budget
            rows.append(row)
    return pd.DataFrame(rows)


def test_every_csv_column_is_described_named_alike_and_rounded(monkeypatch, tmp_path, no_database):
    noise = _noise_correct()
    monkeypatch.setattr(report, "classifier_table", lambda modules: _classifiers())
    monkeypatch.setattr(report, "robust_accuracy_table", lambda modules: _classifiers()[tables.CLASSIFIER_KEY].assign(
        attacked_clean_acc_demo=0.9, robust_acc_linf_8_255_demo=0.1234567, **{"robust_acc_l2_0.5_demo": 0.2}))
    monkeypatch.setattr(report, "gamma_table", lambda modules: pd.DataFrame(
        {"label": ["Neural (model)"], "alpha": [10.0], "gamma_1": [0.2123456], "gamma_9": [0.7876544]}))
    monkeypatch.setattr(report, "figure1", lambda modules, out: [])
    monkeypatch.setattr(tables, "noise_table", lambda modules: noise.drop(columns="correct"))
    monkeypatch.setattr(tables, "noise_correct_table", lambda modules: noise)
    monkeypatch.setattr(tables, "perturbation_table", lambda modules: _perturbations())
    monkeypatch.setattr(tables, "budget_table", lambda modules: _perturbations([1, 10]))
    monkeypatch.setattr(tables, "budget_query_table", lambda modules: _perturbations([1, 10])[
        tables.CLASSIFIER_KEY + ["suite", "budget"]].drop_duplicates().assign(queries=lambda d: 12.3456789 * d["budget"]))
    monkeypatch.setattr(tables, "attack_queries", lambda modules: _classifiers().assign(
        suite="demo", attack="ddn-l2", runs=1, forward_per_sample=11.123456, gradient_per_sample=10.0,
        queries_per_sample=21.123456))
    monkeypatch.setattr(tables, "corruption_table", lambda modules: pd.concat(
        [_classifiers().assign(corruption_set="offline-photos-local-c", is_published=False, corruption=c, severity=s,
                               accuracy=0.7123456 - 0.1 * s) for c in ("contrast", "pixelate") for s in range(6)]))
    monkeypatch.setattr(tables, "population_targets", lambda modules: pd.DataFrame(
        [{"scan_group": "sim-demo-0", "population": "mouse", "matrix": "model/stimulus", "n_scans": 4,
          "n_images": 100, "r_lowpass": 0.123456, "r_highpass": 0.3}]))
    written = report.write_report("neuralreg_x", tmp_path / "r")
    names = {p.name for p in written}
    assert {"classifiers.csv", "table1_gamma.csv", "fig4_noise.csv", "fig5_minimal_perturbation.csv",
            "fig7_mean_perturbation.csv", "controls.csv", "population_targets.csv", "README.md",
            "corruptions.csv", "attack_queries.csv"} <= names, names
    assert all(len(n) <= figures.MAX_NAME for n in names), [n for n in names if len(n) > figures.MAX_NAME]
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "(not described)" not in readme
    assert "keep_default_na=False" in readme        # pandas reads the label None as missing otherwise
    frames = {p.name: pd.read_csv(p, keep_default_na=False) for p in written if p.suffix == ".csv"}
    for name, df in frames.items():
        assert f"### {name}" in readme and f"`{name}`:" in readme, name
        for column in df.columns:
            assert f"| `{column}` |" in readme, (name, column)
            # one vocabulary: the queries' own names never reach a CSV
            assert column not in columns.RENAME and not re.match(r"^(mean|sem)_(mean|median|accuracy|samples)", column), (name, column)
            values = pd.to_numeric(df[column], errors="coerce")
            if df[column].dtype == float or (values.notna().all() and (values % 1 != 0).any()):
                finite = values[np.isfinite(values)]
                digits = columns.SIGNIFICANT_P if column.startswith("p_") else columns.SIGNIFICANT
                assert all(float(f"{v:.{digits}g}") == v for v in finite), (name, column, finite.tolist())
    for name in ("classifiers.csv", "fig4_noise.csv", "fig5_minimal_perturbation.csv", "controls.csv",
                 "table1_gamma.csv"):
        assert "regularizer" in frames[name].columns, name
    for name in ("fig4_noise.csv", "controls.csv"):
        assert {"noise_sd", "accuracy_mean", "accuracy_sem"} <= set(frames[name].columns), name
    assert frames["classifiers.csv"]["test_accuracy"].iloc[0] == 0.6123


def test_describe_knows_the_dynamic_columns():
    assert "RobustBench's linf budget (8_255)" in columns.describe("robust_accuracy_linf_8_255_demo")
    assert "suite paper" in columns.describe("attacked_clean_accuracy_paper")
    assert "conv layer 17" in columns.describe("gamma_17")
    assert columns.describe("no_such_column") is None


def test_long_file_names_are_cut_and_stay_apart():
    a = figures.file_name("fig5_minimal_perturbation", [LONG_NAME, "demo-alpha10", "paper"])
    b = figures.file_name("fig5_minimal_perturbation", [LONG_NAME, "demo-alpha20", "paper"])
    assert len(a) <= 70 and len(b) <= 70 and a != b and a.startswith("fig5_minimal_perturbation_offline-photos")
    assert figures.file_name("fig4_noise", ["toy", "demo", "wide"]) == "fig4_noise_toy-demo-wide.png"
