"""The report's summaries and figures (neuralreg_schema/report) on synthetic query results (no database): Fig. 4 means and SEMs
over seeds, the alpha sweep of supplement Fig. 6 (alpha 0 = None), infinite medians in Fig. 5."""
import numpy as np
import pandas as pd
import pytest

from neuralreg_schema import report


def _noise_rows():
    rows = []
    for kind, label, alpha in (("none", "None", 20.0), ("neural-model", "Neural (model)", 2.0),
                               ("neural-model", "Neural (model)", 16.0)):
        for seed in (0, 1, 2):
            for sigma, acc in ((0.0, 0.9), (0.1, 0.3 + 0.01 * alpha + 0.01 * seed)):
                rows.append({"display_name": "toy data", "config_name": f"cfg-{alpha:g}", "arch": "resnet18",
                             "noise_name": "default", "kind": kind, "label": label, "cfg_alpha": alpha,
                             "seed": seed, "sigma": sigma, "accuracy": acc})
    return pd.DataFrame(rows)


def test_noise_summary_and_alpha_sweep(monkeypatch, tmp_path):
    monkeypatch.setattr(report.tables, "noise_table", lambda modules: _noise_rows())
    summary = report.noise_summary(None)
    row = summary[(summary["label"] == "None") & (summary["sigma"] == 0.1)].iloc[0]
    expected = [0.3 + 0.2 + 0.01 * s for s in (0, 1, 2)]
    assert row["mean_accuracy"] == pytest.approx(np.mean(expected)) and row["seeds"] == 3
    assert row["sem_accuracy"] == pytest.approx(np.std(expected, ddof=1) / np.sqrt(3))
    written = report.figure4(None, tmp_path) + report.figure6(None, tmp_path)
    names = {p.name for p in written}
    assert "fig4_noise.csv" in names and "fig6_alpha.csv" in names
    assert sum(n.endswith(".png") for n in names) == 4        # 3 configs for Fig. 4, one sweep panel
    sweep = pd.read_csv(tmp_path / "fig6_alpha.csv")
    assert sorted(sweep["alpha"].unique()) == [0.0, 2.0, 16.0]   # 'none' is alpha 0


def test_no_alpha_sweep_without_two_alphas(monkeypatch, tmp_path):
    rows = _noise_rows()
    monkeypatch.setattr(report.tables, "noise_table", lambda modules: rows[rows["cfg_alpha"] != 2.0])
    assert report.figure6(None, tmp_path) == []


def test_minimal_perturbation_figure_keeps_infinite_medians(monkeypatch, tmp_path):
    rows = [{"display_name": "toy data", "config_name": "demo", "suite": "demo", "label": label, "norm": norm,
             "seed": seed, "median": med, "mean": med * 1.5, "median_correct": med, "mean_correct": med * 2,
             "sem": 0.01}
            for label, med in (("None", 0.5), ("Neural (model)", np.inf)) for norm in ("l2", "linf") for seed in (0, 1)]
    monkeypatch.setattr(report.tables, "perturbation_table", lambda modules: pd.DataFrame(rows))
    summary = report.perturbation_summary(None)
    assert np.isinf(summary[summary["label"] == "Neural (model)"]["mean_median"]).all()
    none = summary[summary["label"] == "None"].iloc[0]
    assert none["mean_mean"] == pytest.approx(0.75) and none["mean_mean_correct"] == pytest.approx(1.0)
    assert none["sem_samples"] == pytest.approx(0.01) and none["seeds"] == 2
    written = report.figure7(None, tmp_path)
    assert {p.name for p in written} >= {"fig7_mean_perturbation.csv"} and len(written) == 2


def test_fig5_curves_over_the_query_budget(monkeypatch, tmp_path):
    """Per budget the mean over seeds of the per-model median; an infinite median at a small budget
    (no adversarial within it) stays infinite in the CSV."""
    rows = [{"display_name": "toy data", "config_name": "demo", "suite": "tiny", "label": label, "norm": norm,
             "seed": seed, "budget": budget, "median": (np.inf if budget == 1 else base / budget + 0.01 * seed),
             "mean": base, "median_correct": base, "mean_correct": base, "success_rate": 1.0}
            for label, base in (("None", 1.0), ("Neural (model)", 2.0)) for norm in ("l2", "linf")
            for seed in (0, 1) for budget in (1, 10, 100)]
    monkeypatch.setattr(report.tables, "budget_table", lambda modules: pd.DataFrame(rows))
    summary = report.budget_summary(None)
    row = summary[(summary["label"] == "None") & (summary["norm"] == "l2") & (summary["budget"] == 10)].iloc[0]
    assert row["mean_median"] == pytest.approx(np.mean([0.1, 0.11])) and row["seeds"] == 2
    assert row["sem_median"] == pytest.approx(np.std([0.1, 0.11], ddof=1) / np.sqrt(2))
    assert np.isinf(summary[summary["budget"] == 1]["mean_median"]).all()
    written = report.figure5(None, tmp_path)
    assert [p.name for p in written][0] == "fig5_minimal_perturbation.csv" and len(written) == 2
    csv = pd.read_csv(tmp_path / "fig5_minimal_perturbation.csv", keep_default_na=False)
    assert sorted(csv["budget"].unique()) == [1, 10, 100]


