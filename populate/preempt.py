"""Preemption is a normal event: a SIGTERM or SIGINT gives the worker's job back to the queue.

On preemptible partitions, spot nodes and at a SLURM time limit the scheduler sends SIGTERM and,
after a grace period, SIGKILL. DataJoint alone records a SIGTERM during a job as an error
("SystemExit: SIGTERM received") that waits for `neuralreg jobs retry`, so the errors pile up and the
study stalls. The worker instead holds a `Guard` around its loop:

- The first SIGTERM or SIGINT raises `Preempted` (a SystemExit: DataJoint re-raises it even with
  suppress_errors, and rolls back an open transaction) wherever the main thread is: inside `make`,
  between reserve and make, in a pass's bookkeeping, asleep between passes. DataJoint's own SIGTERM
  handler is kept out while the guard is open, and DataJoint's record of the error is skipped: the
  worker gives the job back itself.
- `give_back` then turns every job this process holds (`status = 'reserved'`, this host and pid)
  back to `pending`, on a new database connection (the main one may have been cut in the middle of
  a statement), with its preemption count in the job row's `error_message` (unused by DataJoint
  outside `status = 'error'`; reserving keeps it): "Preempted 2 time(s) (limit 10); last: SIGTERM to
  pid 41 on node7, slurm job 1235 (array 1234_1)". `neuralreg jobs` counts such jobs (column
  `preempted`) and `neuralreg jobs held` shows them with who holds them. The next worker resumes the
  job from its checkpoint (per-epoch for trainings, per batch for attacks: neuralreg_schema/checkpoints.py).
  A job preempted more than `max_preemptions` times becomes an error that says so ("Preempted 11
  times, more than the limit of 10 ..."), for `neuralreg jobs retry`; a completed job's row is deleted,
  count and all.
- The worker then exits with PREEMPTED_EXIT (75, EX_TEMPFAIL of sysexits.h: "temporary failure, try
  again"), also when it held no job: it stopped before its work was done. Not 0: a Kubernetes Job
  with `completions` unset counts a pod that exits 0 as the work being done and starts no new pod;
  its `podFailurePolicy` ignores exit code 75 (and the DisruptionTarget condition) so a preempted pod
  is replaced without using up `backoffLimit`. Not 143 (128+15): that is what a shell reports for a
  process killed by SIGTERM without handling it. deploy/slurm/worker.sbatch.in requeues its array
  task on 75 and ends with 0, so SLURM shows the task as requeued, not FAILED.
- A second signal while the first is handled is logged and ignored (the give-back takes
  milliseconds; the scheduler's SIGKILL stays the last word).
- Native code: Python runs a signal handler only when the main thread is back in the interpreter, so
  a signal that arrives inside a long torch kernel waits for it. The guard therefore also listens on
  the interpreter's wakeup fd (signal.set_wakeup_fd: written by the C-level handler at once, whatever
  the main thread does) from a thread of its own: when the main thread has not given its job back
  `grace` seconds after the signal, that thread gives it back on its own connection and ends the
  process with PREEMPTED_EXIT. A job whose worker is SIGKILLed before either happens stays reserved and
  is reclaimed by its heartbeat lease (populate/jobs.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import signal
import sys
import threading
import types
from typing import Callable

from populate.common import runner, table_name

log = logging.getLogger("neuralreg.preempt")

PREEMPTED_EXIT = 75          # EX_TEMPFAIL: the worker was told to stop; its job went back to the queue
MAX_PREEMPTIONS = 10         # a job given back more often than this becomes an error
GRACE = 20.0                 # s the main thread has to give its job back before the guard thread does
SIGNALS = (signal.SIGTERM, signal.SIGINT)
NOTE = "Preempted"           # how the count starts in a job's error_message
_COUNT = re.compile(r"^Preempted (\d+) time")


class Preempted(SystemExit):
    """Raised in the main thread by the first SIGTERM/SIGINT while a Guard is open."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name} received: the job goes back to the queue")
        self.signum = signum


def count(message: str | None) -> int:
    """The preemption count a job's error_message records (0 when none)."""
    match = _COUNT.match(message or "")
    return int(match.group(1)) if match else 0


