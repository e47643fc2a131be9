"""The Sensorium 2022 reader (neuralreg_schema/compute/experiment/sensorium.py) on synthetic scans written in
the published layout (tests/sensorium_fixture.py): round trips, withheld data, malformed input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from neuralreg_schema.compute.experiment.sensorium import DATA_KINDS, SensoriumFormatError, read_sensorium
from tests.sensorium_fixture import scan_folder_name, write_sensorium_fixture, zip_folder

N_NEURONS, N_TRIALS = 12, 30 + 8 + 5 * 4     # the fixture's defaults: 30 train, 8 validation, 5 x 4 test


@pytest.fixture
def scan(tmp_path) -> Path:
    return write_sensorium_fixture(tmp_path)


def _raw(folder: Path) -> dict[str, np.ndarray]:
    """The scan's files as written, in file order (row i: data/<kind>/i.npy)."""
    raw = {name: np.load(folder / "meta" / "trials" / f"{name}.npy")
           for name in ("tiers", "frame_image_id", "trial_idx")}
    for kind in DATA_KINDS:
        raw[kind] = np.stack([np.load(folder / "data" / kind / f"{i}.npy") for i in range(len(raw["tiers"]))])
    return raw


def _recordings_equal(a, b) -> None:
    (images_a, rec_a), (images_b, rec_b) = a, b
    np.testing.assert_array_equal(images_a.image_ids, images_b.image_ids)
    np.testing.assert_array_equal(images_a.images, images_b.images)
    for name in ("unit_ids", "cell_positions", "trial_idx", "image_ids", "tiers", "responses",
                 "behavior", "pupil_center"):
        np.testing.assert_array_equal(getattr(rec_a, name), getattr(rec_b, name), err_msg=name)
    assert (rec_a.name, rec_a.notes) == (rec_b.name, rec_b.notes)


# ------------------------------------------------------------------------------------- round trips

def test_reads_the_fixture_in_trial_order(scan):
    image_set, rec = read_sensorium(scan)
    raw = _raw(scan)
    assert not np.all(np.diff(raw["trial_idx"]) > 0), "the fixture's files must not be in trial order"

    assert (image_set.name, rec.image_set, rec.source) == ("sensorium2022",) * 3
    assert (rec.animal_id, rec.session, rec.scan_idx) == (21067, 10, 18)
    assert rec.responses.shape == (N_TRIALS, N_NEURONS) and rec.responses.dtype == np.float32
    assert rec.behavior.shape == (N_TRIALS, 3) and rec.behavior.dtype == np.float32
    assert rec.pupil_center.shape == (N_TRIALS, 2) and rec.pupil_center.dtype == np.float32
    assert image_set.images.shape == (30 + 8 + 5, 36, 64) and image_set.images.dtype == np.float32
    np.testing.assert_array_equal(rec.unit_ids, np.load(scan / "meta/neurons/unit_ids.npy"))
    assert rec.cell_positions.dtype == np.float32
    np.testing.assert_allclose(rec.cell_positions, np.load(scan / "meta/neurons/cell_motor_coordinates.npy"),
                               rtol=1e-6)

    file_of_row = np.argsort(raw["trial_idx"])
    np.testing.assert_array_equal(rec.trial_idx, np.sort(raw["trial_idx"]))
    np.testing.assert_array_equal(rec.image_ids, raw["frame_image_id"][file_of_row])
    for kind in ("responses", "behavior", "pupil_center"):
        np.testing.assert_array_equal(getattr(rec, kind), raw[kind][file_of_row], err_msg=kind)
    expected_tiers = {"train": "train", "validation": "validation", "test": "oracle"}
    assert rec.tiers.tolist() == [expected_tiers[t] for t in raw["tiers"][file_of_row]]
    assert rec.notes == []


def test_images_are_4x4_block_means_of_the_full_images(scan):
    image_set, _ = read_sensorium(scan)
    raw = _raw(scan)
    assert raw["images"].shape[1:] == (1, 144, 256) and raw["images"].dtype == np.uint8
    assert set(image_set.image_ids.tolist()) == set(raw["frame_image_id"].tolist())
    position = {image_id: k for k, image_id in enumerate(image_set.image_ids)}
    for image_id, full in zip(raw["frame_image_id"], raw["images"]):
        expected = full[0].astype(np.float64).reshape(36, 4, 64, 4).mean(axis=(1, 3))
        np.testing.assert_allclose(image_set.images[position[image_id]], expected, rtol=1e-6)


