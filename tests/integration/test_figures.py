"""The report's figures on a tiny demo study (issue 26), read back through matplotlib's objects: every
axis labelled, n in a legend or title, no content hash in a title, one colour per regularizer
(report.regularizer_color) in every figure, Fig. 1's panels A and B on one colour scale and its title
saying the data are simulated, Fig. 5 with one shared legend that explains its dashed lines and 'L∞'.
The report is written in a subprocess (a process binds one schema prefix), which describes every
figure it saved as JSON."""
import json
import re

import pytest

from tests.helpers import run_python

SCRIPT = r"""
import json, sys
from matplotlib.colors import to_hex
from neuralreg_schema import report
from neuralreg_schema.report import figures

described = []
real = figures._save

def color(handle):
    c = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
    return to_hex(c)

def spy(fig, out, stem, keys, rect=None):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    described.append({
        "stem": stem, "suptitle": fig.get_suptitle(), "figure_legends": len(fig.legends),
        "legend": [[t.get_text(), color(h), getattr(h, "get_linestyle", lambda: None)()]
                   for leg in legends for t, h in zip(leg.get_texts(), leg.legend_handles)],
        "axes": [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                  "colorbar": hasattr(ax, "_colorbar"), "clims": [list(im.get_clim()) for im in ax.images],
                  "texts": [t.get_text() for t in ax.texts]} for ax in fig.axes]})
    return real(fig, out, stem, keys, rect=rect)

figures._save = spy
report.write_report(sys.argv[1], sys.argv[2])
print("FIGURES " + json.dumps(described))
"""


@pytest.fixture(scope="module")
def described(tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    run = run_python(["-c", SCRIPT, tiny_demo, str(out)], env=None, timeout=600)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("FIGURES "))
    return json.loads(line[len("FIGURES "):])


def by_stem(described, stem):
    found = [f for f in described if f["stem"] == stem]
    assert found, (stem, sorted({f["stem"] for f in described}))
    return found


@pytest.mark.slow       # the tiny demo the fixture runs: about a minute
def test_every_figure_is_labelled_names_n_and_shows_no_hash(described):
    from neuralreg_schema import report
    assert {"fig1_similarity", "fig4_noise", "fig7_mean_perturbation"} <= {f["stem"] for f in described}
    colors = {}
    for fig in described:
        panels = [ax for ax in fig["axes"] if not ax["colorbar"]]
        for ax in panels:
            assert ax["xlabel"] and ax["ylabel"], (fig["stem"], ax["title"])
        titles = [fig["suptitle"]] + [ax["title"] for ax in fig["axes"]]
        assert not [t for t in titles if re.search(r"\b[0-9a-f]{8,}\b", t)], titles
        texts = titles + [text for text, _, _ in fig["legend"]]
        assert any(re.search(r"\bn ?= ?\d", t) for t in texts), (fig["stem"], texts)
        for text, color, _ in fig["legend"]:
            label = re.sub(r" \(n=.*\)$", "", text)
            if label in report.REG_ORDER:
                assert color == report.regularizer_color(label), (fig["stem"], text, color)
                colors.setdefault(label, set()).add(color)
    assert colors and all(len(c) == 1 for c in colors.values()), colors      # one colour per regularizer


@pytest.mark.slow
def test_fig1_shares_its_colour_scale_and_says_simulated(described):
    for fig in by_stem(described, "fig1_similarity"):
        a, b = fig["axes"][0], fig["axes"][1]
        assert a["clims"] and a["clims"] == b["clims"]
        assert "simulated" in fig["suptitle"]
        assert fig["axes"][2]["ylabel"] == "density"


@pytest.mark.slow
def test_fig5_has_one_legend_with_its_line_styles(described):
    figs = [f for f in described if f["stem"] == "fig5_minimal_perturbation"]
    if not figs:
        pytest.skip("the tiny attack suite recorded no query budgets")
    for fig in figs:
        assert fig["figure_legends"] == 1 and len(fig["legend"]) >= 3
        assert any(style == "--" for _, _, style in fig["legend"])
        titles = [ax["title"] for ax in fig["axes"]]
        assert "LINF" not in " ".join(titles) and all(t.startswith("L") for t in titles)
        assert not [t for ax in fig["axes"] for t in ax["texts"] + [ax["title"]] if "missing" in t]
