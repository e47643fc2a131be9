"""A PredictiveModel job that dies after a per-epoch checkpoint is finished by the next populate from
that checkpoint (not from epoch 0), its row identical to an uninterrupted training, and the checkpoint
is removed with the insert. In-process: the worker's death is a failing `StoreCheckpoint.save`."""
import logging

import numpy as np
import pytest
import torch

from neuralreg_schema import checkpoints, cli
from neuralreg_schema.compute.experiment import simulate
from neuralreg_schema.compute.predictive import train as train_predictive
from neuralreg_schema.compute.common.training import TrainingState

SEED = 29          # simulated experiment of this module (other modules use other seeds)
KILLED_AFTER = 3   # epochs whose checkpoint was saved before the job died


@pytest.fixture(scope="module")
def scan_key(modules, prefix):
    """One scan of the tiny simulation (seed SEED) ingested, with the 'tiny' predictive config;
    the scans and their scan group are deleted at the end of the module."""
    exp, pred, sim = modules["experiment"], modules["predictive"], modules["similarity"]
    assert cli.main(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny", "--seed", str(SEED)]) == 0
    image_set = simulate.simulate_experiment("tiny", seed=SEED).image_set.name
    scans = exp.Scan & {"image_set": image_set}
    config = pred.PredictiveModelConfig.add("tiny")
    keys = (pred.PredictiveModel.key_source & scans & config).keys()
    yield min(keys, key=lambda k: k["scan_idx"])
    (sim.ScanGroup & {"scan_group": image_set}).delete(prompt=False)
    scans.delete(prompt=False)


def test_killed_predictive_job_resumes_from_its_checkpoint(modules, scan_key, monkeypatch, caplog):
    pred = modules["predictive"]
    table = pred.PredictiveModel
    save = checkpoints.StoreCheckpoint.save
    saved = []

    def save_then_die(self, state):
        save(self, state)
        saved.append(TrainingState.from_bytes(state).epoch)
        if len(saved) >= KILLED_AFTER:
            raise RuntimeError("worker killed")

    monkeypatch.setattr(checkpoints.StoreCheckpoint, "save", save_then_die)
    result = table.populate(scan_key, suppress_errors=True)
    assert len(result["error_list"]) == 1 and "worker killed" in str(result["error_list"][0])
    assert not table & scan_key and not table.Unit & scan_key                 # nothing partial
    store = checkpoints.StoreCheckpoint(table(), scan_key)
    assert TrainingState.from_bytes(store.load()).epoch == KILLED_AFTER
    monkeypatch.setattr(checkpoints.StoreCheckpoint, "save", save)

    with caplog.at_level(logging.INFO, logger="neuralreg.predictive"):
        result = table.populate(scan_key, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    assert any(f"resuming after epoch {KILLED_AFTER}" in r.getMessage() for r in caplog.records)
    assert store.load() is None                                               # removed with the insert

    # the row equals an uninterrupted training of the same scan, config and seed
    row = (table & scan_key).fetch1()
    data, _ = pred.load_scan_data(scan_key)
    config = (pred.PredictiveModelConfig & scan_key).fetch1("config")
    whole = train_predictive.train_predictive(data, dict(config), seed=int(scan_key["model_seed"]))
    assert len(whole.history) > KILLED_AFTER
    plain = [{k: v for k, v in h.items() if k != "seconds"} for h in whole.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in row["history"]] == plain
    assert row["resumed_from_epoch"] == KILLED_AFTER
    assert row["best_epoch"] == whole.best_epoch and row["mean_test_corr"] == float(np.mean(whole.test_corr))
    np.testing.assert_array_equal(np.asarray(row["predictions"]), whole.predictions)
    a = train_predictive.load_network(row["weights"]).state_dict()
    b = train_predictive.load_network(whole.state).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
