"""Memory before validation, and ids that must come through exactly (issue 25, items 6 and 7).

A .npy header is checked against the file that holds it (a negative dimension, a sparse or padded file
is refused, not read), and a scan's trials x units is capped from meta/neurons/unit_ids.npy and the
trial file count, before any trial file is read. The hostile scans are read in a child process under a
memory limit (resource.setrlimit: RLIMIT_AS), so a reader that reads first and checks later fails
with MemoryError (or is killed) instead of passing. Ids (unit ids, animal ids, trial_idx, image ids)
that do not convert exactly to integers are refused: uint64 beyond int64, floats beyond their exact
integer range, fractions."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from neuralreg_schema.compute.experiment import sensorium
from neuralreg_schema.compute.experiment.sensorium import SensoriumFormatError, read_sensorium
from tests.helpers import run_python
from tests.sensorium_fixture import write_sensorium_fixture, zip_folder

LIMIT = 1024 * 2 ** 20        # bytes of address space for the child: numpy and the reader fit, 2 GiB does not

READ_UNDER_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from neuralreg_schema.compute.experiment.sensorium import SensoriumFormatError, read_sensorium
try:
    read_sensorium(sys.argv[1])
except SensoriumFormatError as e:
    print("REFUSED", e, flush=True)
    sys.exit(3)
except MemoryError:
    print("MEMORYERROR", flush=True)
    sys.exit(4)
print("READ", flush=True)
"""


def read_in_child(path: Path):
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return run_python(["-c", READ_UNDER_LIMIT, str(path), str(LIMIT)], env=env, timeout=300)


def _npy_header(path: Path, shape, descr="<f4") -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})


@pytest.fixture
def scan(tmp_path) -> Path:
    return write_sensorium_fixture(tmp_path)


@pytest.mark.parametrize("shape", [(-1,), (-12,), (2, -6), (3, -1, -4)])
def test_a_negative_dimension_over_a_sparse_2gib_file_is_refused_not_read(scan, shape):
    path = scan / "data" / "responses" / "3.npy"
    _npy_header(path, shape)
    with open(path, "r+b") as f:
        f.truncate(2 * 2 ** 30)                      # sparse: 2 GiB of zeros that take no disk
    out = read_in_child(scan)
    assert out.returncode == 3, (out.stdout[-2000:], out.stderr[-2000:])
    assert "data/responses/3.npy: its header declares shape" in out.stdout and "whole numbers >= 0" in out.stdout


@pytest.mark.parametrize("extra", [1, 4096, 2 ** 30])
def test_a_file_larger_or_smaller_than_its_header_says_is_refused(scan, extra):
    path = scan / "data" / "behavior" / "1.npy"
    np.save(path, np.ones(3, np.float32))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + extra)     # padded (sparse) beyond the declared 3 values
    message = r"behavior/1.npy: .* but the file holds \d+ bytes after its header"
    with pytest.raises(SensoriumFormatError, match=message):
        read_sensorium(scan)
    if extra < 2 ** 20:                              # the same inside a zip: the member's declared size
        archive = zip_folder(scan, scan.parent / "scan.zip")
        with pytest.raises(SensoriumFormatError, match=message):
            read_sensorium(archive)
    with open(path, "r+b") as f:                     # shorter than declared: truncated
        f.truncate(path.stat().st_size - extra - 4)
    with pytest.raises(SensoriumFormatError, match="behavior/1.npy"):
        read_sensorium(scan)


def _big_scan(root: Path, n_trials: int, n_units: int, *, as_zip: bool) -> Path:
    """A scan of legal members: n_units unit ids and n_trials trials whose responses are zeros (sparse
    files in a folder; tiny deflated members in a zip)."""
    folder = write_sensorium_fixture(root, n_neurons=4, n_train=n_trials - 8 - 5 * 4)
    units = np.arange(n_units, dtype=np.int64)
    np.save(folder / "meta/neurons/unit_ids.npy", units)
    for name in ("animal_ids", "sessions", "scan_idx"):
        np.save(folder / f"meta/neurons/{name}.npy", np.full(n_units, np.load(folder / f"meta/neurons/{name}.npy")[0]))
    np.save(folder / "meta/neurons/cell_motor_coordinates.npy", np.zeros((n_units, 3), np.float32))
    for i in range(n_trials):
        path = folder / "data/responses" / f"{i}.npy"
        _npy_header(path, (n_units,))
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size + 4 * n_units)
    if not as_zip:
        return folder
    archive = zip_folder(folder, root / "big.zip")
    shutil.rmtree(folder)
    return archive


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_trials_times_units_is_capped_before_any_trial_file_is_read(tmp_path, monkeypatch, as_zip):
    n_trials, n_units = 58, 60_000
    monkeypatch.setattr(sensorium, "MAX_RESPONSE_VALUES", n_trials * n_units - 1)
    loaded = []
    original = sensorium._ScanFiles.load
    monkeypatch.setattr(sensorium._ScanFiles, "load", lambda self, rel: loaded.append(rel) or original(self, rel))
    path = _big_scan(tmp_path, n_trials, n_units, as_zip=as_zip)
    with pytest.raises(SensoriumFormatError, match=f"{n_trials} trials x {n_units} units"):
        read_sensorium(path)
    assert not any(rel.startswith("data/") for rel in loaded), loaded


