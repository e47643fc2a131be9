"""What the job administration (jobs.py) and the worker's heartbeat and watchdog (watchdog.py) both
use: the limits of a reserved job and the name a table goes by in messages. Both import it; it
imports neither (and nothing of datajoint)."""
from __future__ import annotations

DEFAULT_TIMEOUT = 24 * 3600          # s; tables set `reserve_timeout` to what their longest job needs
LEASE = 300.0                        # s without a heartbeat after which a job counts as abandoned


def table_name(table) -> str:
    """'module.Table', e.g. 'classifier.RegularizedClassifier'."""
    return f"{table.__module__.rsplit('.', 1)[-1]}.{table.__name__}"
CONNECTIONS_PER_WORKER = 2           # database connections a worker holds: its work and its heartbeat (watchdog)
