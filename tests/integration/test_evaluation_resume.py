"""An AttackResult job that dies (os._exit, no cleanup) after its 2nd saved batch leaves nothing in
the tables and its progress in the object store; the next populate resumes from it, says so, and
stores exactly the row an uninterrupted run stores; the checkpoint is gone after the insert. Real
processes (one per phase), a fresh schema prefix (dropped afterwards), the offline data set."""
import json
import os
from pathlib import Path

from tests.helpers import run_python

SCRIPT = """
import json, logging, os, sys
import numpy as np
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
clf, ev = m["classifier"], m["evaluation"]
phase = sys.argv[2]
ev.ATTACK_CHECKPOINT_INTERVAL = 0.0              # save after every batch
if phase == "plan":
    clf.ClassifierPlan.add(clf.ClassificationDataset.add("offline"),
                           clf.ClassifierConfig.add("tiny", name="attack-resume", epochs=1, width=8, max_train=512),
                           clf.Regularizer.add("none"), [0])
    clf.RegularizedClassifier.populate()
    cfg = ev.AttackConfig.add("pgd-linf", {"steps": [3], "rel_stepsize": [0.3, 0.5], "eps_hi": [0.5],
                                           "search_steps": [3]}, repeats=2, batch_size=2)
    ev.AttackSuite.insert1({"suite": "resume", "n_samples": 60, "sample_seed": 0, "attack_seed": 5})
    ev.AttackSuite.Member.insert1({"suite": "resume", **cfg})
elif phase == "crash":
    save, saves = ev.StoreCheckpoint.save, []
    def save_then_die(self, state):
        save(self, state)
        saves.append(1)
        if len(saves) == 2:
            os._exit(9)                          # a killed worker: no exception handling, no cleanup
    ev.StoreCheckpoint.save = save_then_die
    ev.AttackResult.populate()
else:
    said = []
    class Keep(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())
    logging.getLogger("neuralreg.evaluation").addHandler(Keep())
    logging.getLogger("neuralreg.evaluation").setLevel(logging.INFO)
    if phase == "again":
        ev.AttackResult.delete(prompt=False)     # the uninterrupted run, from scratch
    ev.AttackResult.populate()
    row = ev.AttackResult.fetch1()
    budgets = ev.AttackResult.Budget.to_dicts(order_by="budget")
    print(json.dumps({"resumed": any("resuming" in s for s in said),
                      "distances": np.asarray(row["distances"].load()).tolist(),
                      "success": np.asarray(row["success"]).tolist(),
                      "runs": [{k: v for k, v in r.items() if k != "seconds"} for r in row["runs"]],
                      "median_own": row["median_own"], "rejected": row["rejected"],
                      "budgets": [[b["budget"], np.asarray(b["distances"]).tolist()] for b in budgets]}))
"""


def _checkpoints(prefix):
    root = Path(os.environ["NEURALREG_STORE"]) / "_checkpoints" / f"{prefix}_evaluation"
    return list(root.rglob("*.pt")) if root.exists() else []


def _run(prefix, phase):
    out = run_python(["-c", SCRIPT, prefix, phase], timeout=600)
    return out


def test_a_killed_attack_job_resumes_to_the_uninterrupted_result(fresh_prefix):
    out = _run(fresh_prefix, "plan")
    assert out.returncode == 0, out.stderr[-3000:]
    out = _run(fresh_prefix, "crash")
    assert out.returncode == 9, (out.returncode, out.stderr[-3000:])
    assert len(_checkpoints(fresh_prefix)) == 1                  # the progress of the dead job
    out = _run(fresh_prefix, "resume")
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["resumed"] and _checkpoints(fresh_prefix) == []
    out = _run(fresh_prefix, "again")
    assert out.returncode == 0, out.stderr[-3000:]
    whole = json.loads(out.stdout.strip().splitlines()[-1])
    assert not whole["resumed"] and _checkpoints(fresh_prefix) == []
    resumed.pop("resumed"), whole.pop("resumed")
    assert len(whole["runs"]) == 4 and whole["budgets"]
    assert resumed == whole
