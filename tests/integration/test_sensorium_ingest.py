"""`neuralreg ingest sensorium` against the real database: folder and zip import, withheld test
responses, and malformed scans refused with a message naming the file, the database unchanged."""
import shutil

import numpy as np
import pytest

from neuralreg_schema import cli
from tests.sensorium_fixture import write_sensorium_fixture


def table_counts(exp):
    return {t.__name__: len(t()) for t in (exp.ImageSet, exp.Image, exp.Scan, exp.Scan.Unit, exp.Trial,
                                           exp.OracleTrial, exp.Neuron, exp.Neuron.Unit)}


def ingest(prefix, path, capsys):
    code = cli.main(["--prefix", prefix, "ingest", "sensorium", str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_folder_and_zip_import(modules, prefix, tmp_path, capsys):
    exp = modules["experiment"]
    folder = write_sensorium_fixture(tmp_path / "f", animal_id=31001, n_repeats=4, n_oracle=5)
    code, out, err = ingest(prefix, folder, capsys)
    assert code == 0, err
    key = {"animal_id": 31001, "session": 10, "scan_idx": 18}
    scan = (exp.Scan & key).fetch1()
    assert scan["source"] == "sensorium2022" and scan["n_oracle_images"] == 5
    assert len(exp.OracleTrial & key) == 20
    assert set((exp.Trial & key).to_arrays("tier")) == {"train", "validation", "oracle"}
    archive = write_sensorium_fixture(tmp_path / "z", animal_id=31001, zip=True)
    before = table_counts(exp)
    code, out, err = ingest(prefix, archive, capsys)
    assert code == 0 and "already ingested" in out          # the same scan from its zip: skipped
    assert table_counts(exp) == before
    exp.Neuron.populate(key, reserve_jobs=True)
    assert len(exp.Neuron.Unit & key) == scan["n_neurons"]


def test_withheld_test_responses_are_imported_as_withheld(modules, prefix, tmp_path, capsys):
    exp = modules["experiment"]
    folder = write_sensorium_fixture(tmp_path, animal_id=31002, withheld_tiers=("test",),
                                     withheld_behavior=True)
    code, out, err = ingest(prefix, folder, capsys)
    assert code == 0, err
    assert "withheld" in out and "zero" in out
    key = {"animal_id": 31002}
    assert (exp.Scan & key).fetch1("n_oracle_images") == 0
    assert len(exp.Trial & key & "tier = 'withheld'") == 20
    assert len(exp.Neuron.key_source & key) == 0


def _files(folder, kind):
    return sorted((folder / "data" / kind).glob("*.npy"), key=lambda p: int(p.stem))


def corrupt_missing_folder(folder):
    shutil.rmtree(folder / "data" / "behavior")
    return folder, "data/behavior"


def corrupt_missing_meta(folder):
    (folder / "meta" / "trials" / "tiers.npy").unlink()
    return folder, "meta/trials/tiers.npy"


def corrupt_unequal_counts(folder):
    _files(folder, "responses")[-1].unlink()
    return folder, "data/responses"


def corrupt_image_shape(folder):
    np.save(_files(folder, "images")[2], np.zeros((1, 143, 256), np.uint8))
    return folder, "data/images/2.npy"


def corrupt_response_nan(folder):
    path = _files(folder, "responses")[4]
    r = np.load(path)
    r[0] = np.nan
    np.save(path, r)
    return folder, "data/responses/4.npy"


def corrupt_behavior_inf(folder):
    path = _files(folder, "behavior")[1]
    np.save(path, np.array([1.0, np.inf, 0.0], np.float32))
    return folder, "data/behavior/1.npy"


def corrupt_tiers(folder):
    tiers = np.load(folder / "meta" / "trials" / "tiers.npy")
    tiers[0] = "bogus"
    np.save(folder / "meta" / "trials" / "tiers.npy", tiers)
    return folder, "meta/trials/tiers.npy"


def corrupt_oracle_without_repeats(folder):
    trials = folder / "meta" / "trials"
    tiers, ids = np.load(trials / "tiers.npy"), np.load(trials / "frame_image_id.npy")
    first = np.flatnonzero(tiers == "test")[0]
    ids[first] = ids.max() + 1                      # a test image shown once
    np.save(trials / "frame_image_id.npy", ids)
    return folder, "frame_image_id"


def corrupt_duplicate_units(folder):
    path = folder / "meta" / "neurons" / "unit_ids.npy"
    units = np.load(path)
    units[1] = units[0]
    np.save(path, units)
    return folder, "meta/neurons/unit_ids.npy"


def corrupt_npy(folder):
    _files(folder, "pupil_center")[3].write_bytes(b"\x93NUMPY garbage")
    return folder, "data/pupil_center/3.npy"


def corrupt_zip(folder):
    archive = folder.parent / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip")
    return archive, "broken.zip"


def missing_path(folder):
    return folder.parent / "no-such-scan", "no-such-scan"


CORRUPTIONS = [corrupt_missing_folder, corrupt_missing_meta, corrupt_unequal_counts, corrupt_image_shape,
               corrupt_response_nan, corrupt_behavior_inf, corrupt_tiers, corrupt_oracle_without_repeats,
               corrupt_duplicate_units, corrupt_npy, corrupt_zip, missing_path]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_malformed_scan_is_refused_and_nothing_inserted(modules, prefix, tmp_path, capsys, corrupt):
    exp = modules["experiment"]
    folder = write_sensorium_fixture(tmp_path, animal_id=31100)
    path, named = corrupt(folder)
    before = table_counts(exp)
    code, out, err = ingest(prefix, path, capsys)
    assert code == 1, out + err       # a runtime error (2 is for usage errors)
    message = err[err.index("neuralreg: error:"):]
    assert named in message and str(path) in message, err
    assert "Traceback" not in err
    assert table_counts(exp) == before
    assert not (exp.Scan & {"animal_id": 31100})
