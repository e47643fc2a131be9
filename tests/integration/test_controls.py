"""`neuralreg plan controls` on the tiny profile, populated by two `neuralreg populate` workers at
once, then `neuralreg report`: every planned classifier trains exactly once (Lowpass and Highpass
get their targets through SimilarityMatrix / AveragedSimilarity like the neural ones), both noise
level sets are evaluated, and controls.csv holds the paired comparisons with None. Own schema
prefix (the CLI binds one per process), dropped afterwards."""
import os

import numpy as np
import pandas as pd
import pytest

from neuralreg_schema import pipeline
from neuralreg_schema.compute.evaluation import noise
from neuralreg_schema.compute.similarity import pixel_targets
from tests.helpers import cli, spawn, stop

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds

SEEDS = 2


def test_controls_plan_populates_with_two_workers_and_reports(fresh_prefix, tmp_path):
    prefix = fresh_prefix
    workers = []
    try:
        run = cli(prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "13")
        assert run.returncode == 0, run.stderr[-3000:]
        run = cli(prefix, "plan", "controls", "--model", "tiny", "--classifier", "tiny", "--seeds", str(SEEDS))
        assert run.returncode == 0, run.stderr[-3000:]
        assert "study 'controls': 10 classifiers planned" in run.stdout, run.stdout
        env = {**os.environ, "NEURALREG_WORKERS": "2"}
        workers = [spawn(["-m", "neuralreg_schema.cli", "--prefix", prefix, "populate"], env=env) for _ in range(2)]
        outputs = [w.communicate(timeout=900)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), [o[-3000:] for o in outputs]

        out = tmp_path / "report"
        run = cli(prefix, "report", "--out", str(out))
        assert run.returncode == 0, run.stderr[-3000:]
        controls = pd.read_csv(out / "controls.csv", keep_default_na=False)
        assert set(controls["regularizer"]) == {"None", "Neural (model)", "Shuffle", "Lowpass", "Highpass"}
        assert set(controls["noise_name"]) == {"default", "wide"}
        assert (controls["seeds"] == SEEDS).all() and (controls["paired_seeds"] == SEEDS).all()
        assert set(controls[controls["noise_name"] == "wide"]["noise_sd"]) == set(noise.LEVELS["wide"])
        assert controls["display_name"].str.contains("stand-in").all()
        none = controls[controls["regularizer"] == "None"]
        assert (none["diff_vs_none_mean"] == 0).all()
        low = controls[controls["regularizer"] == "Lowpass"]
        np.testing.assert_allclose(low["accuracy_mean"].to_numpy() - none["accuracy_mean"].to_numpy(),
                                   low["diff_vs_none_mean"].to_numpy(), atol=2e-4)   # each rounded to 4 digits
        assert any(p.name.startswith("controls_") and p.suffix == ".png" for p in out.iterdir())

        # the tables: each classifier once, the pixel targets equal a direct computation on the stimuli
        mods = _schemas(prefix)
        clf, sim, exp = mods["classifier"], mods["similarity"], mods["experiment"]
        assert len(clf.RegularizedClassifier()) == len(clf.ClassifierPlan()) == 5 * SEEDS
        assert len(mods["evaluation"].NoiseRobustness()) == 2 * 5 * SEEDS
        for method in ("lowpass", "highpass"):
            cfg = (sim.SimilarityConfig & {"method": method, "image_subset": "stimulus"}).fetch1()
            assert cfg["blur_sigma"] == pixel_targets.DEFAULT_SIGMA and cfg["label"].endswith("/sigma2")
            row = (sim.AveragedSimilarity & {"sim_hash": cfg["sim_hash"]}).fetch1()
            image_set = (sim.ScanGroup & row).fetch1("image_set")
            pixels = np.stack([(exp.Image & {"image_set": image_set, "image_id": int(i)}).fetch1("pixels")
                               for i in row["image_ids"]]).astype(np.float32)
            np.testing.assert_allclose(row["matrix"].load(), pixel_targets.pixel_similarity(pixels, method), atol=1e-6)
            reg = (clf.Regularizer & {"kind": method}).fetch1()
            assert reg["label"] == method.capitalize() and reg["sim_hash"] == cfg["sim_hash"]
            trained = clf.RegularizedClassifier & {"reg_hash": reg["reg_hash"]}
            assert len(trained) == SEEDS and (trained.to_arrays("pairs_per_step") > 0).all()
    finally:
        for worker in workers:          # only when the test failed before they finished
            stop(worker)


def _schemas(prefix):
    """The study's schemas as virtual modules (this process is bound to the session's prefix)."""
    from neuralreg_schema import settings
    dj = settings.configure()
    return {m: dj.VirtualModule(m, f"{prefix}_{m}") for m in pipeline.MODULES}
