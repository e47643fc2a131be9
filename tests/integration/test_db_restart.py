"""Database faults with real worker processes (`python -m populate.worker`) on the tiny simulated
study (2 scans x 40 neurons, a 'slow' PredictiveModel config of a few seconds per model):

- the database server (a dedicated MariaDB the test starts on its own free port and data folder)
  is stopped with SIGTERM and started again while a PredictiveModel trains: DataJoint reconnects,
  the model is inserted, and the jobs reserved after the restart name a live connection;
- the server stays down past the end of that training: the insert cannot happen, the worker waits
  for the server with backoff (it used to die here with "Can't connect to MySQL server"), gives the
  interrupted job back and computes it again;
- a job whose input is bad (a config whose training diverges) records its error and the worker
  computes every other key (on the shared test server, like test_faults.py).

Each ends with every table complete, no errors (except the bad job's), nothing reserved and no
partial result: PredictiveModel.Unit rows == 40 x PredictiveModel rows.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from neuralreg_schema import db
from tests.helpers import new_prefix, probe, run_python, spawn
from tests.helpers import stop as stop_group

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds

TABLES = ("experiment.Neuron", "predictive.PredictiveModel", "similarity.SimilarityMatrix",
          "similarity.AveragedSimilarity", "similarity.SimilarityStability")
EPOCHS = 40                  # the slow config: about 0.1 s per epoch on the tiny profile (2 CPU cores)

PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
key = m["predictive"].PredictiveModelConfig.add("tiny", name=sys.argv[2], max_epochs=%d, patience=%d,
                                                eval_batch_size=250 + int(sys.argv[3]))   # a new config
m["similarity"].SimilarityConfig.add_standard(key, vgg=False)
""" % (EPOCHS, EPOCHS)

BAD_PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
good = m["predictive"].PredictiveModelConfig.add("tiny", name="good", max_epochs=5)
m["predictive"].PredictiveModelConfig.add("tiny", name="diverges", lr=1e30)   # NaN loss: TrainingError
m["similarity"].SimilarityConfig.add_standard(good, vgg=False)
"""


# ------------------------------------------------------------------ a dedicated database server

def _installer():
    return shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A private MariaDB on 127.0.0.1:port, data in base/data, started and stopped by this test."""

    def __init__(self, base: Path, port: int):
        self.base, self.port, self.target = base, port, db.Target("127.0.0.1", port)
        self.password = uuid.uuid4().hex

    def start(self):
        self.sock = db.start_local_server(self.base / "data", self.port, say=lambda message: None)

    def pid(self):
        pidfile = self.base / "mysqld.pid"
        return int(pidfile.read_text().strip()) if pidfile.is_file() else None

    def stop(self, timeout=60.0):
        """SIGTERM, and wait until the process is gone (db.stop_local_server reaps it: it is our child)."""
        pid = self.pid()
        assert pid is not None, "the test server wrote no pid file"
        db.stop_local_server(self.base, timeout=timeout)
        assert not _alive(pid), f"the test server (pid {pid}) did not stop within {timeout} s"
        assert not db.answers(self.target)

    def kill(self):
        pid = self.pid()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def admin(self):
        for user in dict.fromkeys((getpass.getuser(), "root")):    # socket authentication
            try:
                return db.connect(self.target, user, unix_socket=str(self.sock))
            except Exception:      # noqa: BLE001 - try the next
                continue
        return db.connect(self.target, "root")                    # root without password over TCP

    def login(self):
        return db.connect(self.target, db.APP_USER, self.password)

    def env(self, store: Path) -> dict:
        # a MariaDB server, whatever backend the suite runs against (DJ_BACKEND=postgresql)
        base = {k: v for k, v in os.environ.items() if k not in ("DJ_DATABASE_NAME", "DJ_USE_TLS")}
        return dict(base, DJ_BACKEND="mysql", DJ_HOST="127.0.0.1", DJ_PORT=str(self.port), DJ_USER=db.APP_USER,
                    DJ_PASS=self.password, NEURALREG_STORE=str(store), OMP_NUM_THREADS="1")


