"""The embedded default end to end on the tiny profile: simulate, ingest through the CLI, populate,
and Eq. 1 estimates checked against the simulator's ground truth."""
import numpy as np
from scipy.stats import spearmanr

from neuralreg_schema import cli
from neuralreg_schema.compute.experiment import simulate


def test_simulated_experiment_through_the_cli(modules, prefix, capsys):
    exp = modules["experiment"]
    assert cli.main(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "3"]) == 0
    sim = simulate.simulate_experiment("tiny", seed=3)
    name = sim.image_set.name
    keys = (exp.Scan & {"image_set": name}).keys()
    assert len(keys) == len(sim.scans)
    assert len(exp.Image & {"image_set": name}) == len(sim.image_set.image_ids)
    for scan in sim.scans:
        key = {"animal_id": scan.animal_id, "session": scan.session, "scan_idx": scan.scan_idx}
        assert len(exp.SimulatedUnit & key) == scan.n_neurons
        np.testing.assert_array_equal(np.asarray((exp.Scan & key).fetch1("responses").load()), scan.responses)
    exp.Neuron.populate(keys, reserve_jobs=True)
    w, truth = (exp.Neuron.Unit * exp.SimulatedUnit & keys).to_arrays("snr_weight", "true_reliability")
    assert len(w) == sum(s.n_neurons for s in sim.scans)
    assert spearmanr(w, truth).statistic > 0.6
    assert cli.main(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "3"]) == 0
    assert "already ingested" in capsys.readouterr().out
