"""The report's figures as a lab meeting reads them (issue 26), checked through matplotlib's objects on
synthetic query results (no database; tests/integration/test_figures.py checks the same on a tiny
study): one colour per regularizer in every figure (report.regularizer_color), every axis labelled,
n in every legend or title, a legend entry for every line style, Fig. 5 with one shared legend,
'L∞' and no per-panel noise."""
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from neuralreg_schema import report
from neuralreg_schema.report import figures


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report saves, by file stem (they stay inspectable after being closed)."""
    seen = {}
    real = figures._save

    def spy(fig, out, stem, keys, rect=None):
        seen.setdefault(stem, []).append(fig)
        return real(fig, out, stem, keys, rect=rect)
    monkeypatch.setattr(figures, "_save", spy)
    return seen


def panels(fig):
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def legend_entries(fig) -> dict:
    """text -> handle of every legend entry of the figure (its axes' legends and its own)."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return {t.get_text(): h for leg in legends for t, h in zip(leg.get_texts(), leg.legend_handles)}


def handle_color(handle) -> str:
    color = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
    return to_hex(color)


def check_regularizer_colors(fig):
    """Every legend entry that names a regularizer has that regularizer's colour; returns the names."""
    named = {}
    for text, handle in legend_entries(fig).items():
        label = re.sub(r" \(n=.*\)$", "", text)
        if label in report.REG_ORDER:
            assert handle_color(handle) == to_hex(report.regularizer_color(label)), (text, handle_color(handle))
            named[label] = handle_color(handle)
    return named


def check_labelled(fig):
    for ax in panels(fig):
        assert ax.get_xlabel() and ax.get_ylabel(), (fig.get_suptitle(), ax.get_title())
    titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
    assert not [t for t in titles if re.search(r"\b[0-9a-f]{8,}\b", t)], titles       # no content hashes
    texts = list(legend_entries(fig)) + titles
    assert any(re.search(r"\bn ?= ?\d", t) for t in texts), texts


def test_regularizer_color_is_one_per_regularizer_and_stable():
    colors = [report.regularizer_color(label) for label in report.REG_ORDER]
    assert len(set(colors)) == len(colors)
    assert report.regularizer_color("Lowpass") == report.regularizer_color("Lowpass")
    assert report.regularizer_color("my new target") == report.regularizer_color("my new target")
    assert report.regularizer_color("my new target") not in colors
    assert report.norm_label("linf") == "L\u221e" and report.norm_label("l2") == "L2"


def _noise_rows(labels):
    rows = []
    for kind, label in labels:
        for seed in range(3):
            for sigma, acc in ((0.0, 0.8), (0.2, 0.4 + 0.05 * len(label) % 0.3 + 0.01 * seed)):
                rows.append({"dataset": "toy", "display_name": "toy (stand-in)", "config_name": "demo", "arch": "resnet18",
                             "clf_hash": "h", "noise_name": "wide", "kind": kind, "label": label, "cfg_alpha": 1.0,
                             "seed": seed, "sigma": sigma, "accuracy": acc,
                             "correct": np.arange(20) < int(20 * acc)})
    return pd.DataFrame(rows)


LABELS = (("none", "None"), ("neural-model", "Neural (model)"), ("shuffle", "Shuffle"), ("lowpass", "Lowpass"),
          ("highpass", "Highpass"))


def test_a_regularizer_has_one_colour_in_fig4_and_the_controls(monkeypatch, tmp_path, drawn):
    rows = _noise_rows(LABELS)
    monkeypatch.setattr(report.tables, "noise_table", lambda modules: rows)
    report.figure4(None, tmp_path)
    report.figure_controls(None, tmp_path, table=rows)
    (fig4,), (controls,) = drawn["fig4_noise"], drawn["controls"]
    for fig in (fig4, controls):
        check_labelled(fig)
    assert check_regularizer_colors(fig4) == {k: v for k, v in check_regularizer_colors(controls).items()
                                              if k in check_regularizer_colors(fig4)}
    assert set(check_regularizer_colors(fig4)) == {label for _, label in LABELS}
    # the filled and open markers of the paired differences have legend entries
    assert any(t.startswith("filled:") for t in legend_entries(controls))
    assert any(t.startswith("open:") for t in legend_entries(controls))


def _budget_rows():
    rows = []
    for label, scale in (("None", 1.0), ("Neural (model)", 1.5), ("Shuffle", 0.8)):
        for norm, unit in (("l0", 40.0), ("l2", 0.5), ("linf", 0.01)):
            for budget in (1, 2, 10, 100):
                for seed in (0, 1):
                    median = np.inf if budget < 3 and norm != "l0" else unit * scale / np.log2(budget + 1) * (1 + seed)
                    rows.append({"display_name": "toy (stand-in)", "config_name": "demo", "suite": "demo",
                                 "label": label, "norm": norm, "budget": budget, "seed": seed, "median": median,
                                 "mean": median * 1.2, "median_correct": median * 1.1, "mean_correct": median * 1.3,
                                 "sem": 0.01})
    return pd.DataFrame(rows)


def test_fig5_reads_at_a_glance(monkeypatch, tmp_path, drawn):
    rows = _budget_rows()
    monkeypatch.setattr(report.tables, "budget_table", lambda modules: rows)
    report.figure5(None, tmp_path)
    (fig,) = drawn["fig5_minimal_perturbation"]
    check_labelled(fig)
    assert len(fig.legends) == 1 and not [ax for ax in fig.axes if ax.get_legend()]     # one shared legend
    entries = legend_entries(fig)
    assert set(check_regularizer_colors(fig)) == {"None", "Neural (model)", "Shuffle"}
    assert any(h.get_linestyle() == "--" for h in entries.values())                     # the dashed means
    assert any("infinite median" in t for t in entries)                                 # the blank budgets
    titles = [ax.get_title() for ax in panels(fig)]
    assert titles == ["L0", "L2", "L\u221e"]
    text = " ".join(titles + [fig.get_suptitle()] + [t.get_text() for ax in fig.axes for t in ax.texts])
    assert "LINF" not in text and "missing points" not in text
    for ax in panels(fig):                       # error bars stay inside the panel: no bar below 0
        assert ax.get_ylim()[0] == 0


def test_fig7_names_n_and_labels_its_axes(monkeypatch, tmp_path, drawn):
    rows = [{"display_name": "toy (stand-in)", "config_name": "demo", "suite": "demo", "label": label, "norm": norm,
             "seed": seed, "median": 0.3, "mean": 0.4 + seed, "median_correct": 0.4, "mean_correct": 0.5, "sem": 0.01}
            for label in ("None", "Neural (model)") for norm in ("l2", "linf") for seed in (0, 1)]
    monkeypatch.setattr(report.tables, "perturbation_table", lambda modules: pd.DataFrame(rows))
    report.figure7(None, tmp_path)
    (fig,) = drawn["fig7_mean_perturbation"]
    check_labelled(fig)
    assert set(check_regularizer_colors(fig)) == {"None", "Neural (model)"}
    for ax in panels(fig):
        bars = [to_hex(p.get_facecolor()) for p in ax.patches]
        assert bars == [to_hex(report.regularizer_color(lab)) for lab in ("None", "Neural (model)")]
    assert [ax.get_title() for ax in panels(fig)] == ["L2", "L\u221e"]