def _alive(pid: int) -> bool:
    return not db.process_gone(pid)


@pytest.fixture(scope="module")
def server():
    """A dedicated server with the application user (SCHEMA_PATTERN grants, as in production)."""
    if not db.find_server_binary() or not _installer():
        pytest.skip("needs a MariaDB server binary (mariadbd) and mariadb-install-db on PATH or in /usr/sbin")
    base = Path(tempfile.mkdtemp(prefix="neuralreg-dbrestart-"))
    srv = Server(base, _free_port())
    try:
        srv.start()
        admin = srv.admin()
        try:
            db.ensure_app_user(admin, db.APP_USER, srv.password)
        finally:
            admin.close()
        srv.login().close()
        yield srv
    finally:
        db.stop_local_server(base, timeout=30)      # SIGTERM and wait (no-op when it is not running) ...
        srv.kill()                                  # ... then SIGKILL whatever did not stop
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ workers and probes

def _run(args, env=None):
    return run_python(args, env)


def _probe(prefix, env=None):
    return probe(prefix, TABLES, env)


class Worker:
    """`python -m populate.worker` with its output collected line by line as it runs."""

    def __init__(self, prefix, env, *extra):
        self.lines = []
        # only the tables checked here: stages added later (classifier, ...) are not this test's work
        self.proc = spawn(["-m", "populate.worker", "--prefix", prefix, "--tables", *TABLES, *extra], env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def log(self):
        return "".join(self.lines)

    def wait_for(self, text, timeout=90.0, since=0):
        """Until a line holds `text` (or one of a tuple of texts); returns the number of lines read."""
        texts = (text,) if isinstance(text, str) else tuple(text)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(t in line for line in self.lines[since:] for t in texts):
                return len(self.lines)
            assert self.proc.poll() is None, f"the worker exited ({self.proc.returncode}) before {text!r}:\n" \
                                             f"{self.log[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the worker's log within {timeout} s:\n{self.log[-3000:]}")

    def finish(self, timeout=150.0):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(self.proc)
            raise AssertionError(f"the worker did not finish within {timeout} s:\n{self.log[-3000:]}")
        self._reader.join(timeout=10)
        return self.proc.returncode

    def stop(self):
        stop_group(self.proc)


def _assert_complete(state, models):
    for name in TABLES:
        assert state[name]["remaining"] == 0 and state[name]["rows"] > 0, (name, state[name])
        assert state[name]["jobs"]["reserved"] == 0 and not state[name]["errors"], (name, state[name])
    assert state["predictive.PredictiveModel"]["rows"] == 2 * models                # tiny: 2 scans per config
    assert state["units"] == state["predictive.PredictiveModel"]["rows"] * 40        # tiny: 40 neurons per scan


@pytest.fixture(scope="module")
def study(server, tmp_path_factory):
    """One prefix on the dedicated server with the tiny experiment; each test adds its own slow
    config (another evaluation batch size: the same training, new content), so its models are new
    work. The server (and so the schemas) goes at the end."""
    prefix = new_prefix("r")
    env = server.env(tmp_path_factory.mktemp("store"))
    out = _run(["-m", "neuralreg_schema.cli", "--prefix", prefix, "ingest", "simulated", "--profile", "tiny",
                "--seed", "7"], env)
    assert out.returncode == 0, out.stderr[-2000:]
    return {"prefix": prefix, "env": env, "configs": 0}


def _add_slow_config(study):
    study["configs"] += 1
    out = _run(["-c", PLAN, study["prefix"], f"slow{study['configs']}", str(study["configs"])], study["env"])
    assert out.returncode == 0, out.stderr[-2000:]
    return study["prefix"], study["env"]


