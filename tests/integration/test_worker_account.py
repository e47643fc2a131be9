"""The least-privilege worker account (`neuralreg db worker-user`): a real worker process logged in
with it fills a study that the application account created, and the account cannot drop a schema."""
import os
import secrets
import uuid

import pytest

from neuralreg_schema import db
from tests.helpers import run_python

pytestmark = pytest.mark.slow      # real worker processes training models: minutes, not seconds


def _run(args, env=None):
    return run_python(args, env={**os.environ, **(env or {})})


@pytest.fixture
def worker_account(modules):
    """make(prefix): a worker account of that study (its schemas and job queues declared first)."""
    admin = db.admin_connection(db.configured_target())
    if admin is None:
        pytest.skip("no administrative access to the test server to create an account")
    name, password = f"nr_w{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)

    def make(prefix):
        out = _run(["-c", "import sys; from neuralreg_schema import db; db.declare_study(sys.argv[1])", prefix])
        assert out.returncode == 0, out.stderr[-2000:]
        db.ensure_worker_user(admin, name, password, prefix=prefix)
        return name, password
    try:
        yield make
    finally:
        db.drop_account(admin, name)
        admin.close()


def test_worker_account_fills_the_graph_but_cannot_drop(worker_account, fresh_prefix):
    prefix = fresh_prefix
    out = _run(["-m", "neuralreg_schema.cli", "--prefix", prefix, "ingest", "simulated", "--profile", "tiny",
                "--seed", "13"])
    assert out.returncode == 0, out.stderr[-2000:]
    out = _run(["-m", "neuralreg_schema.cli", "--prefix", prefix, "plan-similarity", "--model", "tiny", "--no-vgg"])
    assert out.returncode == 0, out.stderr[-2000:]
    name, password = worker_account(prefix)
    env = {"DJ_USER": name, "DJ_PASS": password}
    out = _run(["-m", "populate.worker", "--prefix", prefix, "--tables", "Neuron", "PredictiveModel",
                "SimilarityMatrix", "AveragedSimilarity"], env=env)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
    probe = _run(["-c", "import sys; from neuralreg_schema import pipeline; m = pipeline.activate(sys.argv[1]); "
                  "print(len(m['predictive'].PredictiveModel()), len(m['similarity'].AveragedSimilarity()), "
                  "len(m['similarity'].AveragedSimilarity.jobs.errors))", prefix], env=env)
    assert probe.returncode == 0, probe.stderr[-2000:]
    models, averaged, errors = map(int, probe.stdout.split()[-3:])
    assert models == 2 and averaged == 5 and errors == 0
    target = db.configured_target()
    connection = db.connect(target, name, password)
    q = (lambda n: f'"{n}"') if target.postgres else (lambda n: f"`{n}`")
    try:
        with pytest.raises(Exception, match="denied|must be owner"):
            db.query(connection, f"DROP {'SCHEMA' if target.postgres else 'DATABASE'} {q(prefix + '_similarity')}")
        with pytest.raises(Exception, match="denied|must be owner"):
            db.query(connection, f"ALTER TABLE {q(prefix + '_experiment')}.{q('scan')} ADD COLUMN x int")
    finally:
        connection.close()
