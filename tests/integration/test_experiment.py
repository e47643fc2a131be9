"""Experiment schema against the real database: ingest, Eq. 1 in Neuron, refusals leave no trace."""
import numpy as np
import pytest

from neuralreg_schema.compute.experiment import reliability
from neuralreg_schema.compute.experiment.recording import RecordingError
from tests.helpers import make_recording


def counts(exp):
    return {t.__name__: len(t()) for t in (exp.ImageSet, exp.Image, exp.Scan, exp.Scan.Unit, exp.Trial,
                                           exp.OracleTrial, exp.Neuron, exp.Neuron.Unit, exp.SimulatedUnit)}


def assert_refused(exp, images, scans, error, match):
    """The ingest raises `error` matching `match` and no table changes."""
    before = counts(exp)
    with pytest.raises(error, match=match):
        exp.ingest(images, scans)
    assert counts(exp) == before


def test_ingest_and_neuron_eq1(modules):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=101)
    keys = exp.ingest(images, [scan])
    key = keys[0]
    assert (exp.Scan & key).fetch1("n_neurons") == scan.n_neurons
    assert len(exp.Trial & key) == scan.n_trials
    assert len(exp.OracleTrial & key) == int((scan.tiers == "oracle").sum())
    stored = np.asarray((exp.Scan & key).fetch1("responses").load())
    np.testing.assert_array_equal(stored, scan.responses)
    # trial rows map back to the responses; repeats are numbered in presentation order
    rows, ids, repeats = (exp.Trial * exp.OracleTrial & key).to_arrays("row", "image_id", "repeat",
                                                                       order_by="trial_idx")
    np.testing.assert_array_equal(ids, scan.image_ids[rows])
    for image_id in np.unique(ids):
        assert sorted(repeats[ids == image_id].tolist()) == list(range((ids == image_id).sum()))
    pixels = (exp.Image & {"image_set": "toy", "image_id": 105}).fetch1("pixels")
    np.testing.assert_array_equal(pixels, images.images[5])

    exp.Neuron.populate(key, reserve_jobs=True)
    unit, w, s2, e2 = (exp.Neuron.Unit & key).to_arrays("unit_id", "snr_weight", "signal_var", "noise_var",
                                                         order_by="unit_id")
    oracle = scan.tiers == "oracle"
    direct = reliability.snr_weights(scan.responses[oracle].astype(np.float64), scan.image_ids[oracle])
    order = np.argsort(scan.unit_ids)
    np.testing.assert_array_equal(unit, scan.unit_ids[order])
    np.testing.assert_allclose(w, direct.weight[order], rtol=1e-10)
    np.testing.assert_allclose(s2, direct.signal_var[order], rtol=1e-10)
    np.testing.assert_allclose(e2, direct.noise_var[order], rtol=1e-10)


def test_ingest_is_idempotent(modules):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=102)
    assert exp.ingest(images, [scan])
    before = counts(exp)
    assert exp.ingest(images, [scan]) == []
    assert counts(exp) == before


def test_reingesting_different_data_under_the_same_key_is_refused(modules):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=109, image_set="toy4")
    exp.ingest(images, [scan])
    scan.responses = scan.responses + 1
    assert_refused(exp, images, [scan], RecordingError, "different data")


def test_image_id_reused_with_other_pixels_is_refused(modules):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=103)
    exp.ingest(images, [scan])
    images2, scan2 = make_recording(animal_id=104, seed=5)        # same ids, other pixels
    assert_refused(exp, images2, [scan2], RecordingError, "different pixels")


def test_bad_scan_in_a_batch_inserts_nothing(modules):
    exp = modules["experiment"]
    images, good = make_recording(animal_id=105, image_set="toy2")
    _, bad = make_recording(animal_id=106, image_set="toy2")
    bad.responses[3, 2] = np.nan
    assert_refused(exp, images, [good, bad], RecordingError, "NaN")


def test_failure_inside_the_transaction_rolls_back(modules, monkeypatch):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=107, image_set="toy3")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(exp, "_insert_truth", broken)
    scan.ground_truth = {}
    assert_refused(exp, images, [scan], RuntimeError, "disk full")


def test_scan_without_oracle_responses_gets_no_neuron_job(modules):
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=108)
    scan.tiers = np.where(scan.tiers == "oracle", "withheld", scan.tiers)
    scan.notes.append("test responses withheld")
    key = exp.ingest(images, [scan])[0]
    assert (exp.Scan & key).fetch1("n_oracle_images") == 0
    assert "withheld" in (exp.Scan & key).fetch1("notes")
    assert len(exp.Neuron.key_source & key) == 0


def test_a_failed_ingest_leaves_no_orphan_in_the_store(modules, monkeypatch):
    """The responses array reaches the store before the transaction fails: it is removed again, so
    repeated failures do not pile up orphans."""
    import os
    from neuralreg_schema import settings
    exp = modules["experiment"]
    images, scan = make_recording(animal_id=861, image_set="toy_orphan")
    key = {"animal_id": 861, "session": 1, "scan_idx": 1}
    folder = os.path.join(settings.configure().config.stores["main"]["location"], exp.scan_store_folder(key))

    def broken(*args, **kwargs):
        raise RuntimeError("the server refused the trials")
    monkeypatch.setattr(exp.Trial, "insert", broken)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="refused the trials"):
            exp.ingest(images, [scan])
        assert not (exp.Scan & key)
        assert not os.path.exists(folder) or not any(files for _, _, files in os.walk(folder))
    monkeypatch.undo()
    exp.ingest(images, [scan])
    assert len(exp.Scan & key) == 1 and any(files for _, _, files in os.walk(folder))
    (exp.Scan & key).delete(prompt=False)
