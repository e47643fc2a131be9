"""docker-compose.yml structure (no Docker engine here), settings and db helpers without a server."""
import re
import socket
import stat
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services(compose):
    assert set(compose["services"]) >= {"db", "worker"}
    db = compose["services"]["db"]
    assert db["image"] == "mysql:8.4"
    flags = " ".join(db["command"])
    assert "--max-allowed-packet=268435456" in flags
    assert "--collation-server=utf8mb4_bin" in flags
    assert "--character-set-server=utf8mb4" in flags
    assert re.search(r"--wait-timeout=\d{4,}", flags) and re.search(r"--net-read-timeout=\d{3,}", flags)
    assert "healthcheck" in db and "mysqladmin" in " ".join(db["healthcheck"]["test"])
    assert all(p.startswith("127.0.0.1:") for p in db["ports"]), "the database port must bind to loopback only"
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "data must live in a named volume"


def test_compose_worker_runs_the_worker_loop_on_a_gpu(compose):
    worker = compose["services"]["worker"]
    assert worker["command"][:3] == ["python", "-m", "populate.worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert (ROOT / "populate" / "worker.py").is_file()
    assert (ROOT / worker["build"]["dockerfile"]).is_file()


def test_compose_has_no_literal_password(compose):
    def walk(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")
        else:
            yield path, str(node)
    for path, value in walk(compose):
        if re.search(r"pass|secret|_pw", path, re.I):
            assert value.startswith("${"), f"{path} holds a literal value: {value!r}"


def test_no_secrets_committed():
    cfg = (ROOT / "datajoint.json").read_text()
    assert "password" not in cfg.lower()
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".secrets/" in ignored and ".env" in ignored


def test_env_file_generated_once_and_private(tmp_path):
    from neuralreg_schema import db
    first = db.ensure_env_file(tmp_path)
    assert len(first["MYSQL_PASSWORD"]) >= 20 and first["MYSQL_PASSWORD"] != first["MYSQL_ROOT_PASSWORD"]
    assert len({first[k] for k in db.ENV_PASSWORDS}) == len(db.ENV_PASSWORDS)     # one each, the worker's too
    assert db.ensure_env_file(tmp_path) == first
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600


def test_secret_files_are_private(tmp_path, monkeypatch):
    from neuralreg_schema import settings
    monkeypatch.setenv("NEURALREG_HOME", str(tmp_path / "project"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = settings.write_secret("database.password", "s3cret")
    assert path == tmp_path / "project" / ".secrets" / "database.password"
    assert settings.read_secret("database.password") == "s3cret"
    for copy in (path, tmp_path / "config" / "neuralreg" / "secrets" / "database.password"):
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    path.unlink()                                   # another checkout: falls back to the per-user copy
    assert settings.read_secret("database.password") == "s3cret"


def test_store_location_from_env(tmp_path, monkeypatch):
    from neuralreg_schema import settings
    dj = settings.configure()
    saved = dict(dj.config.stores["main"])
    monkeypatch.setenv("NEURALREG_STORE", str(tmp_path / "objects"))
    try:
        settings.configure()
        assert dj.config.stores["main"]["location"] == str(tmp_path / "objects")
        assert (tmp_path / "objects").is_dir()
    finally:
        dj.config.stores["main"] = saved


def test_closed_port_does_not_answer():
    from neuralreg_schema import db
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not db.answers(db.Target("127.0.0.1", port), timeout=0.5)


def test_schema_prefix_validated():
    from neuralreg_schema import pipeline
    assert pipeline.schema_names("neuralreg")["experiment"] == "neuralreg_experiment"
    for bad in ("Neural", "1abc", "a-b", "x" * 60):
        with pytest.raises(ValueError):
            pipeline.schema_names(bad)


def test_cli_parser():
    from neuralreg_schema import cli
    parser = cli.build_parser()
    args = parser.parse_args(["--prefix", "neuralreg_x", "ingest", "sensorium", "a", "b.zip"])
    assert args.paths == ["a", "b.zip"] and args.func is cli.cmd_ingest
    assert parser.parse_args(["demo"]).profile == "demo"
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", "simulated", "--profile", "huge"])
