"""Database bring-up with no configured server (a private local one is started), and a dead database."""
import os
import socket
import sys
from pathlib import Path

import pytest

from tests import helpers

ROOT = Path(__file__).resolve().parents[2]
NEURALREG = [sys.executable, "-m", "neuralreg_schema.cli"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, env, timeout=240):
    return helpers.run(NEURALREG + args, env=env, timeout=timeout, cwd=env["NEURALREG_HOME"])


@pytest.fixture
def isolated_env(tmp_path):
    """A project home with no credentials, pointed at a port where nothing listens, no Docker engine."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "NEURALREG_"))}
    env.update(NEURALREG_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
               DJ_HOST="127.0.0.1", DJ_PORT=str(port),
               NEURALREG_STORE=str(tmp_path / "store"), PATH="/usr/sbin:/usr/bin:/bin",
               PYTHONPATH=str(ROOT))
    return env, port, tmp_path


def test_db_up_starts_a_local_server_when_none_answers(isolated_env):
    env, port, home = isolated_env
    try:
        up = run(["db", "up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "local server" in up.stdout and f"127.0.0.1:{port}" in up.stdout
        assert (home / ".secrets" / "database.password").is_file()
        again = run(["db", "up"], env)            # idempotent: the running server is reused
        assert again.returncode == 0 and "configured server" in again.stdout, again.stdout + again.stderr
        status = run(["db", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "utf8mb4_bin" in status.stdout and "268435456" in status.stdout
        assert "local_server_pid" in status.stdout
        # a checkout without the password must not take over the existing account silently
        for copy in (home / ".secrets", home / "config" / "neuralreg" / "secrets"):
            for f in copy.iterdir():
                f.unlink()
        refused = run(["db", "up"], env)
        assert refused.returncode == 1 and "already exists" in refused.stderr, refused.stdout + refused.stderr
        reset = run(["db", "up", "--reset-password"], env)
        assert reset.returncode == 0, reset.stdout + reset.stderr
        assert run(["db", "status"], env).returncode == 0
    finally:
        down = run(["db", "down"], env)
        assert "stopped the local server" in down.stdout, down.stdout + down.stderr


def test_dead_database_gives_a_clear_error(isolated_env):
    env, port, home = isolated_env
    env.update(DJ_USER="neuralreg", DJ_PASS="whatever")
    result = run(["status"], env, timeout=60)
    assert result.returncode == 1                          # a runtime error (2 is for usage errors)
    assert f"127.0.0.1:{port}" in result.stderr and "neuralreg db up" in result.stderr
    assert "Traceback" not in result.stderr