def test_test_images_form_the_oracle_set_with_their_repeats(scan):
    _, rec = read_sensorium(scan)
    assert {t: int((rec.tiers == t).sum()) for t in ("train", "validation", "oracle", "withheld")} == \
        {"train": 30, "validation": 8, "oracle": 20, "withheld": 0}
    ids, counts = np.unique(rec.image_ids[rec.tiers == "oracle"], return_counts=True)
    assert len(ids) == 5 and set(counts.tolist()) == {4}


def test_zip_archives_read_like_the_folder(tmp_path):
    folder = write_sensorium_fixture(tmp_path / "folder")
    archive = write_sensorium_fixture(tmp_path / "zip", zip=True)
    assert archive.name == f"{scan_folder_name(21067, 10, 18)}.zip"
    assert not archive.with_suffix("").exists()
    flat = zip_folder(folder, tmp_path / "flat.zip", top_folder=False)
    from_folder = read_sensorium(folder)
    _recordings_equal(from_folder, read_sensorium(archive))
    _recordings_equal(from_folder, read_sensorium(str(flat)))


def test_progress_is_reported_per_trial_file(scan):
    calls = []
    read_sensorium(scan, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, N_TRIALS) for i in range(1, N_TRIALS + 1)]


# ------------------------------------------------------------------ data withheld by the publishers

def test_zero_test_responses_are_imported_as_withheld_with_a_note(tmp_path):
    _, rec = read_sensorium(write_sensorium_fixture(tmp_path, withheld_tiers=("test",)))
    assert int((rec.tiers == "withheld").sum()) == 20 and not (rec.tiers == "oracle").any()
    assert int((rec.tiers == "train").sum()) == 30
    assert len(rec.notes) == 1
    assert "'test' tier are all zero" in rec.notes[0] and "20 trials imported as 'withheld'" in rec.notes[0]
    assert "no oracle responses" in rec.notes[0]


def test_final_test_joins_the_oracle_set_unless_withheld(tmp_path):
    _, rec = read_sensorium(write_sensorium_fixture(tmp_path / "a", n_final_test=3))
    assert int((rec.tiers == "oracle").sum()) == 20 + 12 and rec.notes == []

    _, rec = read_sensorium(write_sensorium_fixture(tmp_path / "b", n_final_test=3,
                                                    withheld_tiers=("test", "final_test")))
    assert int((rec.tiers == "withheld").sum()) == 32
    assert [note.split(" tier")[0] for note in rec.notes] == \
        ["responses of the 'test'", "responses of the 'final_test'"]


def test_zero_behavior_and_pupil_center_are_noted(tmp_path):
    _, rec = read_sensorium(write_sensorium_fixture(tmp_path, withheld_behavior=True))
    assert not rec.behavior.any() and not rec.pupil_center.any()
    assert len(rec.notes) == 2
    assert rec.notes[0].startswith("behavior (data/behavior) is all zero")
    assert rec.notes[1].startswith("pupil_center (data/pupil_center) is all zero")
    assert (rec.tiers == "oracle").sum() == 20   # the responses themselves are kept


def test_hashed_trial_idx_numbers_trials_in_file_order(tmp_path):
    folder = write_sensorium_fixture(tmp_path, hashed_trial_idx=True)
    _, rec = read_sensorium(folder)
    np.testing.assert_array_equal(rec.trial_idx, np.arange(N_TRIALS))
    np.testing.assert_array_equal(rec.responses, _raw(folder)["responses"])
    assert len(rec.notes) == 1 and "hashed" in rec.notes[0]


# ------------------------------------------------------------------------------- malformed input

def _edit(folder: Path, rel: str, change) -> None:
    """Replace the array in folder/rel by change(array)."""
    np.save(folder / rel, change(np.load(folder / rel)))


def _set(index, value):
    def change(arr):
        arr = arr.copy()
        arr[index] = value
        return arr
    return change


def _retier_a_train_trial(folder: Path) -> None:
    tiers = np.load(folder / "meta/trials/tiers.npy")
    _edit(folder, "meta/trials/tiers.npy", _set(np.flatnonzero(tiers == "train")[0], "test"))


