"""A RegularizedClassifier job killed with SIGKILL mid-training is reclaimed and finished by the next
worker from its last per-epoch checkpoint, not from epoch 0; the checkpoint is gone afterwards.
Real worker processes, a fresh schema prefix (dropped afterwards), the offline data set."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from neuralreg_schema import pipeline

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 12

PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])["classifier"]
m.ClassifierPlan.add(m.ClassificationDataset.add("offline"),
                    m.ClassifierConfig.add("tiny", name="resume", epochs=%d, width=8, max_train=1024),
                    m.Regularizer.add("none"), [0])
""" % EPOCHS

PROBE = """
import json, sys
from neuralreg_schema import pipeline
c = pipeline.activate(sys.argv[1])["classifier"]
t = c.RegularizedClassifier
rows = t.to_dicts()
print(json.dumps({"rows": [{k: r[k] for k in ("resumed_from_epoch", "epochs_run", "test_accuracy")} for r in rows],
                  "epochs": sorted(int(e) for e in (t.Epoch).to_arrays("epoch")),
                  "jobs": t.jobs.progress()}, default=str))
"""


def _run(args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _worker(prefix):
    return subprocess.Popen([sys.executable, "-m", "populate.worker", "--prefix", prefix,
                             "--tables", "RegularizedClassifier"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _checkpoints(prefix):
    root = Path(os.environ["NEURALREG_STORE"]) / "_checkpoints" / f"{prefix}_classifier"
    return list(root.rglob("*.pt")) if root.exists() else []


def _checkpoint_epoch(path):
    try:
        return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=False)["epoch"]
    except Exception:           # noqa: BLE001 - being replaced right now; read again
        return 0


@pytest.fixture
def fresh(modules):
    prefix = f"neuralreg_r{uuid.uuid4().hex[:8]}"
    try:
        out = _run(["-c", PLAN, prefix])
        assert out.returncode == 0, out.stderr[-2000:]
        yield prefix
    finally:
        pipeline.drop_all(prefix)


def test_sigkill_mid_training_resumes_from_the_last_epoch(fresh):
    worker = _worker(fresh)
    deadline, epoch = time.time() + 240, 0
    try:
        while time.time() < deadline and epoch < 2:
            assert worker.poll() is None, worker.communicate()[0][-3000:]
            epoch = max([_checkpoint_epoch(p) for p in _checkpoints(fresh)] or [0])
            time.sleep(0.1)
        assert epoch >= 2, "no checkpoint of epoch 2 within 240 s"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_at = max(_checkpoint_epoch(p) for p in _checkpoints(fresh))
    assert 2 <= killed_at < EPOCHS
    state = json.loads(_run(["-c", PROBE, fresh]).stdout.strip().splitlines()[-1])
    assert state["rows"] == [] and state["epochs"] == [] and state["jobs"]["reserved"] == 1   # nothing partial

    rescue = _worker(fresh)
    log = rescue.communicate(timeout=300)[0]
    assert rescue.returncode == 0, log[-3000:]
    assert "reclaimed" in log and f"resuming after epoch {killed_at}" in log, log[-3000:]
    state = json.loads(_run(["-c", PROBE, fresh]).stdout.strip().splitlines()[-1])
    assert len(state["rows"]) == 1, state
    row = state["rows"][0]
    assert row["resumed_from_epoch"] == killed_at and row["epochs_run"] == EPOCHS
    assert state["epochs"] == list(range(1, EPOCHS + 1))                  # the history before the kill is kept
    assert state["jobs"]["reserved"] == 0 and state["jobs"]["error"] == 0
    assert _checkpoints(fresh) == []                                       # removed with the insert
