"""ScanRecording / ImageSet validation: every inconsistency is refused with a message naming it."""
import numpy as np
import pytest

from neuralreg_schema.compute.experiment.recording import RecordingError
from tests.helpers import make_recording


def test_valid_recording_passes():
    images, scan = make_recording()
    images.validate()
    scan.validate(images.image_ids)


@pytest.mark.parametrize("change, message", [
    (lambda s: setattr(s, "behavior", s.behavior[:, :2]), "behavior has shape"),
    (lambda s: setattr(s, "unit_ids", np.r_[s.unit_ids[:-1], s.unit_ids[0]]), "duplicate unit ids"),
    (lambda s: s.pupil_center.__setitem__((0, 0), np.inf), "pupil_center contains NaN or inf"),
    (lambda s: setattr(s, "trial_idx", s.trial_idx[::-1].copy()), "strictly increasing"),
    (lambda s: s.tiers.__setitem__(0, "test"), "unknown tiers"),
    (lambda s: s.image_ids.__setitem__(np.flatnonzero(s.tiers == "oracle")[0], 999), "not in the image set"),
    (lambda s: s.tiers.__setitem__(np.flatnonzero(s.tiers == "oracle")[0], "train"), "also shown in train"),
    (lambda s: setattr(s, "responses", s.responses[:, 0]), "2-D"),
])
def test_inconsistent_scan_refused(change, message):
    images, scan = make_recording()
    change(scan)
    with pytest.raises(RecordingError, match=message) as err:
        scan.validate(images.image_ids)
    assert "scan 1-1-1" in str(err.value)


def test_oracle_image_shown_once_refused():
    images, scan = make_recording(n_repeats=2)
    first = np.flatnonzero(scan.tiers == "oracle")[0]
    twin = np.flatnonzero((scan.image_ids == scan.image_ids[first]) & (scan.tiers == "oracle"))[1]
    scan.tiers[twin] = "withheld"
    with pytest.raises(RecordingError, match="has no repeats"):
        scan.validate(images.image_ids)


@pytest.mark.parametrize("change, message", [
    (lambda i: setattr(i, "images", i.images[:, :, :60]), "expected \\(36, 64\\)"),
    (lambda i: setattr(i, "image_ids", np.r_[i.image_ids[:-1], i.image_ids[0]]), "duplicate image ids"),
    (lambda i: i.images.__setitem__((0, 0, 0), np.nan), "NaN"),
])
def test_inconsistent_image_set_refused(change, message):
    images, _ = make_recording()
    change(images)
    with pytest.raises(RecordingError, match=message):
        images.validate()
