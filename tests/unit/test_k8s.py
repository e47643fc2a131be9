"""deploy/k8s/ checked offline: every manifest against the Kubernetes OpenAPI schema of pinned versions
(`kubernetes-validate`, strict: an unknown field is an error), a broken manifest refused (so the check
can fail), and what the worker Job must say read from its YAML: a work-queue Job of N one-GPU pods, the
credentials as files from the Secret, a grace period, a podFailurePolicy that ignores disruptions, the
worker image's user and command; the Secret template holds no secret and its keys are the files the
settings read; the compose database allows the connections its workers need."""
import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# the oldest release the manifests are meant for (podFailurePolicy GA in 1.31, podReplacementPolicy
# beta and on by default since 1.29) and the newest schema the pinned kubernetes-validate carries
VERSIONS = ("1.31.0", "1.37.0")
MANIFESTS = sorted(K8S.glob("*.yaml"))


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _validate(document: dict, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    kv.validate(copy.deepcopy(document), version, strict=True)


@pytest.fixture(scope="module")
def job() -> dict:
    (document,) = _documents(K8S / "worker-job.yaml")
    return document


@pytest.fixture(scope="module")
def pod(job) -> dict:
    return job["spec"]["template"]["spec"]


def test_there_are_manifests():
    assert {p.name for p in MANIFESTS} >= {"worker-job.yaml", "secret.example.yaml", "db-service.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path, version):
    documents = _documents(path)
    assert documents, f"{path.name} holds no document"
    for document in documents:
        _validate(document, version)


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type", "missing required"])
def test_a_broken_manifest_is_refused(job, breakage):
    """The validation can fail: strict mode refuses a misspelt field, the schema a wrong type and a
    missing required field."""
    kv = pytest.importorskip("kubernetes_validate")
    broken = copy.deepcopy(job)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    if breakage == "unknown field":
        broken["spec"]["parallelizm"] = 4
    elif breakage == "wrong type":
        container["resources"]["limits"]["nvidia.com/gpu"] = {"count": 1}
    else:
        del container["name"]
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, VERSIONS[0], strict=True)


def test_validator_version_is_pinned():
    """The schemas come from the kubernetes-validate release pinned in pyproject's test extra."""
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"kubernetes-validate==[0-9.]+"', text)


def test_job_is_a_work_queue_of_gpu_workers(job, pod):
    spec = job["spec"]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    assert isinstance(spec["parallelism"], int) and spec["parallelism"] >= 1
    assert "completions" not in spec, "a work queue: the workers decide when the work is done"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "populate.worker"]
    args = container["args"]
    assert "--forever" in args and "--idle-exit" in args, "a pod ends only after the queue stayed empty"
    for kind in ("requests", "limits"):
        resources = container["resources"][kind]
        assert resources["nvidia.com/gpu"] == 1, f"one GPU per worker ({kind})"
        assert {"cpu", "memory"} <= set(resources), f"cpu and memory {kind}"
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"], \
        "the CPU limit sizes the worker's torch threads: request what it may use"


def test_job_ignores_disruptions(job, pod):
    policy = job["spec"]["podFailurePolicy"]
    assert pod["restartPolicy"] == "Never", "podFailurePolicy requires restartPolicy: Never"
    first = policy["rules"][0]
    assert first["action"] == "Ignore"
    assert first["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    for rule in policy["rules"]:
        codes = rule.get("onExitCodes")
        if rule["action"] == "FailJob" and codes:
            assert 0 not in codes["values"] and codes["operator"] == "In"
    ignored = {c for r in policy["rules"] if r["action"] == "Ignore" and "onExitCodes" in r
               for c in r["onExitCodes"]["values"]}
    try:                                                  # the worker's exit status after giving its job back
        from populate.preempt import PREEMPTED_EXIT
    except ImportError:
        PREEMPTED_EXIT = 75
    assert PREEMPTED_EXIT in ignored and 0 not in ignored
    grace = pod["terminationGracePeriodSeconds"]
    assert 30 < grace <= 600, "time to give the job in hand back after SIGTERM"
    assert job["spec"].get("podReplacementPolicy") == "Failed"


def test_credentials_are_a_private_file_from_the_secret(job, pod):
    (container,) = pod["containers"]
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"DJ_USER", "DJ_PASS", "NEURALREG_S3_SECRET_KEY", "NEURALREG_S3_ACCESS_KEY"}, \
        "credentials come from files, never from variables"
    assert not any("secretKeyRef" in str(e.get("valueFrom", "")) for e in container.get("env", []))
    assert "envFrom" not in container
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (name,) = [n for n, v in volumes.items() if "secret" in v]
    secret = volumes[name]["secret"]
    assert secret["defaultMode"] == 0o400, "0400: only the worker reads it"
    (template,) = _documents(K8S / "secret.example.yaml")
    assert secret["secretName"] == template["metadata"]["name"]
    assert mounts[name]["readOnly"] is True
    # where neuralreg_schema/settings.py reads one value per file: $NEURALREG_HOME/.secrets of the image
    home = re.search(r"NEURALREG_HOME=(\S+)", (ROOT / "docker" / "worker.Dockerfile").read_text()).group(1)
    assert mounts[name]["mountPath"] == f"{home}/.secrets"
    security = pod["securityContext"]
    user = re.search(r"useradd .*--uid (\d+)", (ROOT / "docker" / "worker.Dockerfile").read_text()).group(1)
    assert security["runAsUser"] == int(user) and security["runAsNonRoot"] is True
    assert security["fsGroup"] == security["runAsGroup"], "the group that may read the credentials"


def test_secret_template_holds_no_secret_and_names_the_settings_files():
    (template,) = _documents(K8S / "secret.example.yaml")
    assert template["kind"] == "Secret" and "data" not in template
    values = template["stringData"]
    assert {"database.user", "database.password"} <= set(values)
    assert set(values) <= {"database.user", "database.password", "stores.main.access_key",
                           "stores.main.secret_key"}, "keys are the file names settings.py reads"
    for key, value in values.items():
        if key != "database.user":
            assert value.startswith("REPLACE-WITH-"), f"{key}: a placeholder, never a real secret"


def test_mounted_secret_is_what_the_settings_read(tmp_path, monkeypatch):
    """The Secret as the kubelet lays it out (each key a symlink into a ..data folder, mode 0400) at
    $NEURALREG_HOME/.secrets: the settings read every value from it and leave the files alone."""
    from neuralreg_schema import settings
    (template,) = _documents(K8S / "secret.example.yaml")
    home = tmp_path / "app"
    data = home / ".secrets" / "..2026_01_01_00_00_00.000000000"
    data.mkdir(parents=True)
    (home / ".secrets" / "..data").symlink_to(data.name)
    for key, value in template["stringData"].items():
        (data / key).write_text(value)
        (data / key).chmod(0o400)
        (home / ".secrets" / key).symlink_to(f"..data/{key}")
    monkeypatch.setenv("NEURALREG_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("NEURALREG_SECRETS", raising=False)     # a folder named for the process comes first
    for key, value in template["stringData"].items():
        assert settings.read_secret(key) == value
        assert (data / key).stat().st_mode & 0o777 == 0o400


def test_compose_database_allows_the_workers_connections():
    """docker-compose.yml's database: max_connections for its intended workers, 2 connections each."""
    from populate.common import CONNECTIONS_PER_WORKER
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flags = " ".join(compose["services"]["db"]["command"])
    found = re.search(r"--max-connections=(\d+)", flags)
    assert found, "the compose database sets max_connections"
    assert int(found.group(1)) >= CONNECTIONS_PER_WORKER * 200 + 50
