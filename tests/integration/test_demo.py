"""`neuralreg demo --profile tiny`, the README's main command at test size, end to end in a fresh
schema prefix (dropped afterwards): every stage runs, the summary and the classifier table print."""
import json

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds


def test_tiny_demo_end_to_end(fresh_prefix, tmp_path):
    out_json = tmp_path / "summary.json"
    run = cli(fresh_prefix, "demo", "--profile", "tiny", "--json", str(out_json), timeout=600)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    for step in ("== 1/5", "== 2/5", "== 3/5", "== 4/5", "== 5/5"):
        assert step in run.stdout
    assert "r(S_model, S_oracle)" in run.stdout and "clean accuracy" in run.stdout
    summary = json.loads(out_json.read_text())
    regs = {r["regularizer"] for r in summary["classifiers"]}
    assert regs == {"None", "Neural (model)", "Neural (data)", "Shuffle"}
    for r in summary["classifiers"]:
        assert r["seeds"] == 1 and 0 <= r["mean_accuracy"] <= 1 and r["dataset"] == "offline-photos"
        assert (r["regularizer"] == "None") == (not r["heldout_after"])
    assert len(summary["scans"]) == 2 and summary["groups"]