class Guard:
    """Signal handling of a worker (see the module docstring); a context manager around its loop.

    tables: the computed tables it populates; connect: makes a new database connection (the give-back's);
    on_exit: called instead of os._exit(PREEMPTED_EXIT) by the guard thread (tests)."""

    def __init__(self, tables: list, *, max_preemptions: int = MAX_PREEMPTIONS, grace: float = GRACE,
                 connect: Callable | None = None, on_exit: Callable[[], None] | None = None):
        if max_preemptions < 0 or not grace > 0:
            raise ValueError(f"max_preemptions must be >= 0 and grace > 0 s, got {max_preemptions}, {grace}")
        self.tables, self.max_preemptions, self.grace = list(tables), max_preemptions, grace
        # job table names resolved now, in the main thread (table.jobs may query the main connection)
        self.job_tables = [(table_name(t), t.jobs.full_table_name) for t in self.tables]
        if connect is None:
            from populate.watchdog import side_connection
            connect = side_connection
        self.connect, self.on_exit = connect, on_exit
        self.host, self.pid, self.who = platform.node(), os.getpid(), runner()
        self.signum: int | None = None
        self.given: dict | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._saved: dict = {}
        self._pipe: tuple[int, int] | None = None

    # -- the signal
    def handler(self, signum, frame) -> None:
        if self.signum is not None:
            log.warning("%s again: already giving the job back; ignored (SIGKILL ends the worker)",
                        signal.Signals(signum).name)
            return
        self.signum = signum
        log.warning("%s received: the job in hand goes back to the queue, then the worker exits with %d",
                    signal.Signals(signum).name, PREEMPTED_EXIT)
        raise Preempted(signum)

    # -- the give-back
    def give_back(self) -> dict:
        """Every job this process holds back to pending (or to error past the limit), on a new
        connection; once per process (a second call returns the first's result). Returns {table: n}."""
        with self._lock:
            if self.given is not None:
                return self.given
            name = signal.Signals(self.signum).name if self.signum else "a signal"
            last = f"last: {name} to pid {self.pid} on {self.host}" + (f", {self.who}" if self.who else "")
            conn = self.connect()
            qi = conn.adapter.quote_identifier
            mine = f"{qi('status')} = 'reserved' AND {qi('host')} = %s AND {qi('pid')} = %s"
            given = {}
            for label, full in self.job_tables:
                rows = conn.query(f"SELECT * FROM {full} WHERE {mine}", args=(self.host, self.pid), as_dict=True)
                for row in rows.fetchall():
                    key = {k: v for k, v in row.items() if k not in _JOB_COLUMNS}
                    n = count(row.get("error_message")) + 1
                    where = " AND ".join(f"{qi(k)} = %s" for k in key)
                    if n > self.max_preemptions:
                        message = (f"Preempted {n} times, more than the limit of {self.max_preemptions} "
                                   f"(worker --max-preemptions); {last}. `neuralreg jobs retry` queues it again.")
                        sets = f"{qi('status')} = 'error', {qi('completed_time')} = CURRENT_TIMESTAMP(3)"
                        log.error("%s %s: %s", label, key, message)
                    else:
                        message = f"Preempted {n} time(s) (limit {self.max_preemptions}); {last}"
                        sets = (f"{qi('status')} = 'pending', {qi('scheduled_time')} = CURRENT_TIMESTAMP(3), "
                                f"{qi('completed_time')} = NULL")
                        log.warning("%s %s: given back to the queue (%s)", label, key, message)
                    conn.query(f"UPDATE {full} SET {sets}, {qi('error_message')} = %s WHERE {where} AND {mine}",
                               args=(message, *key.values(), self.host, self.pid))
                    given[label] = given.get(label, 0) + 1
            with contextlib.suppress(Exception):
                conn.close()
            self.given = given
            self._done.set()
            return given

    # -- the guard thread (signals that wait on native code)
    def _listen(self) -> None:
        read_end = self._pipe[0]
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return                              # closed: the guard is done
            if not data:
                return
            if not any(b in {int(s) for s in SIGNALS} for b in data):
                continue
            if self._done.wait(self.grace):
                return                              # the main thread gave it back in time
            log.error("the main thread did not come back from native code within %.0f s of the signal: "
                      "the guard thread gives its job back", self.grace)
            try:
                self.give_back()
            except Exception as exc:                # noqa: BLE001 - the job is then reclaimed by its lease
                log.error("could not give the job back (%s); its heartbeat stops, so it will be reclaimed", exc)
            if self.on_exit is not None:
                self.on_exit()
                return
            logging.shutdown()
            os._exit(PREEMPTED_EXIT)

    # -- lifecycle
    def __enter__(self) -> "Guard":
        import datajoint.autopopulate as autopopulate
        from datajoint.jobs import Job
        self._active = threading.current_thread() is threading.main_thread()
        if not self._active:                        # signals reach the main thread only: leave them alone
            log.warning("worker not in the main thread: a SIGTERM is not turned into a give-back")
            return self
        for sig in SIGNALS:
            self._saved[sig] = signal.signal(sig, self.handler)
        # DataJoint's populate installs a SIGTERM handler of its own for each call: keep ours
        self._saved["module"] = autopopulate.signal
        autopopulate.signal = types.SimpleNamespace(SIGTERM=signal.SIGTERM,
                                                    signal=lambda sig, handler: signal.getsignal(sig))
        original_error = self._saved["error"] = Job.error

        def error(jobs, key, error_message, error_stack=None):
            if isinstance(sys.exc_info()[1], Preempted):
                return                              # the worker gives it back (give_back), not an error
            return original_error(jobs, key, error_message, error_stack)

        Job.error = error
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._saved["wakeup"] = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._listen, name="neuralreg-preempt", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import datajoint.autopopulate as autopopulate
        from datajoint.jobs import Job
        if not self._active:
            return
        signal.set_wakeup_fd(self._saved.pop("wakeup"))
        autopopulate.signal = self._saved.pop("module")
        Job.error = self._saved.pop("error")
        for sig in SIGNALS:
            signal.signal(sig, self._saved.pop(sig))
        if self.signum is None:                    # closing the write end ends the guard thread's read
            os.close(self._pipe[1])
            self._thread.join(timeout=5)
            os.close(self._pipe[0])
        # after a signal the guard thread keeps its grace timer: it ends the process if the exit hangs


_JOB_COLUMNS = {"status", "priority", "created_time", "scheduled_time", "reserved_time", "completed_time", "duration",
                "error_message", "error_stack", "user", "host", "pid", "connection_id", "version"}
