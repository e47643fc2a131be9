"""A worker's heartbeat and hang detection, on a connection of its own.

Why: a database connection is not a worker. A server closes an idle connection after `wait_timeout`
(8 h by default) while the worker behind it trains a 12 h model, and a worker stuck in native code
keeps its connection alive for ever. So liveness is a heartbeat, and a hang is a watchdog's call.

Heartbeat: every `interval` seconds a thread of the worker, on its own database connection (the
worker's main connection may be busy, idle or reconnecting; PyMySQL connections are not shared
between threads), stamps the jobs this process holds:

    SELECT <primary key> FROM <job table> WHERE status = 'reserved' AND host = <this host> AND pid = <this pid>
    UPDATE <job table> SET completed_time = CURRENT_TIMESTAMP(3), connection_id = <main connection id>
    WHERE <primary key> = <each one found> AND status = 'reserved' AND host = <this host> AND pid = <this pid>

(found first, then stamped by primary key: the UPDATE locks only that row, so it cannot deadlock with
another worker finishing its own job, as an UPDATE that scans the table did with 64 workers)

The worker reserves its jobs with this stamp already set (`leases_on_reserve`: the reserving
UPDATE also writes `completed_time`), so a job has its lease from the moment it is reserved, before
the first beat. While a job is reserved its `completed_time` column (unused until the job ends, when DataJoint
writes the real completion time) is thus the worker's last sign of life, in server time, and its
`connection_id` follows the worker's reconnects. `populate.jobs.reclaim` gives a job back when its
heartbeat is older than `common.LEASE` seconds; a job that never had a heartbeat (reserved by a plain
`Table.populate(reserve_jobs=True)` in a notebook) keeps the old rule: its connection is gone or it
has been reserved longer than its table's `reserve_timeout`.

Hang: the same thread watches the job in hand. A job that ran longer than its table's
`reserve_timeout` (the longest a job of that table may take), or that logged no progress (a record of
a `neuralreg.*` logger, e.g. an epoch line) for its table's `stall_timeout` (default
`DEFAULT_STALL`), is declared hung: the thread dumps every thread's stack to stderr, records the job
as an error ("Hung: ...") on its own connection, and ends the process with status `HUNG_EXIT`.
Native code cannot be interrupted from Python, so ending the process is the only safe way out; a
supervisor (docker compose `restart:`, systemd, a shell loop) starts the next worker, and
`neuralreg jobs retry` queues the key again once its cause is known.
"""
from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import platform
import sys
import threading
import time
from typing import Callable

from populate.common import DEFAULT_TIMEOUT, runner, table_name

log = logging.getLogger("neuralreg.watchdog")

INTERVAL = 30.0              # s between heartbeats
DEFAULT_STALL = 4 * 3600.0   # s without progress after which a job counts as hung (tables may set stall_timeout)
HUNG_EXIT = 70               # exit status of a worker that ended itself on a hung job


