"""The worker loop: populate every computed table of the graph, upstream first, until no work is left.

Run one per GPU (or per core budget), on any machine that reaches the database and the store:

    python -m populate.worker --prefix neuralreg            # until the graph is complete
    python -m populate.worker --prefix neuralreg --forever  # poll for new work (docker compose worker)

Jobs are reserved through DataJoint's per-table job queues (`Table.jobs`), so any number of workers
compute every key exactly once. Errors are recorded in the job table (`neuralreg jobs`) and the
worker goes on with other keys. Before each pass the worker reclaims jobs of dead workers
(populate/jobs.py).

Options: `--tables PredictiveModel ...` limits the tables (class or module.Class names; upstream
order is kept), `--max-jobs N` stops after N computed keys, `--idle-exit S` ends a `--forever`
worker after S seconds without work. `--threads N` sets torch's CPU threads; by default they are the
CPUs this process may use (affinity and cgroup quota) divided by `--workers-per-machine` (default
$NEURALREG_WORKERS, else 1): start N workers on one machine with NEURALREG_WORKERS=N. OpenMP threads
sleep rather than spin while waiting (compute/common/runtime.py), so a busy neighbour costs its fair share,
not 20x.

SIGTERM or SIGINT (preemption, a time limit, Ctrl-C) is a normal event (populate/preempt.py): the job in
hand goes back to the queue by itself, with its preemption count in the job row (`neuralreg jobs`,
`neuralreg jobs held`), and the next worker resumes it from its checkpoint; a job preempted more than
`--max-preemptions` times (default 10) becomes an error that says so. The worker then exits with 75.

Exit status: 0 when the worker ran out of work (or reached --max-jobs / --idle-exit) and every job it
ran succeeded; 1 when a job it ran is left in error (the worker still goes on with the other keys
first) or the database did not come back; 70 (watchdog.HUNG_EXIT) when the watchdog ends a hung worker;
75 (preempt.PREEMPTED_EXIT, EX_TEMPFAIL) when a SIGTERM/SIGINT stopped it: nothing failed, its job was
given back (schedulers: see docs/cluster.md, Preemption).
`neuralreg populate` is this worker, with the same options.

A lost database connection (server restarted, network down) does not end the worker. DataJoint
reconnects by itself when the server is back before the next query (a model that trains through
a short restart is inserted normally). When the server is still away, the pass fails: the worker
logs it, reconnects with exponential backoff (1 s, 2 s, ... up to 30 s, for at most
`--reconnect-timeout` seconds, then exits with status 1), gives its own job in hand back to the
queue (its transaction died with the connection, so nothing of it was written) and goes on; the
job is computed again. After every reconnect the worker's connection id is refreshed, so the jobs
it reserves name a live connection and `jobs.reclaim` in other workers leaves them alone.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import time

from neuralreg_schema import pipeline, settings
from neuralreg_schema.compute.common import runtime
from populate import jobs, preempt, watchdog
from populate.common import LEASE, table_name

log = logging.getLogger("neuralreg.worker")


def computed_tables(modules: dict) -> list:
    """Every Computed/Imported table of the activated modules, in pipeline (upstream-first) order."""
    dj = settings.configure()
    tables = []
    for name in pipeline.MODULES:
        for module in [modules[name]] + [modules[m] for m in pipeline.EXTENSIONS.get(name, ()) if m in modules]:
            for attr in getattr(module, "POPULATE_ORDER", ()):
                table = getattr(module, attr)
                if issubclass(table, (dj.Computed, dj.Imported)):
                    tables.append(table)
    return tables


def _names(table) -> set:
    return {table.__name__, f"{table.__module__.rsplit('.', 1)[-1]}.{table.__name__}"}


def unknown_tables(tables: list, names) -> str | None:
    """What is wrong with `names` (class name or module.Class) as a choice among `tables`: 'no computed
    table named [...]; tables: ...', or None when every name is one of them."""
    unknown = set(names or ()) - set().union(*(_names(t) for t in tables))
    if not unknown:
        return None
    return f"no computed table named {sorted(unknown)}; tables: {', '.join(t.__name__ for t in tables)}"


