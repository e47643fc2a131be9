"""The `neuralreg` command against the database, each command in a subprocess (one prefix per
process): read-only commands create no schema and no table and name the prefixes that exist; --json
prints one parseable object with the documented keys; `populate` exits 1 when a job failed; `drop`
drops a prefix's schemas only after confirmation and nothing outside them."""
import json
import subprocess

import pytest

from tests.helpers import cli, run_python


def _schemas(connection, *prefixes) -> set:
    rows = connection.query(connection.adapter.list_schemas_sql()).fetchall()
    return {r[0] for r in rows if r[0].startswith(prefixes)}


def _tables(connection, prefix) -> set:
    rows = connection.query("SELECT table_schema, table_name FROM information_schema.tables "
                            "WHERE table_schema LIKE %s", args=(prefix + "\\_%",)).fetchall()
    return {tuple(r) for r in rows}


def _typed(prefix, *args, answer: str) -> subprocess.CompletedProcess:
    """`neuralreg --prefix PREFIX *args` with `answer` on its stdin (what a user types at the prompt)."""
    return cli(prefix, *args, input=answer, timeout=300)


def _error_line(run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("neuralreg: error:")]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    return lines[0]


READ_ONLY = (["status"], ["status", "--json"], ["jobs"], ["jobs", "--json"], ["jobs", "errors"], ["jobs", "held"],
             ["jobs", "errors", "--json"], ["report", "--out", "REPORT"])


def test_read_only_commands_create_nothing(modules, prefix, fresh_prefix, tmp_path):
    connection = modules["experiment"].schema.connection
    before, tables = _schemas(connection, fresh_prefix), _tables(connection, prefix)
    assert not before
    for args in READ_ONLY:
        args = [str(tmp_path / "report") if a == "REPORT" else a for a in args]
        run = cli(fresh_prefix, *args, timeout=300)
        assert run.returncode == 1, (args, run.stdout, run.stderr)
        message = _error_line(run)
        assert f"prefix {fresh_prefix!r} has no schemas" in message and prefix in message, message
        assert run.stdout.strip() == "" or "--json" not in args
        assert _schemas(connection, fresh_prefix) == set(), args
    assert not (tmp_path / "report").exists()
    # on an existing prefix they succeed and leave its tables (job queues included) as they were
    for args in READ_ONLY:
        args = [str(tmp_path / "report") if a == "REPORT" else a for a in args]
        run = cli(prefix, *args, timeout=300)
        assert run.returncode == 0, (args, run.stdout[-2000:], run.stderr[-3000:])
    assert _tables(connection, prefix) == tables


