"""`neuralreg plan neuron-controls` on the tiny profile: the known answers from spikes through the whole
chain. The three populations (mouse, low, high) are ingested by `neuralreg ingest simulated --tuning`,
the plan is refused (naming the missing groups and the command) until they are there, two
`neuralreg populate` workers fill the graph, and `neuralreg report` writes population_targets.csv
and neuron_controls.csv. Own schema prefix, dropped afterwards."""
import os

import numpy as np
import pandas as pd
import pytest

from tests.helpers import cli, spawn, stop

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds

SEEDS = 2
LABELS = {"None", "Neural (model)", "Neural (model, low)", "Neural (model, high)", "Shuffle", "Lowpass", "Highpass"}


def test_neuron_controls_from_spikes_to_report(fresh_prefix, tmp_path):
    prefix = fresh_prefix
    workers = []
    plan = ["plan", "neuron-controls", "--model", "tiny", "--classifier", "tiny", "--seeds", str(SEEDS),
            "--attacks", "tiny"]
    try:
        run = cli(prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "7")
        assert run.returncode == 0, run.stderr[-3000:]
        run = cli(prefix, *plan)
        assert run.returncode == 1
        assert "sim-tiny-7-low, sim-tiny-7-high" in run.stderr and "--tuning low" in run.stderr, run.stderr[-2000:]
        for tuning in ("low", "high"):
            run = cli(prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "7", "--tuning", tuning)
            assert run.returncode == 0, run.stderr[-3000:]
            assert f"scan group 'sim-tiny-7-{tuning}': 2 scans" in run.stdout
        run = cli(prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "7", "--tuning", "medium")
        assert run.returncode == 2 and "invalid choice: 'medium'" in run.stderr
        run = cli(prefix, *plan)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"study 'neuron-controls': {7 * SEEDS} classifiers planned" in run.stdout, run.stdout
        assert "sim-tiny-7, sim-tiny-7-low, sim-tiny-7-high" in run.stdout

        env = {**os.environ, "NEURALREG_WORKERS": "2"}
        workers = [spawn(["-m", "neuralreg_schema.cli", "--prefix", prefix, "populate"], env=env) for _ in range(2)]
        outputs = [w.communicate(timeout=1200)[0] for w in workers]
        if not all(w.returncode == 0 for w in workers):      # say why: exit codes, error lines, the job errors
            errors = cli(prefix, "jobs", "errors").stdout[-4000:]
            said = [[line for line in o.splitlines() if "ERROR" in line or "Error" in line or "error" in line][-20:]
                    for o in outputs]
            raise AssertionError(f"worker exit codes {[w.returncode for w in workers]}; their error lines {said}; "
                                 f"`jobs errors`: {errors}")

        out = tmp_path / "report"
        run = cli(prefix, "report", "--out", str(out))
        assert run.returncode == 0, run.stderr[-3000:]
        targets = pd.read_csv(out / "population_targets.csv")
        assert set(targets["population"]) == {"mouse", "low", "high"}
        model = targets[targets["matrix"] == "model/stimulus"].set_index("population")
        # the known answer survives the chain: the low population's S_model is the lowpass-like one
        assert model.loc["low", "r_lowpass"] > model.loc["mouse", "r_lowpass"] + 0.2, model
        assert model.loc["low", "r_lowpass"] > model.loc["low", "r_highpass"], model
        summary = pd.read_csv(out / "neuron_controls.csv", keep_default_na=False)
        assert set(summary["regularizer"]) == LABELS
        assert (summary["seeds"] == SEEDS).all()
        primary = summary[summary["primary"].astype(str) == "True"]
        assert list(primary["regularizer"]) == ["Neural (model, low)"] and list(primary["noise_sd"]) == [0.2]
        holm = pd.to_numeric(summary["p_holm"], errors="coerce")
        raw = pd.to_numeric(summary["p_seeds_paired_t"], errors="coerce")
        both = holm.notna() & raw.notna()
        assert (holm[both] >= raw[both] - 1e-12).all()
        assert any(p.name.startswith("neuron_controls_") and p.suffix == ".png" for p in out.iterdir())
        classifiers = pd.read_csv(out / "classifiers.csv")
        low = classifiers[classifiers["regularizer"] == "Neural (model, low)"]
        assert len(low) == SEEDS and set(low["scan_group"]) == {"sim-tiny-7-low"}
        assert np.isfinite(low["heldout_loss"]).all()
    finally:
        for worker in workers:          # only when the test failed before they finished
            stop(worker)
