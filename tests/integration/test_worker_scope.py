"""The worker account is scoped to one study (issue 25, item 4), with a real account and a real worker
process, on the configured backend (run with DJ_BACKEND=postgresql for the other): it computes its
study's Neuron rows and works their job queue, but cannot create a database, schema or table, cannot
read or delete another study's rows, and cannot delete or change its own study's manual (or computed)
rows. An account that an earlier version granted every neuralreg schema loses those rights."""
import uuid

import pytest

from neuralreg_schema import db, pipeline
from tests.helpers import cli, new_prefix, run_python

COUNT = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])["experiment"]
print(len(m.Scan()), len(m.Neuron()), len(m.Neuron.jobs.errors), len(m.OracleTrial()))
"""


def _counts(prefix):
    out = run_python(["-c", COUNT, prefix], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return tuple(map(int, out.stdout.split()[-4:]))


@pytest.fixture
def two_studies(fresh_prefix):
    other = new_prefix("o")
    try:
        for prefix, seed in ((fresh_prefix, "13"), (other, "14")):
            out = cli(prefix, "ingest", "simulated", "--profile", "tiny", "--seed", seed, timeout=600)
            assert out.returncode == 0, out.stderr[-2000:]
        declared = run_python(["-c", "import sys; from neuralreg_schema import db; db.declare_study(sys.argv[1])",
                                     fresh_prefix], timeout=300)
        assert declared.returncode == 0, declared.stderr[-2000:]
        yield fresh_prefix, other
    finally:
        pipeline.drop_all(other)


def test_the_worker_account_is_scoped_to_one_study(two_studies):
    study, other = two_studies
    target = db.configured_target()
    admin = db.admin_connection(target)
    if admin is None:
        pytest.skip(f"no administrative access to {target}")
    name, password = f"nr_w{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    pg = target.postgres
    q = (lambda n: '"' + n + '"') if pg else (lambda n: f"`{n}`")
    try:
        # an account as an earlier version made it: rights on every neuralreg schema, the other study's too
        if pg:
            db.query(admin, f'CREATE ROLE "{name}" WITH LOGIN PASSWORD %s', (password,))
            helper = db.accounts(admin)
            for schema in (f"{other}_experiment", f"{study}_experiment"):
                db.query(helper._db(), f"GRANT USAGE, CREATE ON SCHEMA {q(schema)} TO {q(name)}")
                db.query(helper._db(), f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {q(schema)} "
                                       f"TO {q(name)}")
            helper.close()
        else:
            for host in db.MYSQL_HOSTS:
                db.query(admin, "CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
                db.query(admin, "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON `neuralreg\\\\_%%`.* TO %s@%s",
                         (name, host))
        db.ensure_worker_user(admin, name, None, prefix=study)       # keep its password, re-scope its rights

        env = {"DJ_USER": name, "DJ_PASS": password}
        import os
        out = run_python(["-m", "populate.worker", "--prefix", study, "--tables", "Neuron"],
                         env={**os.environ, **env}, timeout=600)
        assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
        scans, neurons, errors, oracle = _counts(study)
        assert scans == neurons > 0 and errors == 0
        other_before = _counts(other)

        connection = db.connect(target, name, password)
        denied = "denied|must be owner"
        probes = [
            f"CREATE {'SCHEMA' if pg else 'DATABASE'} {q('neuralreg_probe' + uuid.uuid4().hex[:6])}",
            f"CREATE TABLE {q(study + '_experiment')}.{q('evil')} (x int)",
            f"SELECT COUNT(*) FROM {q(other + '_experiment')}.{q('oracle_trial')}",
            f"DELETE FROM {q(other + '_experiment')}.{q('oracle_trial')}",
            f"DELETE FROM {q(study + '_experiment')}.{q('oracle_trial')}",
            f"DELETE FROM {q(study + '_experiment')}.{q('scan')}",
            f"UPDATE {q(study + '_experiment')}.{q('scan')} SET {q('data_hash')} = 'x'",
            f"INSERT INTO {q(study + '_experiment')}.{q('image_set')} ({q('image_set')}) VALUES ('evil')",
            f"DELETE FROM {q(study + '_experiment')}.{q('__neuron__unit')}",
            f"UPDATE {q(study + '_experiment')}.{q('__neuron')} SET {q('n_constant')} = 0",
            f"DROP TABLE {q(study + '_experiment')}.{q('oracle_trial')}",
        ]
        try:
            for sql in probes:
                with pytest.raises(Exception, match=denied):
                    db.query(connection, sql)
            assert db.query(connection, f"SELECT COUNT(*) FROM {q(study + '_experiment')}.{q('oracle_trial')}")[0][0] \
                == oracle
        finally:
            connection.close()
        assert _counts(other) == other_before and _counts(study) == (scans, neurons, errors, oracle)
    finally:
        db.drop_account(admin, name)
        admin.close()
