"""controls.csv and the controls figure (report.controls_summary / figure_controls) on synthetic query
results: means, SEMs and the paired comparisons with None against a direct computation."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neuralreg_schema import report

N_IMAGES = 40


def _correct(rng, p):
    return rng.random(N_IMAGES) < p


def _rows(kinds=(("none", "None"), ("lowpass", "Lowpass"), ("highpass", "Highpass"))):
    rng = np.random.default_rng(0)
    rows = []
    for kind, label in kinds:
        for seed in range(4):
            for sigma, p in ((0.0, 0.9), (0.2, {"none": 0.5, "lowpass": 0.7, "highpass": 0.4}.get(kind, 0.5) + 0.02 * seed)):
                correct = _correct(rng, p)
                rows.append({"dataset": "toy", "display_name": "toy (stand-in)", "config_name": "demo",
                             "clf_hash": "h", "noise_name": "wide", "kind": kind, "label": label, "seed": seed,
                             "sigma": sigma, "accuracy": correct.mean(), "correct": correct})
    return pd.DataFrame(rows)


def test_paired_comparison_against_a_direct_computation():
    table = _rows()
    summary = report.controls_summary(table=table)
    assert list(summary["regularizer"].unique()) == ["None", "Lowpass", "Highpass"]
    row = summary[(summary["regularizer"] == "Lowpass") & (summary["noise_sd"] == 0.2)].iloc[0]
    low = table[(table["kind"] == "lowpass") & (table["sigma"] == 0.2)].sort_values("seed")
    none = table[(table["kind"] == "none") & (table["sigma"] == 0.2)].sort_values("seed")
    diff = low["accuracy"].to_numpy() - none["accuracy"].to_numpy()
    assert row["seeds"] == 4 and row["paired_seeds"] == 4 and row["n_images"] == N_IMAGES
    assert row["accuracy_mean"] == pytest.approx(low["accuracy"].mean())
    assert row["accuracy_sem"] == pytest.approx(low["accuracy"].std(ddof=1) / 2)
    assert row["diff_vs_none_mean"] == pytest.approx(diff.mean())
    assert row["diff_vs_none_sem"] == pytest.approx(diff.std(ddof=1) / 2)
    assert row["p_seeds_paired_t"] == pytest.approx(stats.ttest_rel(low["accuracy"], none["accuracy"]).pvalue)
    per_image = np.mean([a.astype(float) - b.astype(float) for a, b in zip(low["correct"], none["correct"])], axis=0)
    assert row["diff_images_mean"] == pytest.approx(per_image.mean())
    assert row["p_images_wilcoxon"] == pytest.approx(stats.wilcoxon(per_image[per_image != 0]).pvalue)
    none_row = summary[(summary["regularizer"] == "None") & (summary["noise_sd"] == 0.2)].iloc[0]
    assert none_row["diff_vs_none_mean"] == 0 and np.isnan(none_row["p_seeds_paired_t"])


def test_unpaired_seeds_are_left_out_of_the_comparison():
    table = _rows()
    table = table[~((table["kind"] == "none") & (table["seed"] == 3))]
    row = report.controls_summary(table=table).query("regularizer == 'Lowpass' and noise_sd == 0.2").iloc[0]
    assert row["seeds"] == 4 and row["paired_seeds"] == 3


def test_no_controls_without_a_pixel_control_or_none(tmp_path):
    assert report.controls_summary(table=_rows((("none", "None"), ("shuffle", "Shuffle")))).empty
    assert report.controls_summary(table=_rows((("lowpass", "Lowpass"),))).empty
    assert report.figure_controls(None, tmp_path, table=_rows((("none", "None"),))) == []


def test_controls_figure_and_csv(tmp_path):
    written = report.figure_controls(None, tmp_path, table=_rows())
    names = sorted(p.name for p in written)
    assert names == ["controls.csv", "controls_toy-stand-in-demo-wide.png"]
    csv = pd.read_csv(tmp_path / "controls.csv", keep_default_na=False)
    assert {"regularizer", "seeds", "noise_sd", "accuracy_mean", "accuracy_sem", "diff_vs_none_mean",
            "diff_vs_none_sem", "p_seeds_paired_t", "p_images_wilcoxon"} <= set(csv.columns)
    assert "None" in set(csv["regularizer"]) and csv["display_name"].str.contains("stand-in").all()
