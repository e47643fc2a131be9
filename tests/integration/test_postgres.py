"""PostgreSQL, DataJoint 2's second official backend (DJ_BACKEND=postgresql), end to end on the local
server: `neuralreg db up` creates the application role and the pipeline's database, `db worker-user`
the least-privilege worker role; the tiny simulated experiment is ingested and Neuron populated by a
worker logged in as that role; jobs of a dead worker are reclaimed (pg_stat_activity), a live one is
kept; a TERMed worker gives its job back, counted; the worker role cannot drop or alter. Everything it creates (schemas, database, roles) carries a
unique name and is dropped afterwards. Skipped only when no PostgreSQL answers (127.0.0.1:5432, or
$NEURALREG_TEST_PG_PORT)."""
import importlib.util
import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from neuralreg_schema import db
from populate import preempt
from tests.helpers import run_python, spawn, stop
from tests.integration.test_preemption import WORKER as PREEMPTED_WORKER

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
PORT = int(os.environ.get("NEURALREG_TEST_PG_PORT", "5432"))

RESERVE_AND_EXIT = """
import sys
from neuralreg_schema import pipeline
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron
key = neuron.key_source.keys(order_by="animal_id, session, scan_idx")[0]
neuron.jobs.refresh()
assert neuron.jobs.reserve(key)
print("reserved", key, flush=True)
"""

# the watchdog's heartbeat stamps the job this process holds; a job of a gone worker elsewhere (no
# heartbeat; its connection is gone: pg_stat_activity) is reclaimed, the live one is kept
RECLAIM = """
import json, sys
from neuralreg_schema import pipeline
from populate import jobs, watchdog, worker
modules = pipeline.activate(sys.argv[1])
neuron = modules["experiment"].Neuron
dead, live = neuron.key_source.keys(order_by="animal_id, session, scan_idx")
assert neuron.jobs.reserve(live)
watchdog.Watchdog(worker.computed_tables(modules), neuron.connection, interval=3600).beat()
beat = (neuron.jobs & live).fetch1("completed_time") is not None
for key in (dead, live):
    neuron.jobs.update1({**key, "host": "elsewhere"})
mine = neuron.connection.connection_id
found = mine in jobs.live_connections(neuron.connection)
reclaimed = jobs.reclaim(worker.computed_tables(modules))
left = neuron.jobs.reserved.keys()
(neuron.jobs & live).delete_quick()
print(json.dumps({"heartbeat": beat, "found_own_connection": found, "reclaimed": reclaimed, "left": left}))
"""

COUNT = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
print(len(m["experiment"].Scan()), len(m["experiment"].Neuron()), len(m["experiment"].Neuron.jobs.errors))
"""

NOTES = """
import sys
from neuralreg_schema import pipeline
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron
for row in (neuron.jobs & "error_message LIKE 'Preempted%'").to_dicts():
    print(row["status"], row["error_message"])
