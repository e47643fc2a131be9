"""A classifier job and an attack job, each TERMed mid-run in a real worker process, go back to the
queue by themselves (populate/preempt.py: the worker exits 75, the job is pending with its count),
and the next worker completes them from their checkpoints with no `jobs retry`; the rows equal those of
an uninterrupted run (recomputed afterwards in the same prefix). Fresh prefixes (dropped afterwards),
the offline data set."""
import json
import os
import signal
import time
from pathlib import Path

import pytest

from populate import preempt
from tests.helpers import cli, run_python, spawn, stop
from tests.integration.test_classifier_resume import _checkpoint_epoch, _checkpoints
from tests.integration.test_evaluation_resume import SCRIPT as ATTACK_SCRIPT

pytestmark = pytest.mark.slow      # real worker processes training models: a minute or two

EPOCHS = 4

PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])["classifier"]
m.ClassifierPlan.add(m.ClassificationDataset.add("offline"),
                     m.ClassifierConfig.add("tiny", name="preempt", epochs=%d, width=8, max_train=512),
                     m.Regularizer.add("none"), [0])
""" % EPOCHS

ROWS = """
import json, sys
from neuralreg_schema import pipeline
t = pipeline.activate(sys.argv[1])["classifier"].RegularizedClassifier
if sys.argv[2] == "delete":
    t.delete(prompt=False)
    sys.exit(0)
row = t.fetch1()
print(json.dumps({"row": {k: row[k] for k in ("test_accuracy", "train_accuracy", "initial_heldout_loss", "heldout_loss",
                                              "epochs_run", "n_parameters")},
                  "resumed_from_epoch": row["resumed_from_epoch"],
                  "epochs": [{k: v for k, v in e.items() if k != "seconds"} for e in t.Epoch.to_dicts(order_by="epoch")],
                  "jobs": t.jobs.progress()}, default=str))
"""

ATTACK_WORKER = """
import sys, time
from neuralreg_schema import pipeline
from populate import worker
ev = pipeline.activate(sys.argv[1])["evaluation"]
ev.ATTACK_CHECKPOINT_INTERVAL = 0.0              # save after every batch
save = ev.StoreCheckpoint.save
def save_and_say(self, state):
    save(self, state)
    print("saved", flush=True)
    time.sleep(float(sys.argv[2]))               # slow enough to be TERMed between batches or inside one
ev.StoreCheckpoint.save = save_and_say
sys.exit(worker.main(["--prefix", sys.argv[1], "--tables", "AttackResult"]))
"""


def _preempted(prefix, table):
    out = cli(prefix, "jobs", "--json")
    assert out.returncode == 0, out.stderr
    return next(r for r in json.loads(out.stdout)["tables"] if r["table"] == table)


def test_a_classifier_termed_mid_training_goes_back_and_resumes_to_the_uninterrupted_rows(fresh_prefix):
    out = run_python(["-c", PLAN, fresh_prefix])
    assert out.returncode == 0, out.stderr[-2000:]
    worker = spawn(["-m", "populate.worker", "--prefix", fresh_prefix, "--tables", "RegularizedClassifier"])
    try:
        deadline, epoch = time.time() + 240, 0
        while time.time() < deadline and epoch < 1:
            assert worker.poll() is None, worker.communicate()[0][-3000:]
            epoch = max([_checkpoint_epoch(p) for p in _checkpoints(fresh_prefix)] or [0])
            time.sleep(0.1)
        assert epoch >= 1, "no checkpoint of epoch 1 within 240 s"
        worker.send_signal(signal.SIGTERM)
        log = worker.communicate(timeout=120)[0]
    finally:
        stop(worker)
    assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
    stopped_at = max(_checkpoint_epoch(p) for p in _checkpoints(fresh_prefix))
    assert 1 <= stopped_at < EPOCHS
    row = _preempted(fresh_prefix, "classifier.RegularizedClassifier")
    assert row["pending"] == 1 and row["preempted"] == 1 and row["error"] == 0 and row["done"] == 0, row

    rescue = spawn(["-m", "populate.worker", "--prefix", fresh_prefix, "--tables", "RegularizedClassifier"])
    log = rescue.communicate(timeout=300)[0]
    assert rescue.returncode == 0, log[-3000:]
    assert f"resuming after epoch {stopped_at}" in log, log[-3000:]
    out = run_python(["-c", ROWS, fresh_prefix, "read"])
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["resumed_from_epoch"] == stopped_at and resumed["jobs"]["pending"] == 0
    assert resumed["jobs"]["error"] == 0 and _checkpoints(fresh_prefix) == []
    # the uninterrupted run, by a worker like the others (same torch threads: the sums must match)
    assert run_python(["-c", ROWS, fresh_prefix, "delete"]).returncode == 0
    again = spawn(["-m", "populate.worker", "--prefix", fresh_prefix, "--tables", "RegularizedClassifier"])
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log[-3000:]
    out = run_python(["-c", ROWS, fresh_prefix, "read"])
    assert out.returncode == 0, out.stderr[-3000:]
    whole = json.loads(out.stdout.strip().splitlines()[-1])
    assert whole["resumed_from_epoch"] == 0 and len(whole["epochs"]) == EPOCHS
    assert resumed["epochs"] == whole["epochs"] and resumed["row"] == whole["row"]


def test_an_attack_termed_mid_run_goes_back_and_resumes_to_the_uninterrupted_result(fresh_prefix):
    out = run_python(["-c", ATTACK_SCRIPT, fresh_prefix, "plan"], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    worker = spawn(["-c", ATTACK_WORKER, fresh_prefix, "0.5"])
    try:
        deadline, saves = time.time() + 240, 0
        while time.time() < deadline and saves < 2:
            line = worker.stdout.readline()
            assert line or worker.poll() is None, "the worker ended before its 2nd saved batch"
            saves += line.strip() == "saved"
        assert saves == 2
        worker.send_signal(signal.SIGTERM)
        log = worker.communicate(timeout=120)[0]
    finally:
        stop(worker)
    assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
    row = _preempted(fresh_prefix, "evaluation.AttackResult")
    assert row["pending"] == 1 and row["preempted"] == 1 and row["error"] == 0 and row["done"] == 0, row
    assert list((Path(os.environ["NEURALREG_STORE"]) / "_checkpoints" / f"{fresh_prefix}_evaluation").rglob("*.pt"))

    rescue = spawn(["-c", ATTACK_WORKER, fresh_prefix, "0"])
    log = rescue.communicate(timeout=300)[0]
    assert rescue.returncode == 0, log[-3000:]
    assert "resuming" in log, log[-3000:]
    out = run_python(["-c", ATTACK_SCRIPT, fresh_prefix, "resume"], timeout=600)     # reads the row: populated
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    out = run_python(["-c", ATTACK_SCRIPT, fresh_prefix, "again"], timeout=600)      # uninterrupted, from scratch
    assert out.returncode == 0, out.stderr[-3000:]
    whole = json.loads(out.stdout.strip().splitlines()[-1])
    resumed.pop("resumed"), whole.pop("resumed")
    assert whole["budgets"] and resumed == whole
