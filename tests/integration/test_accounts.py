"""`neuralreg db worker-user` on both backends, with real accounts: it refuses an account this project
did not create (it would reset its password under whoever uses it) unless --force, never touches a
server's own or an administrative account, keeps the worker's password on a rerun unless --rotate, and
tightens .secrets/ (0700, files 0600) and .env (0600) whenever it writes or reads them. Every account
carries a unique name and is dropped afterwards; PostgreSQL is skipped when none answers."""
import importlib.util
import os
import stat
import sys
import uuid
from pathlib import Path

import pytest

from neuralreg_schema import db
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]
PG_PORT = int(os.environ.get("NEURALREG_TEST_PG_PORT", "5432"))
BACKENDS = {"mysql": db.Target("127.0.0.1", 3306, "mysql"),
            "postgresql": db.Target("127.0.0.1", PG_PORT, "postgresql", "postgres")}


@pytest.fixture(params=list(BACKENDS))
def server(request, tmp_path, modules):
    """(admin connection, target, env of an isolated project home on that backend, created accounts)."""
    backend = request.param
    target = BACKENDS[backend]
    if backend == "mysql":
        target = db.configured_target() if not db.configured_target().postgres else target
    elif importlib.util.find_spec("psycopg2") is None or not db.answers(target, timeout=2):
        pytest.skip(f"no PostgreSQL at {target.host}:{target.port} (or psycopg2 missing)")
    admin = db.admin_connection(target)
    if admin is None:
        pytest.skip(f"no administrative access to {target}")
    user, password = db.app_credentials()        # `db up` gave the application account one password on both
    # ... where it brought that server up: a fresh machine's PostgreSQL has no application role yet (`db up`
    # provisions the configured backend only), so the fixture provisions it as `db up` would, and drops it after
    made_app = not db.user_exists(admin, user)
    if made_app:
        db.ensure_app_user(admin, user, password)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "NEURALREG_"))}
    env.update(NEURALREG_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), DJ_BACKEND=backend,
               DJ_HOST=target.host, DJ_PORT=str(target.port), DJ_USE_TLS="false", PYTHONPATH=str(ROOT),
               NEURALREG_STORE=str(tmp_path / "store"), DJ_USER=user, DJ_PASS=password,
               NEURALREG_PREFIX=helpers.new_prefix("a"))
    created = []
    try:
        yield admin, target, env, created
    finally:
        try:
            for name in created:
                db.drop_account(admin, name)
            helpers.run([sys.executable, "-c", "import sys; from neuralreg_schema import pipeline; "
                                               "pipeline.drop_all(sys.argv[1])", env["NEURALREG_PREFIX"]],
                        env=env, cwd=env["NEURALREG_HOME"], timeout=300)
        finally:
            try:
                if made_app:
                    db.drop_account(admin, user)
            finally:
                admin.close()


def worker_user(env, *args):
    return helpers.run([sys.executable, "-m", "neuralreg_schema.cli", "db", "worker-user", *args], env=env,
                       cwd=env["NEURALREG_HOME"], timeout=120)


def login_target(target):
    """Where a worker logs in: the pipeline's database on PostgreSQL (default 'neuralreg')."""
    return db.Target(target.host, target.port, target.backend, "neuralreg" if target.postgres else None)


def password_of(admin, target, name):
    """The account's stored password hash (the local PostgreSQL trusts 127.0.0.1, so a login does not
    prove a password there)."""
    if target.postgres:
        return db.query(admin, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,))[0][0]
    return sorted(db.query(admin, "SELECT Host, authentication_string FROM mysql.user WHERE User = %s", (name,)))