def _write(path: Path, content: bytes) -> None:
    path.write_bytes(content)


def _move(folder: Path, rel: str, new_rel: str) -> None:
    (folder / rel).rename(folder / new_rel)


def _beside(scan: Path, name: str, content: bytes | None = None) -> Path:
    """A file (or, without content, an empty folder) next to the scan, to be read instead of it."""
    path = scan.parent / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def _object_array(arr):
    return np.array(arr.tolist(), dtype=object)


MALFORMED = {
    # case: (corrupt the scan folder, returning the path to read instead of it if any; the file the
    #        error must name; the problem it must state)
    "missing path": (lambda f: f.parent / "no-such-scan", "no-such-scan", "no such folder or file"),
    "not a folder or zip": (lambda f: _beside(f, "scan.txt", b"hello"), "scan.txt",
                            "not a folder or a .zip archive"),
    "corrupt zip": (lambda f: _beside(f, "scan.zip", b"PK\x03\x04 not really a zip"), "scan.zip",
                    "corrupt or unreadable zip archive"),
    "not a scan folder": (lambda f: _beside(f, "empty"), "empty",
                          "no data/ or meta/ folder"),
    "missing data folder": (lambda f: shutil.rmtree(f / "data/behavior"), "data/behavior", "folder missing"),
    "missing tiers": (lambda f: (f / "meta/trials/tiers.npy").unlink(), "meta/trials/tiers.npy",
                      "file missing"),
    "missing unit ids": (lambda f: (f / "meta/neurons/unit_ids.npy").unlink(), "meta/neurons/unit_ids.npy",
                         "file missing"),
    "unequal file counts": (lambda f: (f / "data/responses/3.npy").unlink(), "data/responses",
                            f"{N_TRIALS - 1} files, but data/images holds {N_TRIALS}"),
    "gap in file names": (lambda f: _move(f, "data/pupil_center/3.npy", f"data/pupil_center/{N_TRIALS}.npy"),
                          "data/pupil_center/3.npy", f"0.npy..{N_TRIALS - 1}.npy without gaps"),
    "stray file": (lambda f: _write(f / "data/images/notes.txt", b""), "data/images/notes.txt",
                   "unexpected file"),
    "corrupt npy": (lambda f: _write(f / "data/behavior/2.npy", b"\x93NUMPY garbage"), "data/behavior/2.npy",
                    "cannot be read as a .npy array"),
    "pickled array": (lambda f: np.save(f / "meta/trials/trial_idx.npy",
                                        _object_array(np.load(f / "meta/trials/trial_idx.npy")), allow_pickle=True),
                      "meta/trials/trial_idx.npy", "cannot be read as a .npy array"),
    "wrong image shape": (lambda f: np.save(f / "data/images/2.npy", np.zeros((1, 143, 256), np.uint8)),
                          "data/images/2.npy", "shape (1, 143, 256), expected (1, 144, 256)"),
    "image out of range": (lambda f: np.save(f / "data/images/0.npy", np.full((1, 144, 256), 300.0, np.float32)),
                           "data/images/0.npy", "gray levels span 300.0..300.0, expected 0..255"),
    "wrong response length": (lambda f: np.save(f / "data/responses/5.npy", np.ones(N_NEURONS - 1, np.float32)),
                              "data/responses/5.npy", f"shape ({N_NEURONS - 1},), expected ({N_NEURONS},)"),
    "behavior not 3 values": (lambda f: np.save(f / "data/behavior/0.npy", np.ones(2, np.float32)),
                              "data/behavior/0.npy", "shape (2,), expected (3,)"),
    "pupil center not 2 values": (lambda f: np.save(f / "data/pupil_center/7.npy", np.ones((2, 2), np.float32)),
                                  "data/pupil_center/7.npy", "shape (2, 2), expected (2,)"),
    "NaN in a response": (lambda f: _edit(f, "data/responses/4.npy", _set(3, np.nan)), "data/responses/4.npy",
                          "contains NaN or inf (1 NaN, 0 inf values)"),
    "inf in behavior": (lambda f: _edit(f, "data/behavior/1.npy", _set(2, np.inf)), "data/behavior/1.npy",
                        "contains NaN or inf (0 NaN, 1 inf values)"),
    "tiers length mismatch": (lambda f: _edit(f, "meta/trials/tiers.npy", lambda a: a[:-1]),
                              "meta/trials/tiers.npy", f"shape ({N_TRIALS - 1},), expected ({N_TRIALS},)"),
    "unknown tier": (lambda f: _edit(f, "meta/trials/tiers.npy", _set(0, "bogus")), "meta/trials/tiers.npy",
                     "unknown tier values ['bogus']"),
    "non-integer image ids": (lambda f: _edit(f, "meta/trials/frame_image_id.npy", lambda a: a.astype(str)),
                              "meta/trials/frame_image_id.npy", "expected numbers"),
    "oracle image without repeats": (_retier_a_train_trial, "meta/trials/frame_image_id.npy",
                                     "1 'test' image(s) shown only once"),
    "duplicate trial_idx": (lambda f: _edit(f, "meta/trials/trial_idx.npy", lambda a: _set(1, a[0])(a)),
                            "meta/trials/trial_idx.npy", "duplicate trial_idx values"),
    "duplicate unit ids": (lambda f: _edit(f, "meta/neurons/unit_ids.npy", lambda a: _set(1, a[0])(a)),
                           "meta/neurons/unit_ids.npy", "duplicate unit ids"),
    "non-constant animal id": (lambda f: _edit(f, "meta/neurons/animal_ids.npy", _set(3, 99)),
                               "meta/neurons/animal_ids.npy", "2 distinct values"),
    "wrong cell coordinates": (lambda f: _edit(f, "meta/neurons/cell_motor_coordinates.npy", lambda a: a[:, :2]),
                               "meta/neurons/cell_motor_coordinates.npy", f"expected ({N_NEURONS}, 3)"),
    "folder name contradicts meta/neurons": (lambda f: f.rename(f.parent / scan_folder_name(21068, 10, 18)),
                                             "meta/neurons/animal_ids.npy",
                                             "animal id 21067 contradicts the folder name"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_scan_is_refused_naming_file_and_problem(scan, case):
    corrupt, source, problem = MALFORMED[case]
    path = corrupt(scan) or scan
    with pytest.raises(SensoriumFormatError) as caught:
        read_sensorium(path)
    assert caught.value.source.endswith(source), str(caught.value)
    assert problem in caught.value.problem, str(caught.value)
    assert str(caught.value).startswith(caught.value.source)


def test_conflicting_pixels_for_one_image_id_are_refused(scan):
    raw = _raw(scan)
    test_id = raw["frame_image_id"][raw["tiers"] == "test"][0]
    later = np.flatnonzero(raw["frame_image_id"] == test_id)[-1]
    _edit(scan, f"data/images/{later}.npy", lambda a: 255 - a)
    with pytest.raises(SensoriumFormatError, match=f"image id {test_id} .* has different pixels") as caught:
        read_sensorium(scan)
    assert caught.value.source == f"data/images/{later}.npy"


def test_errors_inside_a_zip_name_the_member(scan, tmp_path):
    _edit(scan, "data/responses/4.npy", _set(0, np.nan))
    archive = zip_folder(scan, tmp_path / "broken.zip")
    with pytest.raises(SensoriumFormatError) as caught:
        read_sensorium(archive)
    assert caught.value.source == "data/responses/4.npy"


# ---------------------------------------------------------------------- hostile or suspect input

def _zip_member_declaring(path: Path, member: str, size: int) -> None:
    """A zip whose `member` declares `size` bytes uncompressed (the data itself stays tiny)."""
    import zipfile
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo(member)
        zf.writestr(info, b"x")
    data = bytearray(path.read_bytes())
    name = member.encode()
    # patch the uncompressed size in the central directory entry of `member`
    at = data.rfind(b"PK\x01\x02" + b"")
    while at != -1:
        n = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + n] == name:
            data[at + 24:at + 28] = int(size).to_bytes(4, "little")
            break
        at = data.rfind(b"PK\x01\x02", 0, at)
    path.write_bytes(bytes(data))


def test_a_zip_member_declaring_a_huge_size_is_refused_before_reading(scan, tmp_path):
    archive = zip_folder(scan, tmp_path / "scan.zip")
    _zip_member_declaring(archive, f"{scan.name}/data/junk.bin", 2_400_000_000)
    with pytest.raises(SensoriumFormatError, match="declares 2289 MiB uncompressed"):
        read_sensorium(archive)


def test_an_npy_header_declaring_a_huge_array_is_refused_before_reading(scan):
    rel = scan / "data" / "responses" / "3.npy"
    with open(rel, "wb") as f:        # a header for 300 M float64 values, followed by a few bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (300_000_000,)})
        f.write(b"\0" * 64)
    with pytest.raises(SensoriumFormatError, match=r"data/responses/3.npy: its header declares shape \(300000000,\)"):
        read_sensorium(scan)


def test_pickled_arrays_are_refused(scan):
    np.save(scan / "meta" / "trials" / "tiers.npy", np.array([{"a": 1}] * 58, dtype=object), allow_pickle=True)
    with pytest.raises(SensoriumFormatError, match="tiers.npy: holds Python objects"):
        read_sensorium(scan)


def test_symlinks_out_of_the_scan_are_refused(scan, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    np.save(outside, np.load(scan / "data" / "responses" / "5.npy"))
    target = scan / "data" / "responses" / "5.npy"
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(SensoriumFormatError, match="5.npy: is a symbolic link to .*outside the scan folder"):
        read_sensorium(scan)
    target.unlink()
    np.save(target, np.load(outside))
    trials = scan / "meta" / "trials"
    shutil.move(str(trials), str(tmp_path / "trials"))
    trials.symlink_to(tmp_path / "trials", target_is_directory=True)
    with pytest.raises(SensoriumFormatError, match="meta/trials: is a symbolic link"):
        read_sensorium(scan)


def test_a_symlink_inside_the_scan_is_read(scan):
    target = scan / "data" / "behavior" / "7.npy"
    copy = scan / "behavior7.npy"
    shutil.move(str(target), str(copy))
    target.symlink_to(copy)
    read_sensorium(scan)


def test_symlink_members_of_a_zip_are_refused(scan, tmp_path):
    import stat
    import zipfile
    archive = zip_folder(scan, tmp_path / "scan.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo(f"{scan.name}/data/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SensoriumFormatError, match="data/link: is a symbolic link inside the zip"):
        read_sensorium(archive)


def test_an_image_of_another_resolution_is_refused(scan):
    path = scan / "data" / "images" / "9.npy"
    image = np.load(path)
    np.save(path, image[:, ::2, ::2])                      # 72 x 128 among 144 x 256
    with pytest.raises(SensoriumFormatError, match=r"images/9.npy: image of 72x128 pixels, but .* has 144x256"):
        read_sensorium(scan)


def test_images_scaled_to_0_1_are_refused(scan):
    path = scan / "data" / "images" / "4.npy"
    np.save(path, np.load(path) / 255.0)
    with pytest.raises(SensoriumFormatError, match=r"images/4.npy: gray levels within 0..1 .* looks scaled to 0..1"):
        read_sensorium(scan)
    for i in range(N_TRIALS):
        p = scan / "data" / "images" / f"{i}.npy"
        image = np.load(p)
        np.save(p, image / 255.0 if image.max() > 1 else image)
    with pytest.raises(SensoriumFormatError, match="in every image: they look scaled to 0..1"):
        read_sensorium(scan)


def test_absurd_responses_and_out_of_range_ids_are_refused(scan):
    path = scan / "data" / "responses" / "2.npy"
    good = np.load(path)
    np.save(path, np.full_like(good, 2.0 ** 62))
    with pytest.raises(SensoriumFormatError, match="responses/2.npy: a response of 4.612e\\+18 exceeds"):
        read_sensorium(scan)
    np.save(path, good)
    trial_idx = np.load(scan / "meta" / "trials" / "trial_idx.npy")
    np.save(scan / "meta" / "trials" / "trial_idx.npy", trial_idx.astype(np.int64) + 2 ** 40)
    with pytest.raises(SensoriumFormatError, match="trial_idx value .* outside the range"):
        read_sensorium(scan)
    np.save(scan / "meta" / "trials" / "trial_idx.npy", trial_idx)
    units = np.load(scan / "meta" / "neurons" / "unit_ids.npy")
    np.save(scan / "meta" / "neurons" / "unit_ids.npy", units.astype(np.int64) + 2 ** 33)
    with pytest.raises(SensoriumFormatError, match="unit_ids value .* outside the range"):
        read_sensorium(scan)
