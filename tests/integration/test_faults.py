"""Worker faults on the tiny simulated study, each in its own schema prefix and driven through real
worker processes (`python -m populate.worker`): two workers compute every key exactly once; a
worker killed with SIGKILL mid-training leaves a job that the next worker reclaims and finishes;
SIGTERM gives the job back to the queue (populate/preempt.py) and the next worker finishes it, with no
`jobs retry`. No table ever holds a partial result.
The study includes two tiny classifiers (None and Neural (model)) with their noise and attack
evaluation, so every auto-populated table is covered; test_classifier_resume.py kills a classifier mid-training, test_db_restart.py the server."""
import json
import signal
import time

import pytest

from neuralreg_schema import pipeline
from populate import preempt
from tests.helpers import cli, probe, run_python, spawn

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds

TABLES = ("experiment.Neuron", "predictive.PredictiveModel", "similarity.SimilarityMatrix",
          "similarity.AveragedSimilarity", "similarity.SimilarityStability", "classifier.RegularizedClassifier",
          "evaluation.NoiseRobustness", "evaluation.AttackResult", "evaluation.MinimalPerturbation")

PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
key = m["predictive"].PredictiveModelConfig.add("tiny", name="slow", max_epochs=50, patience=50)
m["similarity"].SimilarityConfig.add_standard(key, vgg=False)
c = m["classifier"]
c.ClassifierPlan.add(c.ClassificationDataset.add("offline"), c.ClassifierConfig.add("tiny"),
                     [c.Regularizer.add("none"), c.Regularizer.add("neural-model", "sim-tiny-7", model=key)], [0])
m["evaluation"].NoiseConfig.add("default")
m["evaluation"].AttackSuite.add_recipe("tiny")
"""


def _probe(prefix):
    return probe(prefix, TABLES)


def _worker(prefix, *extra):
    return spawn(["-m", "populate.worker", "--prefix", prefix, *extra])


@pytest.fixture
def study(fresh_prefix):
    """A fresh prefix holding the tiny simulated experiment and the 'tiny' plan; dropped afterwards."""
    out = cli(fresh_prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "7")
    assert out.returncode == 0, out.stderr[-2000:]
    out = run_python(["-c", PLAN, fresh_prefix])   # trainings of seconds, long enough to be interrupted
    assert out.returncode == 0, out.stderr[-2000:]
    return fresh_prefix


def _assert_complete(state):
    for name in TABLES:
        assert state[name]["remaining"] == 0 and state[name]["rows"] > 0, (name, state[name])
        assert state[name]["jobs"]["reserved"] == 0 and not state[name]["errors"], (name, state[name])
    assert state["units"] == state["predictive.PredictiveModel"]["rows"] * 40      # tiny: 40 neurons per scan


def _wait_for_reserved(prefix, timeout=120):
    """Until a PredictiveModel job is reserved (read straight from its job table: fast)."""
    connection = pipeline.settings.configure().conn()
    qi = connection.adapter.quote_identifier                  # backticks on MySQL, double quotes on PostgreSQL
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            n = connection.query(f"SELECT COUNT(*) FROM {qi(prefix + '_predictive')}.{qi('~~predictive_model')} "
                                 "WHERE status = 'reserved'").fetchone()[0]
        except Exception:            # noqa: BLE001 - the job table appears with the first worker
            n = 0
        if n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no PredictiveModel job was reserved within {timeout} s")


def test_two_workers_compute_every_key_exactly_once(study):
    workers = [_worker(study), _worker(study)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    state = _probe(study)
    _assert_complete(state)
    # every success is one make call; summed over both workers they equal the rows: none twice
    made = {}
    for log in logs:
        for line in log.splitlines():
            if "pass done:" in line:
                for table, (n, errors) in json.loads(line.split("pass done:", 1)[1]).items():
                    made[table] = made.get(table, 0) + n
                    assert errors == 0, line
    for name in TABLES:
        assert made[name.split(".")[1]] == state[name]["rows"], (name, made, state[name])


def test_sigkill_mid_training_is_reclaimed_and_finished(study):
    worker = _worker(study)
    _wait_for_reserved(study)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    state = _probe(study)
    assert state["predictive.PredictiveModel"]["jobs"]["reserved"] == 1            # orphaned
    assert state["units"] == state["predictive.PredictiveModel"]["rows"] * 40      # no partial model
    rescue = _worker(study)
    log = rescue.communicate(timeout=600)[0]
    assert rescue.returncode == 0, log
    assert "reclaimed" in log
    _assert_complete(_probe(study))


def test_sigterm_gives_the_job_back_and_the_next_worker_finishes_it(study):
    # --preempt-grace 2: should the main thread not act on the signal (native code), the guard thread gives
    # the job back within 2 s. In one full-suite run the signal, sent while a PredictiveModel job was
    # reserved, took effect only after both models were done (the job given back was a later table's):
    # the test holds for whichever job the worker had in hand, named by its log
    worker = _worker(study, "--preempt-grace", "2")
    _wait_for_reserved(study)
    worker.send_signal(signal.SIGTERM)
    log = worker.communicate(timeout=120)[0]
    assert worker.returncode == preempt.PREEMPTED_EXIT, log[-2000:]
    assert "given back to the queue" in log, log[-2000:]
    state = _probe(study)
    for name in TABLES:
        assert not state[name]["errors"] and state[name]["jobs"]["reserved"] == 0, (name, state[name])   # given back
    assert state["units"] == state["predictive.PredictiveModel"]["rows"] * 40
    out = cli(study, "jobs", "--json")
    rows = [r for r in json.loads(out.stdout)["tables"] if r["preempted"]]
    assert len(rows) == 1 and rows[0]["preempted"] == 1 and rows[0]["pending"] >= 1, rows
    rescue = _worker(study)                                                          # no `jobs retry`
    log = rescue.communicate(timeout=600)[0]
    assert rescue.returncode == 0, log
    _assert_complete(_probe(study))
