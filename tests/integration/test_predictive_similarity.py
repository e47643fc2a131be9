"""PredictiveModel, SimilarityMatrix, AveragedSimilarity and SimilarityStability populated on the tiny
simulated profile, each stored matrix checked against a direct computation from the raw arrays."""
import numpy as np
import pytest

from neuralreg_schema import cli, report
from neuralreg_schema.compute.experiment import simulate
from tests.helpers import make_recording

SEED = 5   # simulated experiment of this module (other modules use other seeds)


def _direct_similarity(r, w):
    """Eq. 2 written out: scale, center over stimuli, normalise, dot products."""
    x = np.asarray(r, np.float64) * w
    x = x - x.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


@pytest.fixture(scope="module")
def study(modules, prefix):
    """The tiny experiment ingested through the CLI, the 'tiny' recipes planned, the graph populated.
    Everything this module adds is deleted at the end, so other modules' workers see none of it."""
    exp, pred, sim = modules["experiment"], modules["predictive"], modules["similarity"]
    assert cli.main(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny", "--seed", str(SEED)]) == 0
    experiment = simulate.simulate_experiment("tiny", seed=SEED)
    group = {"scan_group": experiment.image_set.name}
    assert len(sim.ScanGroup.Member & group) == len(experiment.scans)
    assert cli.main(["--prefix", prefix, "plan-similarity", "--model", "tiny", "--no-vgg"]) == 0
    model = {**pred.PredictiveModelConfig.add("tiny"), "model_seed": 0}   # one trained model: config and seed
    scans = exp.Scan & (sim.ScanGroup.Member & group)
    exp.Neuron.populate(scans, reserve_jobs=True)
    # only this study's scans and group: other tests leave deliberately failing keys in the shared prefix
    for table, restriction in ((pred.PredictiveModel, scans), (sim.SimilarityMatrix, scans),
                               (sim.AveragedSimilarity, group), (sim.SimilarityStability, group)):
        result = table.populate(restriction, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], (table.__name__, result["error_list"])
    yield {"experiment": experiment, "group": group, "model": model, "scans": scans}
    sim.SimilarityConfig.delete(prompt=False)
    pred.PredictiveModelConfig.delete(prompt=False)
    (sim.ScanGroup & group).delete(prompt=False)


def _scan_key(scan):
    return {"animal_id": scan.animal_id, "session": scan.session, "scan_idx": scan.scan_idx}


def test_config_is_content_addressed(modules, study):
    pred = modules["predictive"]
    config_key = {"model_hash": study["model"]["model_hash"]}
    assert pred.PredictiveModelConfig.add("tiny") == config_key
    config = (pred.PredictiveModelConfig & config_key).fetch1("config")
    assert pred.PredictiveModelConfig.add(dict(config), name="again") == config_key
    other = pred.PredictiveModelConfig.add("tiny", max_epochs=config["max_epochs"] + 1)
    assert other != config_key
    (pred.PredictiveModelConfig & other).delete(prompt=False)


def test_predictive_model_rows(modules, study):
    pred = modules["predictive"]
    for scan in study["experiment"].scans:
        key = {**_scan_key(scan), **study["model"]}
        row = (pred.PredictiveModel & key).fetch1()
        assert row["n_train_trials"] == np.sum(scan.tiers == "train")
        assert row["n_oracle_trials"] == np.sum(scan.tiers == "oracle")
        assert 1 <= row["best_epoch"] <= row["epochs_run"] == len(row["history"])
        predictions = np.asarray(row["predictions"].load())
        assert predictions.shape == (len(np.unique(scan.image_ids)), scan.n_neurons)
        assert np.all(np.isfinite(predictions)) and np.all(predictions > 0)
        np.testing.assert_array_equal(row["image_ids"], np.unique(scan.image_ids))
        v = (pred.PredictiveModel.Unit & key).to_arrays("test_corr")
        assert len(v) == scan.n_neurons and np.all(np.abs(v) <= 1)
        assert row["mean_test_corr"] == pytest.approx(np.mean(v), abs=1e-6)
        assert row["torch_version"] and row["code_version"].startswith(("0.", "0+")) and row["device"]
        net = (pred.PredictiveModel & key).network()                  # as RegularizedClassifier's
        assert sum(p.numel() for p in net.parameters() if p.requires_grad) == row["n_parameters"]
    assert np.mean((pred.PredictiveModel & study["model"] & study["scans"]).to_arrays("mean_test_corr")) > 0


def _inputs(modules, scan, model):
    """w_a and v_a per response column, and the predictions by image id, straight from the tables."""
    exp, pred = modules["experiment"], modules["predictive"]
    key = _scan_key(scan)
    cols, w = (exp.Neuron.Unit * exp.Scan.Unit & key).to_arrays("column", "snr_weight", order_by="column")
    cols2, v = (pred.PredictiveModel.Unit * exp.Scan.Unit & key & model).to_arrays("column", "test_corr",
                                                                                  order_by="column")
    assert list(cols) == list(range(scan.n_neurons)) == list(cols2)
    row = (pred.PredictiveModel & key & model).fetch1()
    return w, v, dict(zip(row["image_ids"].tolist(), np.asarray(row["predictions"].load())))


def test_similarity_matrices_match_a_direct_computation(modules, study):
    sim = modules["similarity"]
    for scan in study["experiment"].scans:
        key = _scan_key(scan)
        w, v, predictions = _inputs(modules, scan, study["model"])
        stim = np.isin(scan.tiers, ["train", "validation"])
        stim_ids = np.unique(scan.image_ids[stim])
        rows = {r["label"]: r for r in (sim.SimilarityMatrix * sim.SimilarityConfig & key).to_dicts()}
        assert set(rows) >= {"data/stimulus", "model/stimulus", "shuffle/stimulus/seed0", "oracle/oracle",
                             "model/oracle"}

        data = rows["data/stimulus"]
        np.testing.assert_array_equal(data["image_ids"], stim_ids)
        mean = np.stack([scan.responses[stim & (scan.image_ids == i)].mean(axis=0) for i in stim_ids])
        np.testing.assert_allclose(data["matrix"].load(), _direct_similarity(mean, w), atol=2e-5)

        model = rows["model/stimulus"]
        direct = _direct_similarity(np.stack([predictions[i] for i in stim_ids]), w * np.clip(v, 0, None))
        np.testing.assert_allclose(model["matrix"].load(), direct, atol=2e-5)

        shuffled = np.asarray(rows["shuffle/stimulus/seed0"]["matrix"].load())
        p = np.random.default_rng(0).permutation(len(stim_ids))
        np.testing.assert_allclose(shuffled, direct[np.ix_(p, p)], atol=2e-5)

        oracle = rows["oracle/oracle"]
        is_oracle = scan.tiers == "oracle"
        ids = np.unique(scan.image_ids[is_oracle])
        np.testing.assert_array_equal(oracle["image_ids"], ids)
        s_trials = _direct_similarity(scan.responses[is_oracle], w)
        trial_ids = scan.image_ids[is_oracle]
        expected = np.empty((len(ids), len(ids)))
        for a, i in enumerate(ids):
            for b, j in enumerate(ids):
                block = s_trials[np.ix_(trial_ids == i, trial_ids == j)]
                expected[a, b] = (block.sum() - np.trace(block)) / (block.size - len(block)) if i == j \
                    else block.mean()
        np.testing.assert_allclose(oracle["matrix"].load(), expected, atol=2e-5)


def test_averaged_similarity_is_the_mean_over_the_group(modules, study):
    sim = modules["similarity"]
    for row in (sim.AveragedSimilarity & study["group"]).to_dicts():
        members = (sim.SimilarityMatrix & (sim.ScanGroup.Member & study["group"]) & {"sim_hash": row["sim_hash"]})
        mats = [np.asarray(m) for m in members.to_arrays("matrix")]
        assert row["n_scans"] == len(mats) == len(study["experiment"].scans)
        np.testing.assert_allclose(row["matrix"].load(), np.mean(mats, axis=0), atol=1e-6)


def test_similarity_stability(modules, study):
    sim = modules["similarity"]
    row = (sim.SimilarityStability & study["group"] & study["model"]).fetch1()
    assert row["n_scans"] == 2 and row["n_oracle_images"] == simulate.PROFILES["tiny"].n_oracle
    assert -1 <= row["r_data_oracle"] <= 1 and -1 <= row["r_model_oracle"] <= 1
    assert row["repeat_fluctuation"]["n"] == len(row["repeat_values"].load())
    assert row["scan_fluctuation"]["std"] < row["repeat_fluctuation"]["std"]
    members = (sim.SimilarityStability.Member & study["group"] & study["model"]).to_dicts()
    assert len(members) == 2
    assert row["r_model_oracle"] == pytest.approx(np.mean([m["r_model_oracle"] for m in members]))


def test_demo_summary_reports_the_checks(modules, prefix, study):
    summary = report.demo_summary(modules)
    group = summary["groups"][study["group"]["scan_group"]]
    assert {"r_model_oracle", "r_data_oracle", "eq4_scan_std", "eq5_repeat_std"} <= set(group)
    scan = summary["scans"]["{animal_id}-{session}-{scan_idx}".format(**_scan_key(study["experiment"].scans[0]))]
    assert "model_test_corr" in scan and "spearman_v_truth" in scan


def test_failed_training_records_a_job_error_and_no_row(modules):
    exp, pred = modules["experiment"], modules["predictive"]
    images, scan = make_recording(animal_id=401, image_set="toy_pred", n_single=30)
    exp.ingest(images, [scan])
    key = {"animal_id": 401, "session": 1, "scan_idx": 1}
    nan_config = pred.PredictiveModelConfig.add("tiny", name="diverges", lr=1e30)
    result = pred.PredictiveModel.populate(key, nan_config, reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 0 and len(result["error_list"]) == 1
    error = (pred.PredictiveModel.jobs.errors & key & nan_config).fetch1("error_message")
    assert "TrainingError" in error and "epoch" in error
    assert not (pred.PredictiveModel & key) and not (pred.PredictiveModel.Unit & key)
    (pred.PredictiveModelConfig & nan_config).delete(prompt=False)
    (pred.PredictiveModel.jobs & key).delete()


def test_empty_validation_tier_is_a_clear_job_error(modules):
    exp, pred = modules["experiment"], modules["predictive"]
    images, scan = make_recording(animal_id=402, image_set="toy_pred2", n_single=30)
    scan.tiers[scan.tiers == "validation"] = "train"
    exp.ingest(images, [scan])
    key = {"animal_id": 402, "session": 1, "scan_idx": 1}
    config = pred.PredictiveModelConfig.add("tiny")
    result = pred.PredictiveModel.populate(key, config, reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 0
    error = (pred.PredictiveModel.jobs.errors & key).fetch1("error_message")
    assert "PredictiveDataError" in error and "validation" in error
    assert not (pred.PredictiveModel & key)
    (pred.PredictiveModel.jobs & key).delete()


def test_vgg_control_from_a_local_weights_file(modules, study, tmp_path, monkeypatch):
    """The VGG control with a small generated weights file in torchvision's format (no download)."""
    import torch

    from neuralreg_schema.compute.similarity import vgg
    from tests.unit.test_vgg import make_state
    sim = modules["similarity"]
    path = tmp_path / "vgg19-test.pth"
    torch.save(make_state(seed=1), path)
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(path))
    config = sim.SimilarityConfig.add("vgg", "oracle")
    result = sim.SimilarityMatrix.populate(study["scans"], config, reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"] and result["success_count"] == len(study["experiment"].scans)
    experiment = study["experiment"]
    index = {int(i): n for n, i in enumerate(experiment.image_set.image_ids)}
    for scan in experiment.scans:
        row = (sim.SimilarityMatrix & _scan_key(scan) & config).fetch1()
        ids = np.unique(scan.image_ids[scan.tiers == "oracle"])
        images = experiment.image_set.images[[index[int(i)] for i in ids]]
        expected = vgg.vgg_similarity(images, make_state(seed=1))
        np.testing.assert_allclose(row["matrix"].load(), expected, atol=1e-4)
        assert row["n_dims"] == 256 * 9 * 16 and "vgg19-test.pth" in row["details"]


def test_vgg_without_weights_is_a_clear_job_error(modules, study, tmp_path, monkeypatch):
    from neuralreg_schema.compute.similarity import vgg
    sim = modules["similarity"]
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(tmp_path / "absent.pth"))
    config = sim.SimilarityConfig.add("vgg", "stimulus")
    result = sim.SimilarityMatrix.populate(study["scans"], config, reserve_jobs=True, suppress_errors=True)
    assert result["success_count"] == 0 and result["error_list"]
    errors = (sim.SimilarityMatrix.jobs.errors & config).to_arrays("error_message")
    assert all("VGGWeightsError" in e and vgg.WEIGHTS_ENV in e for e in errors)
    assert not (sim.SimilarityMatrix & config)
    (sim.SimilarityMatrix.jobs & config).delete()


def test_model_matrices_wait_for_their_predictive_model(modules, study):
    """A model-based similarity config whose predictive model is not trained yet gets no job, while
    the data-based configs of the same scans do not depend on any model."""
    pred, sim = modules["predictive"], modules["similarity"]
    untrained = {**study["model"], "model_seed": 99}       # the tiny config's seed 99: not populated
    model_cfg = sim.SimilarityConfig.add("model", "oracle", model=untrained)
    scans = study["scans"].proj()
    assert not (sim.SimilarityMatrix().key_source & model_cfg & scans)
    data_cfg = sim.SimilarityConfig.add("data", "stimulus")
    assert len(sim.SimilarityMatrix().key_source & data_cfg & scans) == len(study["experiment"].scans)
    assert not (sim.SimilarityStability().key_source & untrained)
    (pred.PredictiveSeed & {"model_seed": 99}).delete(prompt=False)
    assert not (sim.SimilarityConfig & model_cfg)          # the model-based config went with its seed


def test_derived_rows_depend_on_what_they_were_computed_from(modules, study):
    """Deleting a scan's predictive model takes its model and shuffle matrices, the averages built from
    them and the Fig. 1 checks with it (data matrices stay); repopulating rebuilds them from the new
    model, and no average is left over from the old matrices."""
    pred, sim = modules["predictive"], modules["similarity"]
    scan = _scan_key(study["experiment"].scans[0])
    model_key = {**scan, **study["model"]}
    by_model = sim.SimilarityConfig & "method in ('model', 'shuffle')"
    assert len(sim.SimilarityMatrix.Source & model_key) == len(by_model)
    group = study["group"]
    members = len(sim.ScanGroup.Member & group)
    assert len(sim.AveragedSimilarity.Member & group) == members * len(sim.AveragedSimilarity & group)
    data_avg = sim.AveragedSimilarity & group & (sim.SimilarityConfig & "method = 'data'").proj()
    assert len(data_avg) == 1
    before = {h: m for h, m in zip(*(sim.AveragedSimilarity & group & by_model.proj()).to_arrays("sim_hash",
                                                                                                  "mean_offdiag"))}
    assert before
    (pred.PredictiveModel & model_key).delete(prompt=False, part_integrity="cascade")
    assert not (sim.SimilarityMatrix & scan & by_model.proj())
    assert not (sim.AveragedSimilarity & group & by_model.proj())            # no stale average
    assert not (sim.SimilarityStability & group & study["model"])
    assert len(sim.SimilarityMatrix & scan & (sim.SimilarityConfig & "method = 'data'").proj()) == 1
    assert len(data_avg) == 1                                                 # untouched
    for table, restrictions in ((pred.PredictiveModel, [study["scans"]]),
                                (sim.SimilarityMatrix, [study["scans"], by_model.proj()]),
                                (sim.AveragedSimilarity, [group, by_model.proj()]), (sim.SimilarityStability, [group])):
        result = table.populate(*restrictions, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], (table.__name__, result["error_list"])
    after = dict(zip(*(sim.AveragedSimilarity & group & by_model.proj()).to_arrays("sim_hash", "mean_offdiag")))
    assert set(after) == set(before)
    assert len(sim.SimilarityStability & group & study["model"]) == 1


def test_deleting_the_weights_takes_every_matrix_built_from_them(modules, study):
    """Neuron holds the Eq. 1 weights w_a that the data, oracle, model and shuffle matrices and the
    Fig. 1 checks are computed with: deleting a scan's Neuron row (with cascade) takes them, and the
    averages and checks over its group, with it; the pixel controls, computed without weights, stay.
    Repopulating rebuilds everything."""
    exp, sim = modules["experiment"], modules["similarity"]
    scan = _scan_key(study["experiment"].scans[0])
    group = study["group"]
    weighted = sim.SimilarityConfig & f"method in {sim.WEIGHTED_METHODS}"
    pixels = sim.SimilarityConfig - weighted.proj()
    assert len(sim.SimilarityMatrix.Weights & scan) == len(sim.SimilarityMatrix & scan & weighted.proj()) > 0
    n_pixels = len(sim.SimilarityMatrix & scan & pixels.proj())
    assert len(sim.SimilarityStability & group) >= 1
    (exp.Neuron & scan).delete(prompt=False, part_integrity="cascade")
    assert not (sim.SimilarityMatrix & scan & weighted.proj())
    assert len(sim.SimilarityMatrix & scan & pixels.proj()) == n_pixels
    assert not (sim.AveragedSimilarity & group & weighted.proj())
    assert not (sim.SimilarityStability & group)
    exp.Neuron.populate(study["scans"], reserve_jobs=True)
    for table, restrictions in ((sim.SimilarityMatrix, [study["scans"], weighted.proj()]),
                                (sim.AveragedSimilarity, [group, weighted.proj()]), (sim.SimilarityStability, [group])):
        result = table.populate(*restrictions, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], (table.__name__, result["error_list"])
    assert len(sim.SimilarityMatrix & scan & weighted.proj()) == len(sim.SimilarityMatrix.Weights & scan)
    assert len(sim.AveragedSimilarity & group & weighted.proj()) == len(weighted)
    assert len(sim.SimilarityStability & group) >= 1
