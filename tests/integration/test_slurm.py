"""The SLURM array job of `neuralreg launch slurm`, on a real single-node SLURM brought up here from
Debian's packages (slurmctld, slurmd, munge; as root, no systemd, no cgroup plugins: proctrack/linuxproc,
task/none, select/cons_tres; a slurm.conf and a munge key in a temporary folder, the daemons started by the
fixture and stopped by it by their pids). A 2-task array on a tiny study against the session's database:
every key computed exactly once, the SLURM ids shown by `neuralreg jobs held`, the logs named
%x_%A_%a. Then one task is preempted in the middle of a classifier job (`scancel --signal=TERM`): the
job goes back to the queue and is completed with no `jobs retry`, and the task requeues itself.
Skipped, with the reason, only where SLURM can neither be found nor installed (apt-get, as root)."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import cli, run, run_python

pytestmark = pytest.mark.slow      # a SLURM cluster and two workers training tiny classifiers: a few minutes

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scancel", "squeue", "scontrol")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


def _missing():
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [d for d in DAEMONS if shutil.which(d, path=path) is None]


def _install_or_skip():
    """Find SLURM, else install Debian's packages (root only); skip with the reason when neither works."""
    if not _missing():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"SLURM not found ({', '.join(_missing())} missing) and not installable here (needs root and "
                    "apt-get): `apt-get install slurmctld slurmd slurm-client munge`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or _missing():
        pytest.skip(f"SLURM not found and its install failed: {done.stderr.strip()[-500:]}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM; yields the environment its commands need (SLURM_CONF)."""
    _install_or_skip()
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs (no cgroup plugins, no systemd): run the suite as root")
    base = Path(tempfile.mkdtemp(prefix="nrslurm", dir="/tmp"))      # short: the munge socket path is limited
    for sub in ("state", "spool", "log"):
        (base / sub).mkdir()
    key = base / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    node = socket.gethostname()
    cpus = max(2, os.cpu_count() or 2)
    (base / "slurm.conf").write_text(f"""\
ClusterName=nrtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={base}/munge.sock,cred_expire=10
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=10
PlugStackConfig=/dev/null
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
    env = dict(os.environ, SLURM_CONF=str(base / "slurm.conf"))
    started = []
    try:
        for cmd, pidfile in (([_sbin("munged"), "-f", f"--key-file={key}", f"--socket={base}/munge.sock",
                               f"--pid-file={base}/munged.pid", f"--log-file={base}/log/munged.log",
                               f"--seed-file={base}/munge.seed"], "munged.pid"),
                             ([_sbin("slurmctld"), "-i", "-f", str(base / "slurm.conf")], "slurmctld.pid"),
                             ([_sbin("slurmd"), "-f", str(base / "slurm.conf")], "slurmd.pid")):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (cmd[0], done.stderr[-2000:])
            deadline = time.time() + 30
            while not (base / pidfile).exists() and time.time() < deadline:
                time.sleep(0.1)
            started.append(base / pidfile)
        deadline = time.time() + 60
        state = ""
        while time.time() < deadline and state not in ("idle", "mixed"):
            state = run(["sinfo", "-h", "-o", "%t"], env=env, timeout=30).stdout.strip()
            time.sleep(0.5)
        assert state in ("idle", "mixed"), (state, (base / "log" / "slurmd.log").read_text()[-2000:])
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True, timeout=60)
        time.sleep(1)
        for pidfile in reversed(started):           # the daemons this fixture started, by their pids
            # a daemon that never wrote its pid file, or has already exited, has nothing left to stop
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                pid = int(pidfile.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])["classifier"]
m.ClassifierPlan.add(m.ClassificationDataset.add("offline"),
                     m.ClassifierConfig.add("tiny", name="slurm", epochs=6, width=8, max_train=512),
                     m.Regularizer.add("none"), [0, 1, 2])
"""

STATE = """
import json, sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
out = {}
for name in ("experiment.Neuron", "classifier.RegularizedClassifier"):
    mod, table = name.split(".")
    t = getattr(m[mod], table)
    remaining, total = t.progress(display=False)
    out[name] = {"rows": len(t()), "remaining": remaining, "jobs": t.jobs.progress(),
                 "notes": [str(e) for e in t.jobs.to_arrays("error_message")]}
out["resumed"] = [int(r) for r in m["classifier"].RegularizedClassifier.to_arrays("resumed_from_epoch")]
print(json.dumps(out))
"""


def _state(prefix):
    out = run_python(["-c", STATE, prefix])
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _checkpoint_epoch_of(prefix, key):
    """The epoch of the classifier job's checkpoint in the store (neuralreg_schema/checkpoints.py), 0 if none."""
    from neuralreg_schema.hashing import config_hash
    from tests.integration.test_classifier_resume import _checkpoint_epoch
    folder = Path(os.environ["NEURALREG_STORE"]) / "_checkpoints" / f"{prefix}_classifier"
    found = list(folder.rglob(f"{config_hash(key)}.pt")) if folder.exists() else []
    return _checkpoint_epoch(found[0]) if found else 0


def _tasks(env, job):
    """{array task id: (SLURM job id, state)} of the array job."""
    out = run(["squeue", "-h", "-r", "-j", job, "-o", "%K %A %T"], env=env, timeout=30).stdout
    return {int(k): (a, s) for k, a, s in (line.split() for line in out.splitlines() if line.strip())}


def test_an_array_computes_every_key_once_and_a_preempted_task_gives_its_job_back(slurm, fresh_prefix, tmp_path):
    from neuralreg_schema import db
    started = time.monotonic()
    assert cli(fresh_prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "5").returncode == 0
    out = run_python(["-c", PLAN, fresh_prefix])
    assert out.returncode == 0, out.stderr[-2000:]
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    for name, value in zip(("database.user", "database.password"), db.app_credentials()):
        (secrets / name).write_text(value + "\n")
        (secrets / name).chmod(0o600)
    logs, script = tmp_path / "logs", tmp_path / "workers.sbatch"
    args = ["launch", "slurm", "--workers", "2", "--gres", "none", "--cpus", "1", "--mem", "1G", "--time", "30",
            "--grace", "10", "--idle-exit", "20", "--secrets", str(secrets), "--logs", str(logs), "--out", str(script)]
    (secrets / "database.password").chmod(0o644)                     # refused: not a 0600 file
    refused = cli(fresh_prefix, *args, env=slurm)
    assert refused.returncode == 1 and "chmod 600" in refused.stderr, refused.stderr
    (secrets / "database.password").chmod(0o600)
    out = cli(fresh_prefix, *args, "--submit", env=slurm)
    assert out.returncode == 0, out.stderr[-2000:]
    text = script.read_text()
    password = db.app_credentials()[1]
    code = [line for line in text.splitlines() if not line.startswith("# ")]          # directives and commands
    assert password not in text and not any("--export" in line for line in code) and "#SBATCH --requeue" in code
    assert "#SBATCH --signal=TERM@10" in text and "%x_%A_%a" in text
    job = out.stdout.split("submitted array job ")[1].split(":")[0].strip()

    # one task is preempted while it trains a classifier, after its first epoch's checkpoint
    deadline, victim = time.time() + 600, None
    while time.time() < deadline and victim is None:
        held = cli(fresh_prefix, "jobs", "held", "--json", env=slurm)
        for row in json.loads(held.stdout)["held"] if held.returncode == 0 else []:
            if row["table"] == "classifier.RegularizedClassifier" and f"(array {job}_" in row["user"] \
                    and _checkpoint_epoch_of(fresh_prefix, row["key"]) >= 1:
                victim = row
                break
        time.sleep(0.5)
    assert victim is not None, "no classifier job of an array task reached its first checkpoint within 600 s"
    victim_job = victim["user"].split("[slurm job ")[1].split(" ")[0]
    done = run(["scancel", "--signal=TERM", victim_job], env=slurm, timeout=30)
    assert done.returncode == 0, done.stderr

    # the job goes back, is completed without `jobs retry`, and every task ends
    deadline = time.time() + 900
    while time.time() < deadline:
        state = _state(fresh_prefix)
        tasks = _tasks(slurm, job)
        running = [t for t, (_, s) in tasks.items() if s in ("RUNNING", "COMPLETING")]
        if state["classifier.RegularizedClassifier"]["remaining"] == 0 and not running:
            break
        time.sleep(3)
    logs_text = {p.name: p.read_text() for p in logs.glob("*.log")}
    assert state["classifier.RegularizedClassifier"]["remaining"] == 0, (state, logs_text)
    assert not running, (tasks, logs_text)
    assert sorted(logs_text) == [f"nr-{fresh_prefix}_{job}_0.log", f"nr-{fresh_prefix}_{job}_1.log"], sorted(logs_text)
    victim_log = next(t for n, t in logs_text.items() if n.endswith(f"_{victim['user'].split('_')[-1].rstrip(')]')}.log"))
    assert "SIGTERM received" in victim_log and "given back to the queue" in victim_log, victim_log[-3000:]
    assert "preempted: the job went back to the queue; requeueing task" in victim_log, victim_log[-3000:]
    requeued = run(["scontrol", "show", "job", victim_job], env=slurm, timeout=30).stdout
    assert "Restarts=1" in requeued, requeued
    for name in ("experiment.Neuron", "classifier.RegularizedClassifier"):
        jobs = state[name]["jobs"]
        assert state[name]["remaining"] == 0 and jobs["error"] == 0 and jobs["reserved"] == 0, (name, state)
    assert state["classifier.RegularizedClassifier"]["rows"] == 3
    assert any(r > 0 for r in state["resumed"]), state                 # the given-back job resumed
    # exactly once: the keys each worker reports computed add up to the rows (a pass the preemption
    # interrupted reports the tables it had finished)
    made = {}
    for text in logs_text.values():
        for line in text.splitlines():
            for mark in ("pass done:", "pass interrupted:"):
                if mark not in line:
                    continue
                for table, (n, errors) in json.loads(line.split(mark, 1)[1]).items():
                    made[table] = made.get(table, 0) + n
                    assert errors == 0, line
    assert made["RegularizedClassifier"] == 3 and made["Neuron"] == state["experiment.Neuron"]["rows"], made
    print(f"SLURM test: {time.monotonic() - started:.0f} s (array {job}, preempted {victim_job})")