def select_tables(tables: list, names) -> list:
    """The tables named (class name or module.Class), in the given (upstream-first) order."""
    if not names:
        return tables
    if (problem := unknown_tables(tables, names)) is not None:
        raise SystemExit(f"populate.worker: {problem}")
    return [t for t in tables if _names(t) & set(names)]


def computed_elsewhere(exc: BaseException) -> bool:
    """The error DataJoint raises when it records the outcome of a job whose row another worker has
    already completed (the job was reclaimed from this worker and computed again elsewhere)."""
    return "Update can only be applied to one existing entry" in str(exc)


def run_once(tables: list, display_progress: bool = True, max_jobs: int | None = None,
             priority: int | None = None, failures: list | None = None, done: dict | None = None) -> dict:
    """One pass over the tables (at most `max_jobs` computed keys; only jobs with priority <= `priority`
    when given); returns {table: (made, errors)}. `failures`, when given, receives (table, key) of every
    job that failed. `done`, when given, is filled table by table as the pass goes (what a pass that a
    preemption interrupts had finished)."""
    from datajoint.errors import DataJointError
    done = {} if done is None else done
    for table in tables:
        if max_jobs is not None and max_jobs <= 0:
            break
        try:
            result = table.populate(reserve_jobs=True, suppress_errors=True, display_progress=display_progress,
                                    max_calls=max_jobs, priority=priority)
        except DataJointError as exc:
            if not computed_elsewhere(exc):
                raise
            # our job was reclaimed (e.g. our heartbeat could not reach the database for longer than the
            # lease) and another worker inserted the result first: ours is discarded, nothing was written
            log.warning("%s: a job of this worker was computed by another worker first; result discarded (%s)",
                        table_name(table), exc)
            done[table.__name__] = (0, 0)
            continue
        if max_jobs is not None:
            max_jobs -= result["success_count"] + len(result["error_list"])
        done[table.__name__] = (result["success_count"], len(result["error_list"]))
        for key, error in result["error_list"]:
            log.error("%s %s: %s", table.__name__, key, error)
            if failures is not None:
                failures.append((table, key))
    return done


def connections(tables: list) -> list:
    """The distinct DataJoint connections the tables use (normally one)."""
    found = []
    for table in tables:
        if not any(table.connection is c for c in found):
            found.append(table.connection)
    return found


def track_connection_id(connection) -> None:
    """Keep `connection.connection_id` right across reconnects.

    DataJoint 2.3.5 reconnects on a lost connection (Connection.query) but keeps the id of the first
    connection, which it writes into every job it reserves; after a server restart that id is dead
    (or, ids restarting from 1, another client's), so `jobs.reclaim` elsewhere would take a live job
    away, or keep a dead one."""
    if getattr(connection, "_neuralreg_tracks_id", False):
        return
    connect = connection.connect

    def connect_and_track():
        connect()
        connection.connection_id = connection.adapter.get_connection_id(connection._conn)

    connection.connect = connect_and_track        # Connection.query calls self.connect() to reconnect
    connection._neuralreg_tracks_id = True


def alive(connection) -> bool:
    """True when the connection answers a query (DataJoint's own `is_connected` ignores ping's answer)."""
    try:
        connection.query("SELECT 1", reconnect=False).fetchall()
        return True
    except Exception:      # noqa: BLE001 - any failure means: not usable
        return False


