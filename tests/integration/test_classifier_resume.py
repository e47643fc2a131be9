"""A RegularizedClassifier job killed with SIGKILL mid-training is reclaimed and finished by the next
worker from its last per-epoch checkpoint, not from epoch 0; the checkpoint is gone afterwards.
Real worker processes, a fresh schema prefix (dropped afterwards), the offline data set."""
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import run_python, spawn, stop

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds

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


def _worker(prefix):
    return spawn(["-m", "populate.worker", "--prefix", prefix, "--tables", "RegularizedClassifier"])


def _checkpoints(prefix):
    root = Path(os.environ["NEURALREG_STORE"]) / "_checkpoints" / f"{prefix}_classifier"
    return list(root.rglob("*.pt")) if root.exists() else []


def _checkpoint_epoch(path):
    try:
        return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=False)["epoch"]
    except Exception:           # noqa: BLE001 - being replaced right now; read again
        return 0


@pytest.fixture
def fresh(fresh_prefix):
    """A prefix of the test's own with one planned classifier (dropped afterwards)."""
    out = run_python(["-c", PLAN, fresh_prefix])
    assert out.returncode == 0, out.stderr[-2000:]
    return fresh_prefix


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
        stop(worker)
    killed_at = max(_checkpoint_epoch(p) for p in _checkpoints(fresh))
    assert 2 <= killed_at < EPOCHS
    state = json.loads(run_python(["-c", PROBE, fresh]).stdout.strip().splitlines()[-1])
    assert state["rows"] == [] and state["epochs"] == [] and state["jobs"]["reserved"] == 1   # nothing partial

    rescue = _worker(fresh)
    log = rescue.communicate(timeout=300)[0]
    assert rescue.returncode == 0, log[-3000:]
    assert "reclaimed" in log and f"resuming after epoch {killed_at}" in log, log[-3000:]
    state = json.loads(run_python(["-c", PROBE, fresh]).stdout.strip().splitlines()[-1])
    assert len(state["rows"]) == 1, state
    row = state["rows"][0]
    assert row["resumed_from_epoch"] == killed_at and row["epochs_run"] == EPOCHS
    assert state["epochs"] == list(range(1, EPOCHS + 1))                  # the history before the kill is kept
    assert state["jobs"]["reserved"] == 0 and state["jobs"]["error"] == 0
    assert _checkpoints(fresh) == []                                       # removed with the insert