def test_fig7_shows_the_fooled_fraction_and_mean_where_a_sample_was_never_fooled(monkeypatch, tmp_path):
    """A never-fooled sample makes the mean infinite (e.g. JSMA at the paper's 14.5 % cap): the CSV keeps
    the infinite mean and gives the fooled fraction and the mean over the fooled samples, which the
    figure draws (hatched) instead of an empty bar."""
    rows = [{"display_name": "toy data", "config_name": "demo", "suite": "paper", "label": label, "norm": "l0",
             "seed": seed, "median": 3.0, "mean": mean, "median_correct": 3.0, "mean_correct": mean, "sem": 0.1,
             "success_rate": rate, "mean_success": 4.0 + seed}
            for label, mean, rate in (("None", 4.0, 1.0), ("Neural (model)", np.inf, 0.92)) for seed in (0, 1)]
    monkeypatch.setattr(report.tables, "perturbation_table", lambda modules: pd.DataFrame(rows))
    written = report.figure7(None, tmp_path)
    assert len(written) == 2
    csv = pd.read_csv(tmp_path / "fig7_mean_perturbation.csv", keep_default_na=False).set_index("regularizer")
    assert np.isinf(float(csv.loc["Neural (model)", "mean_distance_mean"]))
    assert float(csv.loc["Neural (model)", "fooled_fraction_mean"]) == pytest.approx(0.92)
    assert float(csv.loc["Neural (model)", "mean_distance_fooled_mean"]) == pytest.approx(4.5)


def test_fig5_against_measured_queries(monkeypatch, tmp_path):
    """Fig. 5's x is the suite's measured queries per sample at each budget (mean over seeds)."""
    rows = [{"display_name": "toy data", "config_name": "demo", "suite": "tiny", "label": "None", "norm": "l2",
             "seed": seed, "budget": budget, "median": 1.0 / budget, "mean": 1.0, "median_correct": 1.0,
             "mean_correct": 1.0, "success_rate": 1.0, "dataset": "toy", "clf_hash": "c", "reg_hash": "r"}
            for seed in (0, 1) for budget in (1, 10)]
    queries = pd.DataFrame([{"dataset": "toy", "clf_hash": "c", "reg_hash": "r", "seed": seed, "suite": "tiny",
                             "budget": budget, "queries": 30.0 * budget + seed} for seed in (0, 1) for budget in (1, 10)])
    monkeypatch.setattr(report.tables, "budget_table", lambda modules: pd.DataFrame(rows))
    monkeypatch.setattr(report.tables, "budget_query_table", lambda modules: queries)
    summary = report.budget_summary(None)
    assert summary.set_index("budget").loc[10, "mean_queries"] == pytest.approx(300.5)
    assert len(report.figure5(None, tmp_path, summary)) == 2
    csv = pd.read_csv(tmp_path / "fig5_minimal_perturbation.csv")
    assert sorted(csv["queries_mean"]) == [30.5, 300.5]


def test_corruption_summary_means_over_corruptions_then_seeds(monkeypatch, tmp_path):
    rows = [{"display_name": "toy data", "config_name": "demo", "corruption_set": "toy-c", "is_published": False,
             "label": "None", "seed": seed, "corruption": c, "severity": sev,
             "accuracy": 0.9 - 0.1 * sev - (0.05 if c == "contrast" else 0) + 0.01 * seed}
            for seed in (0, 1) for c in ("contrast", "pixelate") for sev in range(6)]
    monkeypatch.setattr(report.tables, "corruption_table", lambda modules: pd.DataFrame(rows))
    summary = report.tables.corruption_summary(None)
    mean = summary[(summary["corruption"] == "mean") & (summary["severity"] == 3)].iloc[0]
    assert mean["mean_accuracy"] == pytest.approx(0.9 - 0.3 - 0.025 + 0.005) and mean["seeds"] == 2
    assert mean["sem_accuracy"] == pytest.approx(0.005)
    written = report.figures.figure_corruptions(None, tmp_path)
    assert [p.name for p in written][0] == "corruptions.csv" and len(written) == 2
