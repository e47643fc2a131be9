"""The report of the known answers from spikes (report.tables.neuron_controls_summary, holm,
population, dose_response; report.figures.figure_neuron_controls, figure_dose_response) on synthetic
query results: Holm's adjustment against a direct computation, the primary comparison, the figures'
labels and colours through matplotlib's objects."""
import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neuralreg_schema import report
from neuralreg_schema.report import figures, tables

matplotlib.use("Agg")
N_IMAGES = 30
REGS = (("none", "None"), ("neural-model", "Neural (model)"), ("neural-model", "Neural (model, low)"),
        ("neural-model", "Neural (model, high)"), ("shuffle", "Shuffle"), ("lowpass", "Lowpass"),
        ("highpass", "Highpass"))


def direct_holm(p):
    """Holm's step-down procedure written out: the i-th smallest of m p-values times (m - i + 1),
    made monotone, capped at 1."""
    p = [x for x in p]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03, 0.5], [0.2, 0.2, 0.001], [0.9], [0.04, 0.01, 0.02, 0.03, 0.049]])
def test_holm_against_a_direct_computation(p):
    assert np.allclose(tables.holm(p), direct_holm(p))


def test_holm_leaves_missing_p_values_out_of_the_family():
    out = tables.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], direct_holm([0.01, 0.02]))


def test_population_of_a_scan_group():
    assert [tables.population(g) for g in ("sim-demo-0", "sim-demo-0-low", "sim-demo-0-high", None, "lowland")] \
        == ["mouse", "low", "high", "mouse", "mouse"]


def _rows(effect=0.15):
    rng = np.random.default_rng(1)
    rows = []
    for (kind, label), seed, (sigma, base) in itertools.product(REGS, range(5), ((0.0, 0.8), (0.2, 0.4))):
        p = base + (effect if label in ("Neural (model, low)", "Lowpass") and sigma else 0) + 0.01 * seed
        correct = rng.random(N_IMAGES) < p
        rows.append({"dataset": "toy", "display_name": "toy (stand-in)", "config_name": "demo", "clf_hash": "h",
                     "noise_name": "wide", "kind": kind, "label": label, "seed": seed, "sigma": sigma,
                     "accuracy": correct.mean(), "correct": correct})
    return pd.DataFrame(rows)


def test_neuron_controls_summary_adjusts_per_noise_level_and_marks_the_primary_comparison():
    controls = report.controls_summary(table=_rows())
    summary = report.neuron_controls_summary(controls)
    assert len(summary) == len(controls)
    for sigma, level in summary.groupby("noise_sd"):
        family = level[level["kind"] != "none"]
        assert len(family) == 6 and level[level["kind"] == "none"]["p_holm"].isna().all()
        ok = family["p_seeds_paired_t"].notna()
        assert np.allclose(family["p_holm"][ok], direct_holm(family["p_seeds_paired_t"][ok].tolist()))
    primary = summary[summary["primary"]]
    assert list(primary["regularizer"]) == ["Neural (model, low)"] and list(primary["noise_sd"]) == [0.2]
    # the paired t-test it adjusts is scipy's on the per-seed accuracies
    rows = _rows()
    low = rows[(rows["label"] == "Neural (model, low)") & (rows["sigma"] == 0.2)].sort_values("seed")
    none = rows[(rows["label"] == "None") & (rows["sigma"] == 0.2)].sort_values("seed")
    assert primary["p_seeds_paired_t"].iloc[0] == pytest.approx(
        stats.ttest_rel(low["accuracy"].to_numpy(), none["accuracy"].to_numpy()).pvalue)


def test_no_neuron_controls_without_a_tuned_population():
    rows = _rows()
    plain = rows[~rows["label"].str.contains("low|high", regex=True)]
    assert report.neuron_controls_summary(report.controls_summary(table=plain)).empty
    assert report.neuron_controls_summary(pd.DataFrame()).empty


def test_neuron_controls_figure_labels_colours_and_primary(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "population_targets", lambda modules: pd.DataFrame())
    import matplotlib.pyplot as plt
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, stem, keys: saved.append(fig) or out / f"{stem}.png")
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    written = figures.figure_neuron_controls(None, tmp_path, table=_rows())
    assert [p.name for p in written] == ["neuron_controls.csv", "neuron_controls.png"]
    left, right = saved[0].axes
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert labels == [f"{label} (n=5 seeds)" for label in tables.reg_sort([r[1] for r in REGS])]
    colors = {c.get_label(): matplotlib.colors.to_hex(c.lines[0].get_color()) for c in left.containers}
    assert len(set(colors.values())) == len(REGS)        # one colour per regularizer
    for ax in (left, right):
        assert ax.get_xlabel() and ax.get_ylabel()
    assert sum("primary" in t.get_text() for t in right.get_legend().get_texts()) == 1     # one legend entry
    assert "Holm" in saved[0]._suptitle.get_text() and "h" not in saved[0]._suptitle.get_text().split()


def _noise_rows():
    rows = []
    for kind, label, alphas in (("none", "None", [0.0]), ("neural-model", "Neural (model)", [2.0, 5.0, 20.0]),
                                ("lowpass", "Lowpass", [2.0, 5.0, 20.0])):
        for alpha, seed, sigma in itertools.product(alphas, range(3), (0.0, 0.1, 0.2)):
            rows.append({"display_name": "toy", "config_name": "demo" if alpha in (0, 20) else f"demo-alpha{alpha:g}",
                         "noise_name": "wide", "kind": kind, "label": label, "cfg_alpha": 20.0 if kind == "none" else alpha,
                         "seed": seed, "sigma": sigma, "accuracy": 0.8 - sigma - 0.001 * alpha + 0.01 * seed,
                         "heldout_loss": np.nan if kind == "none" else 0.1 / (1 + alpha) + 0.001 * seed})
    return pd.DataFrame(rows)


def test_dose_response_against_a_direct_computation(tmp_path, monkeypatch):
    df = _noise_rows()
    monkeypatch.setattr(tables, "noise_table", lambda modules: df)
    out = tables.dose_response(None)
    assert set(out["regularizer"]) == {"Neural (model)", "Lowpass"}
    assert sorted(out["alpha"].unique()) == [0.0, 2.0, 5.0, 20.0]
    cell = out[(out["regularizer"] == "Lowpass") & (out["alpha"] == 5.0) & (out["noise_sd"] == 0.2)].iloc[0]
    direct = df[(df["kind"] == "lowpass") & (df["cfg_alpha"] == 5.0) & (df["sigma"] == 0.2)]
    assert cell["accuracy_mean"] == pytest.approx(direct["accuracy"].mean())
    assert cell["accuracy_sem"] == pytest.approx(direct["accuracy"].std(ddof=1) / np.sqrt(3))
    assert cell["heldout_loss_mean"] == pytest.approx(direct["heldout_loss"].mean())
    extra = df[(df["kind"] == "none") & (df["seed"] == 0)].assign(seed=7)      # a seed only None has
    monkeypatch.setattr(tables, "noise_table", lambda modules: pd.concat([df, extra]))
    out = tables.dose_response(None)
    assert (out["seeds"] == 3).all()
    zero = out[(out["regularizer"] == "Lowpass") & (out["alpha"] == 0.0) & (out["noise_sd"] == 0.0)].iloc[0]
    assert np.isnan(zero["heldout_loss_mean"]) and zero["seeds"] == 3          # alpha 0 is None
    written = figures.figure_dose_response(None, tmp_path)
    assert [p.name for p in written] == ["dose_response.csv", "dose_response_toy-demo-wide.png"]