def lost_connection_error(exc: BaseException) -> bool:
    """An error that means the connection is gone (DataJoint's LostConnectionError; PyMySQL's 'can't
    connect', 'server has gone away', 'lost connection during query', or an operation on a closed one;
    on PostgreSQL psycopg2's OperationalError / InterfaceError)."""
    import pymysql
    from datajoint.errors import LostConnectionError
    lost = (LostConnectionError, pymysql.err.InterfaceError)
    try:
        import psycopg2
        lost += (psycopg2.OperationalError, psycopg2.InterfaceError)
    except ImportError:                 # the postgres extra is not installed: MySQL only
        pass
    while exc is not None:
        if isinstance(exc, lost):
            return True
        if isinstance(exc, pymysql.err.OperationalError) and exc.args and exc.args[0] in (2003, 2006, 2013, 2055):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def reconnect(connection, timeout: float, first_delay: float = 1.0, max_delay: float = 30.0) -> None:
    """Reconnect with exponential backoff until the server answers; raise ConnectionError after `timeout` s."""
    deadline, delay = time.monotonic() + timeout, first_delay
    while True:
        try:
            connection.connect()              # tracked: refreshes connection_id
            connection._in_transaction = False  # the transaction died with the old connection
            log.warning("reconnected to the database (connection id %s)", connection.connection_id)
            return
        except Exception as exc:              # noqa: BLE001 - server still away
            if time.monotonic() + delay > deadline:
                raise ConnectionError(f"the database did not come back within {timeout:.0f} s: {exc}") from exc
            log.warning("database unreachable (%s): retrying in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(2 * delay, max_delay)


def release_own_jobs(tables: list) -> dict[str, int]:
    """Give back the jobs this process holds reserved (called between passes, when it holds none
    legitimately: a pass that failed on a lost connection could not record its job)."""
    mine = {"host": platform.node(), "pid": os.getpid()}
    released = {}
    for table in tables:
        rel = table.jobs & "status = 'reserved'" & mine
        keys = rel.keys()
        if keys:
            rel.delete_quick()
            released[table_name(table)] = len(keys)
            log.warning("%s: gave back %d job(s) interrupted by the lost connection: %s", table_name(table),
                        len(keys), keys)
    return released


MAX_LOST_CONNECTION_RETRIES = 3      # per key and worker process: a job that always loses it is left in error


def retry_lost_connection_errors(tables: list, tries: dict | None = None) -> dict[str, int]:
    """Clear this host's job errors that only record a lost connection (e.g. the server went away during
    a job's final transaction, which DataJoint records as 'LostConnectionError'): nothing of those jobs
    was written, so they are computed again. Called after every pass and after a reconnect. `tries`
    counts the retries per key (at most MAX_LOST_CONNECTION_RETRIES), so a job that loses its connection
    every time (e.g. an insert the server refuses by closing the connection) stays in error."""
    released = {}
    for table in tables:
        rel = (table.jobs & "status = 'error'" & {"host": platform.node()}
               & "error_message LIKE 'LostConnectionError%' OR error_message LIKE '%Lost connection%'")
        keys = rel.keys()
        if tries is not None:
            counted = []
            for k in keys:
                ident = (table_name(table), tuple(sorted(k.items())))
                if tries.get(ident, 0) < MAX_LOST_CONNECTION_RETRIES:
                    tries[ident] = tries.get(ident, 0) + 1
                    counted.append(k)
            keys = counted
        if keys:
            (table.jobs & "status = 'error'" & keys).delete_quick()
            released[table_name(table)] = len(keys)
            log.warning("%s: %d job(s) that failed on the lost connection queued again", table_name(table),
                        len(keys))
    return released


def pending(tables: list) -> int:
    return sum(table.progress(display=False)[0] for table in tables)


@functools.lru_cache(maxsize=None)      # one parser per range: `neuralreg populate` shares the worker's options
def seconds(low: float, *, above: bool = True, high: float | None = None):
    """An argparse type: a number of seconds > low (>= low with above=False), at most `high`; refused
    with a usage error otherwise (0 would mean 'as fast as possible' or silently 'the default')."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if value != value or value in (float("inf"), float("-inf")) or (value <= low if above else value < low) \
                or (high is not None and value > high):
            bound = f"> {low:g}" if above else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"{text} s: must be {bound}" + (f" and <= {high:g}" if high else ""))
        return value
    return parse


@functools.lru_cache(maxsize=None)
def count(low: int):
    """An argparse type: a whole number >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: must be >= {low}")
        return value
    return parse


MIN_HEARTBEAT = 0.1          # s: a faster heartbeat only floods the database with UPDATEs


def add_options(parser: argparse.ArgumentParser, *, common: bool = True) -> argparse.ArgumentParser:
    """The worker's options, on `parser`. `neuralreg populate` adds them to its subcommand with
    common=False: --prefix and --threads are then the neuralreg command's own (accepted before or after
    any subcommand), with the same meaning."""
    if common:
        parser.add_argument("--prefix", default=os.environ.get("NEURALREG_PREFIX", settings.DEFAULT_PREFIX),
                            help="schema prefix (default: $NEURALREG_PREFIX or 'neuralreg')")
        parser.add_argument("--threads", type=count(1),
                            help="torch CPU threads (default: the CPUs this process may use / --workers-per-machine)")
    parser.add_argument("--forever", action="store_true", help="keep polling for new work")
    parser.add_argument("--poll", type=seconds(0), default=30.0, help="seconds between passes with --forever")
    parser.add_argument("--tables", nargs="+", help="only these tables (e.g. PredictiveModel similarity.SimilarityMatrix)")
    parser.add_argument("--max-jobs", type=count(1), help="stop after this many keys (computed or failed)")
    parser.add_argument("--idle-exit", type=seconds(0, above=False), help="with --forever: exit after this many seconds without work")
    parser.add_argument("--priority", type=int,
                        help="only jobs with this priority or more urgent (lower runs first; `neuralreg jobs prioritize`)")
    parser.add_argument("--reconnect-timeout", type=seconds(0, above=False), default=900.0,
                        help="seconds to wait for a lost database to come back before exiting (default 900)")
    parser.add_argument("--workers-per-machine", type=count(1),
                        help="workers sharing this machine's CPUs (default: $NEURALREG_WORKERS or 1)")
    parser.add_argument("--heartbeat", type=seconds(MIN_HEARTBEAT, above=False, high=LEASE / 2),
                        default=watchdog.INTERVAL,
                        help=f"seconds between heartbeats on the jobs this worker holds (default {watchdog.INTERVAL:.0f}; "
                             f"{MIN_HEARTBEAT:g}..{LEASE / 2:g}: a job whose heartbeat is older than {LEASE:g} s is "
                             "reclaimed)")
    parser.add_argument("--stall-timeout", type=seconds(0),
                        help="seconds a job may go without progress before the watchdog ends the worker "
                             "(default: the table's stall_timeout, else 4 h)")
    parser.add_argument("--max-preemptions", type=count(0), default=preempt.MAX_PREEMPTIONS,
                        help="times a job may be given back on SIGTERM/SIGINT before it becomes an error "
                             f"(default {preempt.MAX_PREEMPTIONS})")
    parser.add_argument("--preempt-grace", type=seconds(0), default=preempt.GRACE,
                        help="seconds after a SIGTERM within which a worker stuck in native code gives its job "
                             f"back from another thread and exits (default {preempt.GRACE:.0f}; keep it below "
                             "the scheduler's grace before SIGKILL)")
    parser.add_argument("--job-timeout", type=seconds(0),
                        help="seconds a job may run before the watchdog ends the worker (default: the table's "
                             "reserve_timeout)")
    return parser


def main(argv=None) -> int:
    """`python -m populate.worker` (the job scripts' entry; `neuralreg populate` checks the same first): one
    pass on a prefix without a study is refused, creating no schema; a `--forever` worker may start
    before the study is planned, and waits for it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_options(parser).parse_args(argv)
    if not args.forever:
        try:
            pipeline.require_schemas(args.prefix, "populate.worker: nothing to populate",
                                     f"ingest and plan a study first (`neuralreg --prefix {args.prefix} ...`)")
        except pipeline.SchemasMissing as exc:
            raise SystemExit(str(exc)) from None
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the worker with parsed options (add_options); returns the exit status: 0 when every job it
    ran succeeded, 1 when a job failed (recorded in its job table: `neuralreg jobs errors`) or the
    database did not come back."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    threads = runtime.configure_threads(args.threads, args.workers_per_machine)
    log.info("torch CPU threads: %d (CPU budget %d, OMP_WAIT_POLICY=%s)", threads, runtime.cpu_budget(),
             os.environ.get("OMP_WAIT_POLICY", "unset"))
    tables = select_tables(computed_tables(pipeline.activate(args.prefix)), args.tables)
    return serve(args, tables)


def serve(args: argparse.Namespace, tables: list) -> int:
    """The worker on the given computed tables (upstream first), with parsed options (add_options): its
    two database connections (the tables' one for the work, the watchdog's for the heartbeat), leases on
    the jobs it reserves, and the loop; returns run()'s exit status. benchmarks/scale.py runs it on a
    throwaway table."""
    for connection in connections(tables):
        track_connection_id(connection)
    jobs.declare(tables)                    # before the race of workers that start together (PostgreSQL)
    dog = watchdog.Watchdog(tables, connections(tables)[0], interval=args.heartbeat,
                            stall_timeout=args.stall_timeout, job_timeout=args.job_timeout).start()
    guard = preempt.Guard(tables, max_preemptions=args.max_preemptions, grace=args.preempt_grace)
    try:
        with guard, watchdog.leases_on_reserve():   # a job this worker reserves has its heartbeat from the start
            try:
                return _loop(args, tables)
            except preempt.Preempted:
                given = guard.give_back()
                log.warning("stopped by %s: job(s) given back %s; exit status %d", guard.signum and
                            preempt.signal.Signals(guard.signum).name, json.dumps(given), preempt.PREEMPTED_EXIT)
                return preempt.PREEMPTED_EXIT
    finally:
        dog.stop()


def _loop(args, tables) -> int:
    budget, idle_since = args.max_jobs, time.monotonic()
    lost_tries: dict = {}
    failures: list = []                             # (table, key) of the jobs that failed in this run
    while True:
        try:
            reclaimed = jobs.reclaim(tables)        # jobs of dead workers go back to the queue
            if reclaimed:
                log.warning("reclaimed jobs of dead workers: %s", reclaimed)
            made = {}
            run_once(tables, max_jobs=budget, priority=args.priority, failures=failures, done=made)
        except preempt.Preempted:
            # the tables this pass finished before the signal (the interrupted table's job goes back)
            log.info("per table [keys computed, keys failed]; pass interrupted: %s", json.dumps(made))
            raise
        except Exception as exc:                    # noqa: BLE001 - re-raised unless the database went away
            lost = [c for c in connections(tables) if not alive(c)]
            if not lost and not lost_connection_error(exc):
                raise
            log.error("pass interrupted, the database connection was lost: %s: %s", type(exc).__name__, exc)
            try:
                for connection in lost:
                    reconnect(connection, args.reconnect_timeout)
            except ConnectionError as gone:
                log.error("%s: giving up", gone)
                return 1
            release_own_jobs(tables)
            retry_lost_connection_errors(tables, lost_tries)
            continue
        log.info("per table [keys computed, keys failed]; pass done: %s", json.dumps(made))
        requeued = retry_lost_connection_errors(tables, lost_tries)     # their jobs wrote nothing: compute again
        worked = sum(n + e for n, e in made.values())
        if budget is not None:
            budget -= worked
            if budget <= 0:
                log.info("--max-jobs %d reached", args.max_jobs)
                return _outcome(failures)
        if worked:
            idle_since = time.monotonic()
        if not args.forever and not any(n for n, _ in made.values()) and not requeued:
            return _outcome(failures)
        if args.forever:
            if args.idle_exit is not None and time.monotonic() - idle_since >= args.idle_exit:
                log.info("no work for %.0f s: exiting (--idle-exit)", args.idle_exit)
                return _outcome(failures)
            time.sleep(args.poll)


def _outcome(failures: list) -> int:
    """The exit status of a worker that ran out of work: 1 when jobs that failed in this run are still
    in error (a job that failed on a lost connection and was computed again does not count)."""
    distinct = {(table_name(table), tuple(sorted(key.items()))): (table, key) for table, key in failures}
    failed = sum(1 for table, key in distinct.values() if len(table.jobs.errors & key))
    if failed:
        log.error("%d job(s) failed in this run: `neuralreg jobs errors` shows them, `neuralreg jobs retry` "
                  "queues them again", failed)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
