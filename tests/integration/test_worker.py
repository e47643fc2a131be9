"""The worker loop and the status command over the activated pipeline."""
from neuralreg_schema import cli
from populate import worker
from tests.conftest import make_recording


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