class ProgressClock(logging.Handler):
    """Remembers when a `neuralreg.*` logger last wrote a record (any level): the job's progress."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.last = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != log.name:
            self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


def side_connection():
    """A new DataJoint connection with the configured credentials (not the shared `dj.conn()`)."""
    from neuralreg_schema import settings
    dj = settings.configure()
    c = dj.config
    return dj.Connection(c["database.host"], c["database.user"], c["database.password"], port=c["database.port"],
                         use_tls=c.get("database.use_tls"))


def reserve_with_lease(jobs, key: dict) -> bool:
    """DataJoint's `Job.reserve` (2.3: one atomic UPDATE ... WHERE status = 'pending'), with the job's
    first heartbeat stamped in the same statement, and the scheduler's name for this worker (SLURM job and
    array ids: common.runner) after the database account in `user`: a reserved job is never without its lease, so
    `jobs.reclaim` cannot mistake a job whose worker lost its connection before the first beat for a
    job reserved outside a worker (those are reclaimed when their connection is gone)."""
    import platform as _platform
    from datajoint.condition import make_condition
    from datajoint.jobs import _get_job_version
    pk = jobs._get_pk(key)
    where = make_condition(jobs, pk, set())
    qi = jobs.adapter.quote_identifier
    assignments = ", ".join(f"{qi(k)}=%s" for k in ("status", "host", "pid", "connection_id", "user", "version"))
    query = (f"UPDATE {jobs.full_table_name} SET {assignments}, {qi('reserved_time')}=CURRENT_TIMESTAMP(3), "
             f"{qi('completed_time')}=CURRENT_TIMESTAMP(3) "
             f"WHERE {where} AND {qi('status')}='pending' AND {qi('scheduled_time')} <= CURRENT_TIMESTAMP(3)")
    who = runner()                     # e.g. 'slurm job 1235 (array 1234_1)': `neuralreg jobs held` shows it
    user = jobs.connection.get_user() + (f" [{who}]" if who else "")
    args = ["reserved", _platform.node(), os.getpid(), jobs.connection.connection_id, user[:255],
            _get_job_version(jobs.connection._config)]
    return jobs.connection.query(query, args=args).rowcount == 1


@contextlib.contextmanager
def leases_on_reserve():
    """While it is open, every job this process reserves carries its lease from the start
    (reserve_with_lease). The worker holds it around its loop: a job reserved by a plain
    `populate(reserve_jobs=True)` (no watchdog beats for it) keeps DataJoint's reserve, and the rules
    for jobs without a heartbeat."""
    from datajoint.jobs import Job
    if Job.reserve is reserve_with_lease:            # nested: the outer one restores
        yield
        return
    original = Job.reserve
    Job.reserve = reserve_with_lease
    try:
        yield
    finally:
        Job.reserve = original


class Watchdog(threading.Thread):
    """Heartbeat + hang detection for the jobs this process holds (see the module docstring).

    tables: the computed tables the worker populates; main_connection: the worker's own connection
    (its current id goes into the heartbeat); connect: makes the watchdog's own connection;
    on_hung: called instead of os._exit(HUNG_EXIT) (tests)."""

    def __init__(self, tables: list, main_connection, *, interval: float = INTERVAL,
                 stall_timeout: float | None = None, job_timeout: float | None = None,
                 connect: Callable = side_connection, on_hung: Callable[[str], None] | None = None):
        super().__init__(name="neuralreg-watchdog", daemon=True)
        for name, value in (("interval", interval), ("stall_timeout", stall_timeout), ("job_timeout", job_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"watchdog {name} must be > 0 seconds, got {value}")
        self.tables, self.main = list(tables), main_connection
        # job table names resolved here, in the worker's thread: `table.jobs` may query the database on
        # the main connection, which this thread must never touch
        self.job_tables = [(table, table.jobs.full_table_name) for table in self.tables]
        self.job_keys = {id(table): list(table.jobs.primary_key) for table in self.tables}
        self.interval, self.stall_override, self.job_override = interval, stall_timeout, job_timeout
        self.connect, self.on_hung = connect, on_hung
        self.host, self.pid = platform.node(), os.getpid()
        self.clock = ProgressClock()
        self._conn = None
        self._halt = threading.Event()
        self.beats = 0

    # -- lifecycle
    def start(self) -> "Watchdog":
        logging.getLogger("neuralreg").addHandler(self.clock)
        super().start()
        return self

    def stop(self) -> None:
        self._halt.set()
        logging.getLogger("neuralreg").removeHandler(self.clock)
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:            # noqa: BLE001 - the database may be away: try again later
                log.warning("heartbeat failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, self.interval)
                self._conn = None

    # -- one beat
    def _connection(self):
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def _limits(self, table) -> tuple[float, float]:
        total = self.job_override if self.job_override is not None else float(getattr(table, "reserve_timeout",
                                                                                          DEFAULT_TIMEOUT))
        stall = self.stall_override if self.stall_override is not None else float(getattr(table, "stall_timeout",
                                                                                            DEFAULT_STALL))
        return total, stall

    def beat(self) -> None:
        """Stamp this process's reserved jobs; declare a hung one (see the module docstring)."""
        conn = self._connection()
        qi = conn.adapter.quote_identifier
        main_id = int(getattr(self.main, "connection_id", 0) or 0)
        mine = f"{qi('status')} = 'reserved' AND {qi('host')} = %s AND {qi('pid')} = %s"
        for table, name in self.job_tables:
            # This process's jobs are found by a plain read (no locks) and each is stamped by its primary
            # key, so the UPDATE locks that row alone. An UPDATE ... WHERE status/host/pid locks every row
            # it scans (InnoDB), through the status index first, while DataJoint's UPDATE of a finishing
            # job locks its row, then that index: with 64 workers the two deadlocked, and the finishing
            # worker died of it (benchmarks/scale.py, docs/cluster.md).
            pk = self.job_keys[id(table)]
            by_key = " AND ".join(f"{qi(a)} = %s" for a in pk)
            rows = conn.query(f"SELECT {', '.join(qi(a) for a in pk)}, {qi('reserved_time')}, CURRENT_TIMESTAMP(3) "
                              f"FROM {name} WHERE {mine}", args=(self.host, self.pid)).fetchall()
            for row in rows:
                key, (reserved, now) = tuple(row[:len(pk)]), row[len(pk):]
                conn.query(f"UPDATE {name} SET {qi('completed_time')} = CURRENT_TIMESTAMP(3), "
                           f"{qi('connection_id')} = %s WHERE {by_key} AND {mine}",
                           args=(main_id, *key, self.host, self.pid))
                if reserved.tzinfo is None and now.tzinfo is not None:
                    # PostgreSQL: CURRENT_TIMESTAMP is a timestamptz, the column a timestamp, both in the
                    # session's time zone
                    now = now.replace(tzinfo=None)
                running = (now - reserved).total_seconds()
                quiet = min(running, time.monotonic() - self.clock.last)
                total, stall = self._limits(table)
                if running > total or quiet > stall:
                    why = (f"ran {running:.0f} s, past the table's limit of {total:.0f} s" if running > total
                           else f"no progress for {quiet:.0f} s (limit {stall:.0f} s)")
                    self.hung(table, why)
                    return
        self.beats += 1

    def hung(self, table, why: str) -> None:
        message = (f"Hung: the watchdog of worker pid {self.pid} on {self.host} ended it: {why}. "
                   "Its stack is in the worker's log; `neuralreg jobs retry` queues the key again.")
        log.error("%s: %s", table_name(table), message)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        try:
            conn = self._connection()
            qi = conn.adapter.quote_identifier
            name = dict((id(t), n) for t, n in self.job_tables)[id(table)]
            conn.query(f"UPDATE {name} SET {qi('status')} = 'error', "
                       f"{qi('error_message')} = %s, {qi('completed_time')} = CURRENT_TIMESTAMP(3) "
                       f"WHERE {qi('status')} = 'reserved' AND {qi('host')} = %s AND {qi('pid')} = %s",
                       args=(message[:2047], self.host, self.pid))
        except Exception as exc:                 # noqa: BLE001 - the job is then reclaimed by its stale heartbeat
            log.error("could not record the hung job (%s); its heartbeat stops, so it will be reclaimed", exc)
        if self.on_hung is not None:
            self.on_hung(message)
        else:
            logging.shutdown()
            os._exit(HUNG_EXIT)