@pytest.mark.slow
def test_a_scan_of_legal_members_too_big_for_memory_is_refused_under_a_memory_limit(tmp_path):
    """1200 trials x 250 000 units (a zip of about 10 MB; 1.2 GB of responses) under a 1 GiB limit."""
    path = _big_scan(tmp_path, 1200, 250_000, as_zip=True)
    assert path.stat().st_size < 50 * 2 ** 20
    out = read_in_child(path)
    assert out.returncode == 3, (out.stdout[-2000:], out.stderr[-2000:])
    assert "1200 trials x 250000 units" in out.stdout


# ------------------------------------------------------------------------------------------- ids

ID_FILES = ["meta/neurons/unit_ids.npy", "meta/trials/trial_idx.npy", "meta/trials/frame_image_id.npy",
            "meta/neurons/animal_ids.npy"]


def _bad_ids(arr: np.ndarray, kind: str) -> np.ndarray:
    if kind == "uint64 beyond int64":
        out = arr.astype(np.uint64)
        out[-1] = np.uint64(2 ** 64 - 5)
    elif kind == "float beyond int64":
        out = arr.astype(np.float64)
        out[-1] = 1e19
    elif kind == "float beyond exact":
        out = arr.astype(np.float64)
        out[-1] = 2.0 ** 60
    elif kind == "float32 beyond exact":
        out = arr.astype(np.float32)
        out[-1] = np.float32(2 ** 25 + 2)
    else:   # fraction
        out = arr.astype(np.float64)
        out[-1] = out[-1] + 0.5
    return out


@pytest.mark.parametrize("kind", ["uint64 beyond int64", "float beyond int64", "float beyond exact",
                                  "float32 beyond exact", "fraction"])
@pytest.mark.parametrize("rel", ID_FILES)
def test_ids_that_do_not_round_trip_exactly_are_refused(scan, rel, kind):
    arr = np.load(scan / rel)
    if rel.endswith("animal_ids.npy"):          # one value for every unit: change them all
        bad = _bad_ids(arr, kind)
        bad[:] = bad[-1]
    else:
        bad = _bad_ids(arr, kind)
    np.save(scan / rel, bad)
    with pytest.raises(SensoriumFormatError) as refused:
        read_sensorium(scan)
    assert refused.value.source.endswith(rel) or rel in str(refused.value), str(refused.value)


def test_uint64_and_whole_float_ids_within_range_are_read_exactly(scan):
    expected = read_sensorium(scan)[1]
    for rel in ID_FILES[:3]:
        arr = np.load(scan / rel)
        np.save(scan / rel, arr.astype(np.uint64) if rel != ID_FILES[2] else arr.astype(np.float64))
    got = read_sensorium(scan)[1]
    np.testing.assert_array_equal(got.unit_ids, expected.unit_ids)
    np.testing.assert_array_equal(got.trial_idx, expected.trial_idx)
    np.testing.assert_array_equal(got.image_ids, expected.image_ids)


@pytest.mark.parametrize("name,bad", [("unit_ids", 1.5), ("trial_idx", 2.0 ** 60), ("image_ids", float("nan")),
                                      ("animal_id", 3.5), ("unit_ids", np.uint64(2 ** 64 - 5))])
def test_a_recording_made_in_python_refuses_ids_that_are_not_exact(name, bad):
    """The same rule for a ScanRecording built in Python (tests.helpers.make_recording), whatever its
    source: ids are exact integers or the recording is refused before any insert."""
    from neuralreg_schema.compute.experiment.recording import RecordingError
    from tests.helpers import make_recording
    images, scan = make_recording()
    scan.validate(images.image_ids)
    values = np.asarray(getattr(scan, name))
    if values.ndim == 0:
        setattr(scan, name, bad)
    else:
        values = values.astype(np.asarray(bad).dtype if np.asarray(bad).dtype.kind != "u" else np.uint64)
        values[-1] = bad
        setattr(scan, name, values)
    with pytest.raises(RecordingError, match=name):
        scan.validate(images.image_ids)