def test_json_output_has_the_documented_keys(modules, prefix):
    outputs = {}
    for args in (["status", "--json"], ["jobs", "--json"], ["jobs", "errors", "--json"], ["jobs", "held", "--json"]):
        run = cli(prefix, *args, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        outputs[" ".join(args[:-1])] = json.loads(run.stdout)       # stdout is the JSON object alone
    status = outputs["status"]
    assert set(status) == {"prefix", "connection", "tables"} and status["prefix"] == prefix
    names = [t["table"] for t in status["tables"]]
    assert "experiment.Scan" in names and "predictive.PredictiveModel.Unit" in names
    computed = next(t for t in status["tables"] if t["table"] == "experiment.Neuron")
    assert set(computed) == {"table", "rows", "done", "remaining", "pending", "reserved", "error", "ignore"}
    assert set(next(t for t in status["tables"] if t["table"] == "experiment.Scan")) == {"table", "rows"}
    assert computed["rows"] == len(modules["experiment"].Neuron())
    jobs = outputs["jobs"]
    assert set(jobs) == {"prefix", "tables"} and jobs["tables"]
    assert all(set(t) == {"table", "done", "remaining", "pending", "reserved", "error", "ignore", "preempted"}
               for t in jobs["tables"])
    assert set(outputs["jobs errors"]) == {"prefix", "errors"} and set(outputs["jobs held"]) == {"prefix", "held"}
    run = run_python(["-m", "neuralreg_schema.cli", "db", "status", "--json"], timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    db = json.loads(run.stdout)
    assert {"backend", "host", "port", "database", "user", "answers", "login", "local_server_pid", "docker",
            "version", "schemas"} <= set(db) and db["login"] is True
    # --prefix after the subcommand is the same command
    after = run_python(["-m", "neuralreg_schema.cli", "status", "--json", "--prefix", prefix], timeout=300)
    assert after.returncode == 0 and json.loads(after.stdout)["tables"] == status["tables"], after.stderr[-2000:]


FAILING_POPULATE = """
import sys
from neuralreg_schema import cli, pipeline
from tests.helpers import make_recording
prefix, fail = sys.argv[1], sys.argv[2] == "fail"
exp = pipeline.activate(prefix)["experiment"]
if not len(exp.Scan()):
    images, scan = make_recording(animal_id=7, image_set="toy_cli")
    exp.ingest(images, [scan])
if fail:
    def broken(self, key):
        raise ValueError("broken on purpose")
    exp.Neuron.make = broken
sys.exit(cli.main(["populate", "--prefix", prefix, "--tables", "Neuron"]))
"""


def test_populate_exits_1_when_a_job_failed(modules, fresh_prefix):
    failed = run_python(["-c", FAILING_POPULATE, fresh_prefix, "fail"], timeout=300)
    assert failed.returncode == 1, (failed.stdout[-2000:], failed.stderr[-3000:])
    assert "1 job(s) failed in this run" in failed.stderr and "broken on purpose" in failed.stderr
    again = run_python(["-c", FAILING_POPULATE, fresh_prefix, "ok"], timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]                  # the error is skipped: nothing failed now
    listed = cli(fresh_prefix, "jobs", "errors", "--json")
    assert [e["message"] for e in json.loads(listed.stdout)["errors"]] == ["ValueError: broken on purpose"]
    assert cli(fresh_prefix, "jobs", "retry").returncode == 0
    fixed = run_python(["-c", FAILING_POPULATE, fresh_prefix, "ok"], timeout=300)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    status = json.loads(cli(fresh_prefix, "status", "--json").stdout)
    neuron = next(t for t in status["tables"] if t["table"] == "experiment.Neuron")
    assert neuron["rows"] == 1 and neuron["error"] == 0 and neuron["remaining"] == 0


ACTIVATE = "import sys; from neuralreg_schema import pipeline; pipeline.activate(sys.argv[1])"


@pytest.mark.parametrize("how", ["typed", "yes"])
def test_drop_asks_and_drops_only_the_prefix(modules, fresh_prefix, how):
    connection = modules["experiment"].schema.connection
    assert run_python(["-c", ACTIVATE, fresh_prefix], timeout=300).returncode == 0
    ours = {f"{fresh_prefix}_{m}" for m in ("experiment", "predictive", "similarity", "classifier", "evaluation")}
    neighbour = f"{fresh_prefix}_notes"                               # not a pipeline schema of the prefix
    connection.query(connection.adapter.create_schema_sql(neighbour))
    try:
        assert _schemas(connection, fresh_prefix) == ours | {neighbour}
        for answer in ("", "y\n", f"{fresh_prefix}_notes\n"):        # no answer, or not the prefix: refused
            refused = _typed(fresh_prefix, "drop", answer=answer)
            assert refused.returncode == 1 and "not confirmed" in _error_line(refused)
        assert _schemas(connection, fresh_prefix) == ours | {neighbour}
        done = (cli(fresh_prefix, "drop", "--yes", timeout=300) if how == "yes"
                else _typed(fresh_prefix, "drop", answer=f"{fresh_prefix}\n"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert _schemas(connection, fresh_prefix) == {neighbour}
        assert all(name in done.stdout for name in ours) and neighbour not in done.stdout
        again = cli(fresh_prefix, "drop", "--yes")
        assert again.returncode == 1 and "has no schemas" in _error_line(again)
    finally:
        connection.query(connection.adapter.drop_schema_sql(neighbour))


INGEST_ONE = """
import sys
from neuralreg_schema import pipeline
from tests.helpers import make_recording
exp = pipeline.activate(sys.argv[1])["experiment"]
images, scan = make_recording(animal_id=8, image_set="toy_unqueued")
exp.ingest(images, [scan])
"""


def test_populate_on_a_prefix_with_nothing_ingested_or_planned_says_so(modules, fresh_prefix):
    connection = modules["experiment"].schema.connection
    run = cli(fresh_prefix, "populate", timeout=300)
    message = _error_line(run)
    assert run.returncode == 1 and "nothing to populate" in message and "nothing ingested or planned" in message
    assert f"neuralreg --prefix {fresh_prefix} ingest simulated" in message and "plan demo" in message, message
    assert _schemas(connection, fresh_prefix) == set()                     # no schema created
    # schemas without a scan or a plan: it says so, exits 0 and computes (and declares) nothing
    assert run_python(["-c", ACTIVATE, fresh_prefix], timeout=300).returncode == 0
    tables = _tables(connection, fresh_prefix)
    run = cli(fresh_prefix, "populate", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "nothing to populate" in run.stdout and "no scan is ingested and no classifier is planned" in run.stdout
    assert _tables(connection, fresh_prefix) == tables                     # not even a job queue


def test_status_and_jobs_explain_their_columns_and_name_unqueued_work(modules, fresh_prefix):
    assert run_python(["-c", INGEST_ONE, fresh_prefix], timeout=300).returncode == 0
    hint = (f"experiment.Neuron: 1 key(s) can be computed but are not queued: `neuralreg --prefix {fresh_prefix} "
            "populate`")
    for args, legend in ((["status"], "jobs: pending = queued for a worker, reserved = being computed"),
                         (["jobs"], "pending: queued for a worker; reserved: being computed")):
        run = cli(fresh_prefix, *args, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert legend in run.stdout and hint in run.stdout, run.stdout
    done = cli(fresh_prefix, "populate", "--tables", "Neuron", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for args in (["status"], ["jobs"]):
        run = cli(fresh_prefix, *args, timeout=300)
        assert run.returncode == 0 and "experiment.Neuron:" not in run.stdout, run.stdout


def test_commands_that_need_a_study_create_no_schema_on_a_prefix_without_one(modules, prefix, fresh_prefix, tmp_path):
    """The neighbours of `populate` on an empty prefix: `group` (needs scans), `corruptions import` and
    `corruptions local` (need a planned data set) and the worker's own entry `python -m populate.worker`
    (the job scripts'; one pass) refuse, naming the prefix, the first step and the prefixes that exist,
    and create no schema (they used to create the prefix's five empty schemas, then fail)."""
    from tests.unit.test_corruptions import NAMES, make_layout
    connection = modules["experiment"].schema.connection
    folder = make_layout(tmp_path / "c")                                 # a valid layout: the study is what is missing
    for args, words in ((["group", "g1", "--image-set", "x"], ["no scans to group", "ingest"]),
                        (["corruptions", "import", str(folder), "--dataset", "offline", "--corruptions", *NAMES],
                         ["no data set 'offline'", "plan"]),
                        (["corruptions", "local", "--dataset", "offline"], ["no data set 'offline'", "plan"])):
        run = cli(fresh_prefix, *args, timeout=300)
        message = _error_line(run)
        assert run.returncode == 1 and f"prefix {fresh_prefix!r} has no schemas" in message, (args, message)
        assert all(word in message for word in words) and prefix in message, (args, message)
        assert _schemas(connection, fresh_prefix) == set(), args
    run = run_python(["-m", "populate.worker", "--prefix", fresh_prefix], timeout=300)
    assert run.returncode == 1 and f"prefix {fresh_prefix!r} has no schemas" in run.stderr, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and _schemas(connection, fresh_prefix) == set()


def test_corruptions_import_and_local_through_the_command(modules, fresh_prefix, tmp_path):
    """`neuralreg corruptions import` of a folder in the published layout, and `corruptions local` (what
    the demo runs for its stand-in data set), on a planned data set: the imported set is marked
    published under its --name; the local one has nine local corruptions x 5 severities of the test
    images, is marked not published and named '<dataset>-local-c'; a second run of each is a no-op."""
    from tests.unit.test_corruptions import NAMES, make_layout
    setup = ("import sys, json\nfrom neuralreg_schema import pipeline\n"
             "c = pipeline.activate(sys.argv[1])['classifier']\nkey = c.ClassificationDataset.add('offline')\n"
             "print(json.dumps(c.ClassificationDataset.load(key).test_labels[:8].tolist()))")
    out = run_python(["-c", setup, fresh_prefix], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = make_layout(tmp_path / "c", labels=json.loads(out.stdout.strip().splitlines()[-1]))
    check = ("import sys, json\nfrom neuralreg_schema import pipeline\nm = pipeline.open_existing(sys.argv[1])\n"
             "c = m['corruptions']\nrows = c.CorruptionSet.to_dicts()\n"
             "print(json.dumps([[r['corruption_set'], bool(r['is_published']), r['n_images'], "
             "len(c.CorruptionSet.Corruption & r)] for r in rows]))")
    for attempt in range(2):
        run = cli(fresh_prefix, "corruptions", "import", str(folder), "--dataset", "offline", "--name", "tiny-c",
                  "--corruptions", *NAMES, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        run = cli(fresh_prefix, "corruptions", "local", "--dataset", "offline", timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "NOT CIFAR-10-C" in run.stdout, run.stdout[-2000:]
        out = run_python(["-c", check, fresh_prefix], timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        sets = {name: rest for name, *rest in json.loads(out.stdout.strip().splitlines()[-1])}
        assert sets["tiny-c"] == [True, 8, 3], sets
        assert set(sets) == {"tiny-c", "offline-local-c"} and sets["offline-local-c"][0] is False, sets
        assert sets["offline-local-c"][2] == 9 and sets["offline-local-c"][1] > 8, sets
