"""Leftovers and silent acceptances (issue 25, item 9), against the real database: a failed ingest
creates no schema and reports the scans it committed before failing; `neuralreg group` refuses a
malformed scan key; `neuralreg store gc` lists the store files no row references (a cascade delete
leaves them) without removing anything, and removes them only with --delete (orphans younger than
--min-age are kept)."""
import json

from neuralreg_schema import pipeline
from tests.helpers import cli, run_python
from tests.sensorium_fixture import write_sensorium_fixture

# in a process of its own (a process binds one prefix): the scan keys; with 'delete-first', delete the
# first scan with cascade; with 'load', load every remaining scan's responses from the store
SCANS = """
import json, sys
import numpy as np
from neuralreg_schema import pipeline
exp = pipeline.activate(sys.argv[1])["experiment"]
keys = exp.Scan.keys(order_by="animal_id, session, scan_idx")
if sys.argv[2] == "delete-first":
    (exp.Scan & keys[0]).delete(prompt=False, part_integrity="cascade")
    keys = keys[1:]
if sys.argv[2] == "load":
    for key in keys:
        assert np.isfinite(np.asarray((exp.Scan & key).fetch1("responses").load())).all()
print(json.dumps(keys))
"""


def scans(prefix, action="list"):
    out = run_python(["-c", SCANS, prefix, action], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_failed_ingest_creates_no_schema(fresh_prefix, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a scan")
    for paths in (["/nonexistent"], [str(text)], [str(tmp_path / "nope"), str(text)]):
        out = cli(fresh_prefix, "ingest", "sensorium", *paths, timeout=300)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert fresh_prefix not in pipeline.existing_prefixes(), paths
    good = write_sensorium_fixture(tmp_path / "good", n_train=10)
    out = cli(fresh_prefix, "ingest", "sensorium", str(good), "/nonexistent", timeout=300)
    assert out.returncode == 1 and "no such folder" in out.stderr                 # every path checked first
    assert fresh_prefix not in pipeline.existing_prefixes()


def test_ingest_good_bad_reports_the_committed_good_scan(fresh_prefix, tmp_path):
    good = write_sensorium_fixture(tmp_path / "good", n_train=10, animal_id=31001)
    bad = write_sensorium_fixture(tmp_path / "bad", n_train=10, animal_id=31002, seed=1)
    (bad / "data" / "responses" / "3.npy").write_bytes(b"\x93NUMPY garbage")
    out = cli(fresh_prefix, "ingest", "sensorium", str(good), str(bad), timeout=300)
    assert out.returncode == 1 and "data/responses/3.npy" in out.stderr, out.stderr[-2000:]
    assert "committed before the error: 1 scan(s)" in out.stdout and "31001-10-18" in out.stdout, out.stdout
    assert scans(fresh_prefix) == [{"animal_id": 31001, "session": 10, "scan_idx": 18}]


def test_group_refuses_a_malformed_scan_key(fresh_prefix):
    for text in ("91000001-1-1-99", "1-1", "x-1-1"):
        out = cli(fresh_prefix, "group", "g", "--scans", text, timeout=300)
        assert out.returncode == 1 and "ANIMAL-SESSION-SCAN" in out.stderr, (text, out.stderr[-1000:])
        assert fresh_prefix not in pipeline.existing_prefixes()


def test_store_gc_lists_orphans_and_removes_them_only_when_asked(fresh_prefix):
    out = cli(fresh_prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "3", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    out = cli(fresh_prefix, "store", "gc", timeout=300)
    assert out.returncode == 0 and "0 file(s)" in out.stdout, out.stdout + out.stderr[-2000:]
    rest = scans(fresh_prefix, "delete-first")                                     # its files stay in the store
    assert rest
    out = cli(fresh_prefix, "store", "gc", timeout=300)
    assert out.returncode == 0 and "dry run: nothing removed" in out.stdout, out.stdout + out.stderr[-2000:]
    n = int(out.stdout.split(" file(s) of prefix")[0].split()[-1])
    assert n > 0
    out = cli(fresh_prefix, "store", "gc", "--delete", timeout=300)              # all younger than an hour
    assert out.returncode == 0 and "removed 0" in out.stdout and f"kept {n}" in out.stdout, out.stdout
    out = cli(fresh_prefix, "store", "gc", "--delete", "--min-age", "0", timeout=300)
    assert out.returncode == 0 and f"removed {n}" in out.stdout, out.stdout + out.stderr[-2000:]
    out = cli(fresh_prefix, "store", "gc", timeout=300)
    assert "0 file(s)" in out.stdout, out.stdout
    assert scans(fresh_prefix, "load") == rest                                     # the others' files are intact
    out = cli(fresh_prefix, "store", "gc", "--delete", "--min-age", "-1", timeout=300)
    assert out.returncode == 1 and "--min-age" in out.stderr
