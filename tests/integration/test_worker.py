"""The worker loop and the status command over the activated pipeline."""
import time

import pytest

from neuralreg_schema import cli
from populate import worker
from tests.helpers import make_recording


def test_worker_populates_every_computed_table(modules, prefix, capsys):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=201, image_set="toy_worker")
    exp.ingest(images, [scan])
    tables = worker.computed_tables(modules)
    assert exp.Neuron in tables
    worker.run_once(tables, display_progress=False)
    assert worker.pending(tables) == 0
    assert len(exp.Neuron.Unit & {"animal_id": 201}) == scan.n_neurons
    assert worker.main(["--prefix", prefix]) == 0          # nothing left: one pass, then exit


def test_status_lists_tables_and_jobs(modules, prefix, capsys):
    assert cli.main(["--prefix", prefix, "status"]) == 0
    out = capsys.readouterr().out
    assert "experiment.Neuron" in out and "experiment.Scan.Unit" in out and "jobs:" in out


def test_worker_table_filter_max_jobs_and_idle_exit(modules, prefix):
    exp = modules["experiment"]
    keys = []
    for animal in (211, 212, 213):
        images, scan = make_recording(animal_id=animal, image_set=f"toy_worker{animal}")
        exp.ingest(images, [scan])
        keys.append({"animal_id": animal, "session": 1, "scan_idx": 1})
    tables = worker.computed_tables(modules)
    assert worker.select_tables(tables, ["experiment.Neuron"]) == [exp.Neuron]
    with pytest.raises(SystemExit, match="Nope"):
        worker.select_tables(tables, ["Nope"])
    assert worker.main(["--prefix", prefix, "--tables", "Neuron", "--max-jobs", "2"]) == 0
    assert len(exp.Neuron & keys) == 2
    started = time.monotonic()
    assert worker.main(["--prefix", prefix, "--tables", "Neuron", "--forever", "--poll", "0.2",
                        "--idle-exit", "1"]) == 0
    assert len(exp.Neuron & keys) == 3 and time.monotonic() - started < 60
