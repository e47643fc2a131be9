"""notebooks/queries.ipynb: the committed notebook carries the outputs of every code cell (from the demo
profile: tests/unit/test_demo_numbers.py checks its result table against the README and docs/demo.md),
and it runs top to bottom in a Jupyter kernel (nbclient) against a fresh tiny demo study (the `tiny_demo`
fixture of conftest.py), its outputs holding what each section promises: the demo's result table, the
named queries, one noise curve per noise set and regularizer, the pipeline's diagram,
the restricted and aggregated tables, the gamma weights and epoch curves as figures, and a stored
network's prediction on a test image."""
import json
import os
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "queries.ipynb"
SECTIONS = ("The demo's result table", "Named queries", "The pipeline", "restriction by key and by condition",
            "Aggregation", "Epoch curves", "A trained network")


def text_of(output) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    return "".join(output.get("data", {}).get("text/plain", "")) + output.get("evalue", "")


def cell_after(nb, heading: str):
    """The first code cell after the markdown cell that contains `heading`."""
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and heading in cell.source:
            return next(c for c in cells[i + 1:] if c.cell_type == "code")
    raise AssertionError(f"the notebook has no section {heading!r}")


def check_outputs(nb, *, classes_trained: int):
    """Every code cell ran without error and the sections show real content."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    for c in code:
        assert c.outputs, f"code cell without outputs:\n{c.source[:200]}"
        assert not [o for o in c.outputs if o["output_type"] == "error"], c.source[:200]
        assert c.execution_count is not None
    result = "".join(text_of(o) for o in cell_after(nb, "The demo's result table").outputs)
    assert "r(S_model, S_oracle)" in result and "clean accuracy" in result and "None (" in result
    tidy = "".join(text_of(o) for o in cell_after(nb, "Named queries").outputs)
    assert "regularizer" in tidy and "clean_accuracy" in tidy
    noise = cell_after(nb, "## Robustness")
    assert 'groupby(["noise_name", "regularizer", "noise_sd"])' in noise.source      # one noise set per curve
    assert any("image/png" in o.get("data", {}) for o in noise.outputs)
    diagram = cell_after(nb, "The pipeline")
    shown = diagram.outputs[0]
    if "image/svg+xml" in shown.get("data", {}):
        svg = shown["data"]["image/svg+xml"]
        for table in ("Scan", "PredictiveModel", "SimilarityMatrix", "RegularizedClassifier", "MinimalPerturbation"):
            assert table in svg, table
    else:                       # no graphviz: the same graph as Mermaid text
        assert "RegularizedClassifier" in text_of(shown) and "-->" in text_of(shown)
    restricted = text_of(cell_after(nb, "restriction by key and by condition").outputs[0])
    assert "units," in restricted and "with w_a > 0.5" in restricted
    aggr = "".join(text_of(o) for o in cell_after(nb, "Aggregation").outputs)
    assert "n_units" in aggr and "mean_test_corr" in aggr
    epochs = cell_after(nb, "Epoch curves")
    assert any("image/png" in o.get("data", {}) for o in epochs.outputs)
    gamma = code[code.index(epochs) + 1]
    assert any("image/png" in o.get("data", {}) for o in gamma.outputs)
    gamma_table = "".join(text_of(o) for o in gamma.outputs)
    assert "Neural (model)" in gamma_table and "Shuffle" in gamma_table
    net = cell_after(nb, "A trained network")
    line = "".join(text_of(o) for o in net.outputs if o["output_type"] == "stream")
    probs = json.loads(line.split("class probabilities:")[1].strip())
    assert len(probs) == classes_trained and abs(sum(probs) - 1) < 0.01
    assert any("image/png" in o.get("data", {}) for o in net.outputs)


def test_committed_notebook_has_outputs():
    """The notebook is committed executed: every code cell has outputs, none of them an error."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    check_outputs(nb, classes_trained=10)


@pytest.mark.slow       # the tiny demo the fixture runs: about a minute
def test_notebook_runs_against_a_tiny_study(tiny_demo):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    env_before = os.environ.get("NEURALREG_PREFIX")
    os.environ["NEURALREG_PREFIX"] = tiny_demo      # the kernel inherits the environment (and NEURALREG_STORE)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("NEURALREG_PREFIX")
        else:
            os.environ["NEURALREG_PREFIX"] = env_before
    check_outputs(nb, classes_trained=10)
    if shutil.which("dot"):
        assert "image/svg+xml" in cell_after(nb, "The pipeline").outputs[0]["data"]