"""

DROP = """
import sys
from neuralreg_schema import pipeline
pipeline.drop_all(sys.argv[1])
print("dropped")
"""


def _admin():
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 is not installed (pip install 'neuralreg[postgres]')")
    if not db.answers(db.Target(HOST, PORT), timeout=2):
        pytest.skip(f"no PostgreSQL answers at {HOST}:{PORT}")
    admin = db.admin_connection(db.Target(HOST, PORT, "postgresql", "postgres"))
    if admin is None:
        pytest.skip(f"PostgreSQL at {HOST}:{PORT} answers, but no administrative login works (DJ_ADMIN_USER)")
    return admin


@pytest.fixture
def pg(tmp_path):
    """Unique names and an isolated project home (no credentials) pointed at PostgreSQL."""
    admin = _admin()
    tag = uuid.uuid4().hex[:8]
    names = {"app": f"nrpg_{tag}", "worker": f"nrpg_{tag}_w", "database": f"nrpg_{tag}",
             "prefix": f"neuralreg_pg{tag}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "NEURALREG_"))}
    env.update(NEURALREG_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), DJ_BACKEND="postgresql",
               DJ_HOST=HOST, DJ_PORT=str(PORT), DJ_USER=names["app"], DJ_DATABASE_NAME=names["database"],
               DJ_USE_TLS="false", NEURALREG_STORE=str(tmp_path / "store"), PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1")
    try:
        yield names, env, tmp_path
    finally:
        try:
            db.query(admin, f'DROP DATABASE IF EXISTS "{names["database"]}" WITH (FORCE)')
            for role in (names["worker"], names["app"]):
                db.query(admin, f'DROP ROLE IF EXISTS "{role}"')
        finally:
            admin.close()


def _run(args, env, timeout=300):
    # the project home as working directory: DataJoint must not find this checkout's datajoint.json and .secrets
    return run_python(args, env=env, timeout=timeout, cwd=env["NEURALREG_HOME"])


def _cli(args, env, timeout=300):
    return _run(["-m", "neuralreg_schema.cli", *args], env, timeout)


def _ok(result):
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


def test_postgres_account_and_a_pipeline_slice(pg):
    names, env, home = pg
    prefix = names["prefix"]
    # a fresh server: no application role yet, so `db worker-user` says to run `db up` and creates nothing
    refused = _cli(["--prefix", prefix, "db", "worker-user", "--name", names["worker"]], env)
    assert refused.returncode == 1 and "cannot log in" in refused.stderr and "neuralreg db up" in refused.stderr, \
        refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr and not (home / ".secrets" / f"worker.{names['worker']}.password").exists()
    admin = _admin()
    try:
        assert not db.user_exists(admin, names["worker"])
    finally:
        admin.close()
    out = _ok(_cli(["db", "up"], env))
    assert "postgresql" in out and f"{names['app']}@{HOST}:{PORT}/{names['database']}" in out, out
    assert "configured server" in _ok(_cli(["db", "up"], env))          # idempotent: the account is reused
    out = _ok(_cli(["--prefix", prefix, "db", "worker-user", "--name", names["worker"]], env))
    assert names["worker"] in out
    worker_pass = (home / ".secrets" / f"worker.{names['worker']}.password").read_text().strip()
    # commands that need a study refuse a prefix without one on PostgreSQL too, and create no schema
    empty = f"{prefix}x"
    for args in (["group", "g", "--image-set", "x"], ["corruptions", "local", "--dataset", "offline"]):
        run = _cli(["--prefix", empty, *args], env)
        assert run.returncode == 1 and f"prefix {empty!r} has no schemas" in run.stderr, (args, run.stderr[-3000:])
    run = _run(["-m", "populate.worker", "--prefix", empty], env)
    assert run.returncode == 1 and f"prefix {empty!r} has no schemas" in run.stderr, run.stderr[-3000:]
    as_worker = {**env, "DJ_USER": names["worker"], "DJ_PASS": worker_pass}
    try:
        _ok(_cli(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "13"], env))
        status = _ok(_cli(["db", "status"], env))
        assert f"{prefix}_experiment" in status and "postgresql" in status
        assert f"{empty}_" not in status                                  # the refusals above created nothing

        # jobs on PostgreSQL: a job of a gone worker is reclaimed, a live worker's is kept
        assert "reserved" in _ok(_run(["-c", RESERVE_AND_EXIT, prefix], as_worker))
        found = json.loads(_ok(_run(["-c", RECLAIM, prefix], as_worker)).strip().splitlines()[-1])
        assert found["heartbeat"] and found["found_own_connection"], found
        assert found["reclaimed"] == {"experiment.Neuron": 1} and len(found["left"]) == 1, found

        # preemption on PostgreSQL: a TERMed worker gives its job back by itself, counted (populate/preempt.py)
        worker = spawn(["-c", PREEMPTED_WORKER, prefix, "make"], env=as_worker, cwd=env["NEURALREG_HOME"])
        try:
            line = ""
            while "in make" not in line:
                line = worker.stdout.readline()
                assert line or worker.poll() is None, "the worker ended before its job started"
            worker.send_signal(signal.SIGTERM)
            log = worker.communicate(timeout=120)[0]
        finally:
            stop(worker)
        assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
        assert "pending Preempted 1 time(s) (limit 10); last: SIGTERM" in _ok(_run(["-c", NOTES, prefix], env))

        # the least-privilege worker fills Neuron in the schemas the application role created
        _ok(_run(["-m", "populate.worker", "--prefix", prefix, "--tables", "Neuron"], as_worker))
        scans, neurons, errors = map(int, _ok(_run(["-c", COUNT, prefix], env)).split()[-3:])
        assert scans == 2 and neurons == 2 and errors == 0
        assert "experiment.Neuron" in _ok(_cli(["--prefix", prefix, "jobs"], env))

        target = db.Target(HOST, PORT, "postgresql", names["database"])
        connection = db.connect(target, names["worker"], worker_pass)
        try:
            for sql in (f'DROP SCHEMA "{prefix}_experiment" CASCADE',
                        f'ALTER TABLE "{prefix}_experiment"."scan" ADD COLUMN x int',
                        f'TRUNCATE "{prefix}_experiment"."scan" CASCADE'):
                with pytest.raises(Exception, match="must be owner|permission denied"):
                    db.query(connection, sql)
        finally:
            connection.close()
    finally:
        assert "dropped" in _ok(_run(["-c", DROP, prefix], env))