def foreign_account(admin, target, name, password, privileged=False):
    """An account made by someone else (not by this project), as a DBA would."""
    if target.postgres:
        db.query(admin, f'CREATE ROLE "{name}" WITH LOGIN PASSWORD %s' + (" CREATEDB" if privileged else ""),
                 (password,))
    else:
        for host in db.MYSQL_HOSTS:
            db.query(admin, "CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
            if privileged:
                db.query(admin, "GRANT SELECT ON *.* TO %s@%s", (name, host))


def test_an_account_not_made_here_is_refused_unless_forced(server):
    admin, target, env, created = server
    tag = uuid.uuid4().hex[:8]
    name, password = f"nr_other{tag}", f"pw-{tag}"
    foreign_account(admin, target, name, password)
    created.append(name)
    before = password_of(admin, target, name)
    out = worker_user(env, "--name", name)
    assert out.returncode == 1 and "already exists" in out.stderr and "--force" in out.stderr, out.stderr
    assert password_of(admin, target, name) == before                           # its password is untouched
    assert not (Path(env["NEURALREG_HOME"]) / ".secrets" / f"worker.{name}.password").exists()
    for reserved in ("root", "postgres", "mariadb.sys", "pg_monitor", "Root"):
        out = worker_user(env, "--name", reserved, "--force")
        assert out.returncode == 1 and "own account" in out.stderr, (reserved, out.stderr)
    boss = f"nr_boss{tag}"
    foreign_account(admin, target, boss, password, privileged=True)
    created.append(boss)
    boss_before = password_of(admin, target, boss)
    out = worker_user(env, "--name", boss, "--force")
    assert out.returncode == 1 and "administrative rights" in out.stderr, out.stderr
    assert password_of(admin, target, boss) == boss_before
    out = worker_user(env, "--name", name, "--force")                          # an explicit take-over
    assert out.returncode == 0 and "took over" in out.stdout, out.stdout + out.stderr
    assert password_of(admin, target, name) != before


def test_a_rerun_keeps_the_worker_password_unless_rotate(server):
    admin, target, env, created = server
    home = Path(env["NEURALREG_HOME"])
    name = f"nr_w{uuid.uuid4().hex[:8]}"
    created.append(name)
    out = worker_user(env, "--name", name)
    assert out.returncode == 0 and "created it" in out.stdout, out.stdout + out.stderr
    secret = home / ".secrets" / f"worker.{name}.password"
    first, hashed = secret.read_text().strip(), password_of(admin, target, name)
    assert db.can_login(login_target(target), name, first)
    out = worker_user(env, "--name", name)
    assert out.returncode == 0 and "kept its password" in out.stdout, out.stdout + out.stderr
    assert secret.read_text().strip() == first and password_of(admin, target, name) == hashed
    out = worker_user(env, "--name", name, "--rotate")
    assert out.returncode == 0, out.stdout + out.stderr
    second = secret.read_text().strip()
    assert second != first and password_of(admin, target, name) != hashed
    assert db.can_login(login_target(target), name, second)
    assert first not in out.stdout + out.stderr and second not in out.stdout + out.stderr


def test_secrets_and_env_are_tightened_whenever_written_or_read(server):
    admin, target, env, created = server
    home = Path(env["NEURALREG_HOME"])
    name = f"nr_w{uuid.uuid4().hex[:8]}"
    created.append(name)
    assert worker_user(env, "--name", name).returncode == 0
    secrets_dir = home / ".secrets"
    dotenv = home / ".env"
    dotenv.write_text("# a user's compose file\nFOO=bar\n")

    def loosen():
        os.chmod(secrets_dir, 0o755)
        for f in secrets_dir.iterdir():
            os.chmod(f, 0o644)
        os.chmod(dotenv, 0o644)

    def assert_tight():
        assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
        for f in secrets_dir.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600

    loosen()
    out = worker_user(env, "--name", name)                   # writes .secrets/ and .env
    assert out.returncode == 0, out.stdout + out.stderr
    assert_tight()
    assert "FOO=bar" in dotenv.read_text() and "NEURALREG_WORKER_PASSWORD" in dotenv.read_text()
    loosen()
    out = helpers.run([sys.executable, "-m", "neuralreg_schema.cli", "db", "status"], env=env,
                      cwd=env["NEURALREG_HOME"], timeout=120)   # reads the secrets only
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in secrets_dir.iterdir())


def test_without_a_working_application_account_nothing_is_created(server):
    """`db worker-user` declares the study's tables as the application account: where that account cannot
    log in (a server `db up` never provisioned, e.g. a fresh PostgreSQL, or a wrong DJ_USER), it says so,
    names `db up`, and creates no worker account and no secret."""
    admin, target, env, created = server
    tag = uuid.uuid4().hex[:8]
    name = f"nr_w{tag}"
    created.append(name)                                   # dropped afterwards should it exist after all
    out = worker_user({**env, "DJ_USER": f"nr_noapp{tag}"}, "--name", name)
    assert out.returncode == 1 and "cannot log in" in out.stderr and "neuralreg db up" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert not db.user_exists(admin, name)
    assert not (Path(env["NEURALREG_HOME"]) / ".secrets" / f"worker.{name}.password").exists()