def _reserved_model_jobs(server, prefix):
    """(connection_id of each reserved PredictiveModel job, ids of the live connections)."""
    connection = server.login()
    try:
        rows = db.query(connection, f"SELECT connection_id FROM `{prefix}_predictive`.`~~predictive_model` "
                                     "WHERE status = 'reserved'")
        live = {int(r[0]) for r in db.query(connection, "SELECT ID FROM information_schema.PROCESSLIST")}
    finally:
        connection.close()
    return [int(r[0]) for r in rows], live


# ------------------------------------------------------------------ the tests

def test_server_restart_while_a_model_trains(server, study):
    prefix, env = _add_slow_config(study)
    worker = Worker(prefix, env)
    try:
        worker.wait_for(f"epoch 3/{EPOCHS} ")                   # the first model is training, no transaction open
        server.stop()
        server.start()
        assert worker.proc.poll() is None, worker.log[-3000:]   # the worker trained on through the restart
        # the second model is reserved after the restart: its job must name a live connection, or
        # jobs.reclaim in any other worker would take it away while it trains
        seen = worker.wait_for(("Reconnecting to database server",      # DataJoint, at the next query
                                "reconnected to the database"))          # the worker (slow machine: server still away)
        worker.wait_for(f"epoch 3/{EPOCHS} ", since=seen)
        ids, live = _reserved_model_jobs(server, prefix)
        assert len(ids) == 1 and ids[0] in live, (ids, live)
        assert worker.finish() == 0, worker.log[-3000:]
    finally:
        worker.stop()
    _assert_complete(_probe(prefix, env), study["configs"])


def test_server_down_past_the_end_of_a_job(server, study):
    prefix, env = _add_slow_config(study)
    worker = Worker(prefix, env, "--reconnect-timeout", "120")
    try:
        worker.wait_for(f"epoch 3/{EPOCHS} ")
        server.stop()
        # training ends while the server is away: the insert fails, the worker waits for the server
        worker.wait_for(f"epoch {EPOCHS}/{EPOCHS} ")
        worker.wait_for("database unreachable")
        time.sleep(1.0)
        assert worker.proc.poll() is None, worker.log[-3000:]
        server.start()
        assert worker.finish() == 0, worker.log[-3000:]
    finally:
        worker.stop()
    log = worker.log
    assert "the database connection was lost" in log and "reconnected to the database" in log, log[-3000:]
    assert "gave back 1 job(s)" in log, log[-3000:]                # the interrupted model went back to the queue
    _assert_complete(_probe(prefix, env), study["configs"])


def test_bad_input_records_its_error_and_the_others_go_on(fresh_prefix):
    """On the shared test server: one config diverges (a NaN loss), every other key is computed."""
    prefix = fresh_prefix
    out = _run(["-m", "neuralreg_schema.cli", "--prefix", prefix, "ingest", "simulated", "--profile", "tiny",
                "--seed", "7"])
    assert out.returncode == 0, out.stderr[-2000:]
    out = _run(["-c", BAD_PLAN, prefix])
    assert out.returncode == 0, out.stderr[-2000:]
    worker = Worker(prefix, None)
    try:
        assert worker.finish() == 1, worker.log[-3000:]        # 1: jobs it ran are left in error
    finally:
        worker.stop()
    state = _probe(prefix)
    model = state["predictive.PredictiveModel"]
    assert state["model_errors"] == {"good": 0, "diverges": 2}, state
    assert len(model["errors"]) == 2 and all("TrainingError" in e for e in model["errors"]), model
    assert state["models"] == {"good": 2, "diverges": 0}, state      # a failed make leaves nothing behind
    assert model["remaining"] == 2 and model["jobs"]["reserved"] == 0, model
    assert state["units"] == 2 * 40
    for name in TABLES:
        if name != "predictive.PredictiveModel":
            assert state[name]["remaining"] == 0 and state[name]["rows"] > 0, (name, state[name])
            assert not state[name]["errors"], (name, state[name])
    assert "TrainingError" in worker.log
