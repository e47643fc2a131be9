"""Shared by the tests that drive real processes: run a command at the repository root with a timeout
(its output captured; on timeout its whole process group is killed, grandchildren included, and
subprocess.TimeoutExpired raised with what it printed), start a long-running one (a worker, a
server) in a process group of its own and stop that group, make a fresh schema prefix, and read the
state of a prefix's tables from outside the test process (each process binds one prefix); and
make_recording, a small hand-made recording for the ingest and worker tests."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np

from neuralreg_schema.compute.experiment.recording import ImageSet, ScanRecording

ROOT = Path(__file__).resolve().parents[1]


def new_prefix(tag: str = "x") -> str:
    """A schema prefix no other run uses: 'neuralreg_' (the application account's grants), `tag`
    (which test made it, for a reader of the server's schema list) and 10 random hex digits."""
    return f"neuralreg_{tag}{uuid.uuid4().hex[:10]}"


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process group that `proc` leads (spawn and run start one per command)."""
    with contextlib.suppress(ProcessLookupError):      # the group is gone already
        os.killpg(proc.pid, sig)


def run(cmd, *, env=None, cwd=ROOT, timeout=300, input=None) -> subprocess.CompletedProcess:
    """`cmd` (a list) in `cwd`, text output captured, `input` (text) on its stdin. Like subprocess.run,
    except that on timeout the whole process group is killed (subprocess.run kills only the child, and a
    grandchild holding the pipes open would block the test) before TimeoutExpired is raised."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.PIPE if input is not None else None, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
    except BaseException:            # interrupted: leave nothing running
        kill_group(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_python(args, env=None, timeout=300, cwd=ROOT, input=None) -> subprocess.CompletedProcess:
    """`python *args` (this interpreter) at the repository root; see run."""
    return run([sys.executable, *args], env=env, cwd=cwd, timeout=timeout, input=input)


def cli(prefix: str, *args, env=None, timeout=600, input=None) -> subprocess.CompletedProcess:
    """`neuralreg --prefix PREFIX *args` in a subprocess (`input`: what a user types); see run."""
    return run_python(["-m", "neuralreg_schema.cli", "--prefix", prefix, *args], env=env, timeout=timeout,
                      input=input)


def spawn(args, env=None, cwd=ROOT, **popen) -> subprocess.Popen:
    """Start `python *args` in a process group of its own, stdout and stderr merged into one text
    pipe (unless `popen` says otherwise); end it with stop."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, start_new_session=True, **popen)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Kill the process group of a spawned process (whatever still runs in it) and reap the process."""
    kill_group(proc)
    with contextlib.suppress(subprocess.TimeoutExpired):   # SIGKILLed: a process stuck in the kernel is left to init
        proc.wait(timeout=timeout)


class MemoryCheckpoint:
    """A trainer's Checkpoint (compute/common/training.Checkpoint) in memory; with `fail_after`, that save
    raises after storing (a worker that dies right after its checkpoint)."""

    def __init__(self, blob=None, fail_after=None):
        self.blob, self.saves, self.fail_after = blob, 0, fail_after

    def load(self):
        return self.blob

    def save(self, state):
        self.blob, self.saves = state, self.saves + 1
        if self.fail_after is not None and self.saves >= self.fail_after:
            raise RuntimeError("worker killed")


def make_recording(animal_id=1, session=1, scan_idx=1, *, image_set="toy", n_neurons=6, n_single=20,
                   n_oracle=6, n_repeats=3, seed=0):
    """A small hand-made recording: the first n_single images once, then oracle images repeated."""
    rng = np.random.default_rng(seed)
    n_images = n_single + n_oracle
    images = ImageSet(image_set, np.arange(n_images, dtype=np.int64) + 100,
                      rng.uniform(0, 255, (n_images, 36, 64)).astype(np.float32), "random test images")
    ids = np.r_[np.arange(n_single), np.repeat(np.arange(n_single, n_images), n_repeats)] + 100
    order = np.r_[np.arange(n_single), n_single + rng.permutation(n_oracle * n_repeats)]
    ids = ids[order]
    n_t = len(ids)
    tiers = np.where(np.arange(n_t) < n_single, "train", "oracle").astype("<U10")
    tiers[n_single - 3:n_single] = "validation"
    scan = ScanRecording(
        animal_id, session, scan_idx, image_set, "simulated",
        unit_ids=np.arange(n_neurons, dtype=np.int64) + 7,
        cell_positions=rng.uniform(0, 500, (n_neurons, 3)).astype(np.float32),
        trial_idx=np.arange(n_t, dtype=np.int64) * 2, image_ids=ids, tiers=tiers,
        responses=rng.poisson(3, (n_t, n_neurons)).astype(np.float32),
        behavior=rng.normal(size=(n_t, 3)).astype(np.float32),
        pupil_center=rng.normal(size=(n_t, 2)).astype(np.float32))
    return images, scan


PROBE = """
import json, sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
out = {}
for name in json.loads(sys.argv[2]):
    mod, table = name.split(".")
    t = getattr(m[mod], table)
    remaining, total = t.progress(display=False)
    out[name] = {"rows": len(t()), "remaining": remaining, "jobs": t.jobs.progress(),
                 "errors": [str(e) for e in t.jobs.errors.to_arrays("error_message")]}
pred = m["predictive"]
out["units"] = len(pred.PredictiveModel.Unit())
out["n_scans"] = len(m["experiment"].Scan())
configs = list(zip(*pred.PredictiveModelConfig.to_arrays("model_hash", "config_name")))
out["models"] = {c: len(pred.PredictiveModel & {"model_hash": h}) for h, c in configs}
out["model_errors"] = {c: len(pred.PredictiveModel.jobs.errors & {"model_hash": h}) for h, c in configs}
print(json.dumps(out, default=str))
"""


def probe(prefix, tables, env=None) -> dict:
    """{table: rows, remaining, job counts, error messages} for `tables` ('module.Class'), plus the
    PredictiveModel.Unit count ('units'), the scan count and the models and model errors per config."""
    out = run_python(["-c", PROBE, prefix, json.dumps(list(tables))], env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
