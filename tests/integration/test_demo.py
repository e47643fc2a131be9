"""`neuralreg demo --profile tiny`, the README's main command at test size, end to end in a fresh
schema prefix (dropped afterwards): every stage runs, the summary and the classifier table print."""
import json
import subprocess
import sys
import uuid
from pathlib import Path

from neuralreg_schema import pipeline

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_demo_end_to_end(modules, tmp_path):
    prefix = f"neuralreg_d{uuid.uuid4().hex[:8]}"
    out_json = tmp_path / "summary.json"
    try:
        run = subprocess.run([sys.executable, "-m", "neuralreg_schema.cli", "--prefix", prefix, "demo",
                              "--profile", "tiny", "--json", str(out_json)],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
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
    finally:
        pipeline.drop_all(prefix)
