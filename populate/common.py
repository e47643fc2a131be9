"""What the job administration (jobs.py) and the worker's heartbeat and watchdog (watchdog.py) both
use: the limits of a reserved job, the name a table goes by in messages and the scheduler's name for
this worker (runner). They import it; it imports none of them (and nothing of datajoint)."""
from __future__ import annotations

import os

DEFAULT_TIMEOUT = 24 * 3600          # s; tables set `reserve_timeout` to what their longest job needs
LEASE = 300.0                        # s without a heartbeat after which a job counts as abandoned


def table_name(table) -> str:
    """'module.Table', e.g. 'classifier.RegularizedClassifier'."""
    return f"{table.__module__.rsplit('.', 1)[-1]}.{table.__name__}"

CONNECTIONS_PER_WORKER = 2           # database connections a worker holds: its work and its heartbeat (watchdog)


def runner() -> str:
    """Who runs this worker beyond host and pid, as the scheduler names it: 'slurm job 1235 (array
    1234_1)' from SLURM's variables, else $NEURALREG_RUNNER (e.g. a Kubernetes pod's Job name), else ''."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        text = f"slurm job {env['SLURM_JOB_ID']}"
        if env.get("SLURM_ARRAY_JOB_ID"):
            text += f" (array {env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '?')})"
        return text
    return env.get("NEURALREG_RUNNER", "").strip()[:120]
