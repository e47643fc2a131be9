"""Benchmark: how many workers one database serves. N worker processes (default 8, 32, 64) run the
project's real worker (`populate.worker.serve`: the job reservation with its lease, the heartbeat and
watchdog on a connection of their own, `jobs.reclaim` before every pass, the worker loop) on a
throwaway table whose make does (almost) nothing, so what is measured is the job queue and the
database, not the science.

For each N: a schema of its own (`neuralreg_scale<random>`, dropped afterwards) gets a table `Item`
of K keys (--keys-per-worker x N, default 20 x N, at least 400) and a computed table `Echo` whose make inserts one
number (after --work-ms of sleep). The N workers are started, import and connect, and wait; then
they start together and each runs until the queue is empty. Printed per N:
  jobs/s       K / span, span = first reservation to last completion (the server's clock)
  conflicts    reservations a worker tried and lost to another (DataJoint's populate fetches the
               pending keys and tries them in the same order in every worker: an atomic UPDATE
               ... WHERE status = 'pending' that changes no row is a conflict, and costs one query)
  duplicates   make calls minus distinct keys made, over every worker (each worker reports the key
               of every make call it ran, committed or not): must be 0
  conn/worker  distinct database connections each worker used (reported by the worker: its work
               connection and its watchdog's), the most over the workers
  in use       the most connections of the workers open at once (the server's process list /
               pg_stat_activity, sampled every 0.25 s), and the server's whole count at that moment
               (Threads_connected / pg_stat_activity rows, other clients included)
  RSS          a worker's peak resident memory (it imports neither torch nor the pipeline's tables)
The last line is `workers served: N at X jobs/s, duplicates D` for the largest N.

Runs against the configured database (datajoint.json, DJ_*, .secrets/; `neuralreg db up`), as the
workers would; `--backends mysql postgresql` runs it once per backend (DJ_BACKEND). The server must
allow 2 connections per worker plus those in use: N = 64 needs max_connections >= 128 + others
(MySQL's default is 151, PostgreSQL's 100). The heartbeat is faster than a real worker's (1 s, not
30 s: --heartbeat), so that every worker opens its heartbeat connection within the run; its queries
(an UPDATE and a SELECT per worker and second) are part of the load measured.

    python benchmarks/scale.py [--workers 8 32 64] [--keys-per-worker 20] [--work-ms 0]
                               [--heartbeat 1] [--backends mysql postgresql]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from populate.common import CONNECTIONS_PER_WORKER  # noqa: E402

MIN_KEYS = 400
MADE: list[int] = []              # a worker's make calls (the Item key of each), in this process


def declare(schema_name: str, work_s: float = 0.0):
    """The throwaway tables, bound to `schema_name` (created when missing): Item (manual, the keys)
    and Echo (computed: one number per key; make records its call in MADE, sleeps `work_s`, inserts)."""
    from neuralreg_schema import settings
    dj = settings.configure()
    schema = dj.Schema(schema_name)

    @schema
    class Item(dj.Manual):
        definition = """
        # keys of the scale benchmark
        item : int32                # key
        """

    @schema
    class Echo(dj.Computed):
        definition = """
        # one number per key: a job that does (almost) nothing
        -> Item
        ---
        value : int32               # the key again
        """
        reserve_timeout = 600       # s: a job of this table may run this long (watchdog)

        def make(self, key):
            MADE.append(int(key["item"]))
            if work_s:
                time.sleep(work_s)
            self.insert1({**key, "value": key["item"]})

    return schema, Item, Echo


# ------------------------------------------------------------------ one worker process


def child(argv: list[str]) -> int:
    """One worker: `python benchmarks/scale.py --child SCHEMA FOLDER HEARTBEAT WORK_S`. Declares the
    tables, connects, says it is ready, waits for the start, runs populate.worker.serve on Echo and
    writes what it saw to FOLDER/<pid>.json."""
    import logging
    schema_name, folder, heartbeat, work_s = argv[0], Path(argv[1]), float(argv[2]), float(argv[3])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from populate import watchdog, worker
    _, _, echo = declare(schema_name, work_s)
    echo.connection.query("SELECT 1")                   # the work connection, open before the start

    counts = {"attempts": 0, "conflicts": 0}
    reserve = watchdog.reserve_with_lease               # the worker's reservation, counted as it runs

    def counted(jobs, key):
        won = reserve(jobs, key)
        counts["attempts"] += 1
        counts["conflicts"] += not won
        return won

    watchdog.reserve_with_lease = counted               # leases_on_reserve installs whatever this names
    dogs = []
    start = watchdog.Watchdog.start

    def remember(self):
        dogs.append(self)
        return start(self)

    watchdog.Watchdog.start = remember                  # to read its connection's id afterwards

    (folder / f"{os.getpid()}.ready").write_text("")
    deadline = time.monotonic() + 600
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("scale child: no start signal within 600 s")
        time.sleep(0.02)
    args = worker.add_options(argparse.ArgumentParser()).parse_args(["--heartbeat", str(heartbeat)])
    rc = worker.serve(args, [echo])
    work_ids = [int(echo.connection.connection_id)]     # kept current across reconnects by the worker
    heartbeat_ids = sorted({int(d._conn.connection_id) for d in dogs if d._conn is not None})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {"pid": os.getpid(), "rc": rc, "made": MADE, **counts,
              "connections": {"work": work_ids, "heartbeat": heartbeat_ids},
              "beats": sum(d.beats for d in dogs), "rss_mb": usage.ru_maxrss / 1024,
              "torch": "torch" in sys.modules}
    (folder / f"{os.getpid()}.json").write_text(json.dumps(report))
    return rc


# ------------------------------------------------------------------ the server's connections


def _server_connections(connection, backend: str) -> tuple[set[int], int]:
    """(ids of the connections this account can see, the server's whole count of client connections)."""
    if backend == "postgresql":
        rows = connection.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchall()
        ids = {int(r[0]) for r in rows}
        return ids, len(ids)
    ids = {int(r[0]) for r in connection.query("SELECT ID FROM information_schema.PROCESSLIST").fetchall()}
    total = int(connection.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'").fetchall()[0][1])
    return ids, total


def _max_connections(connection, backend: str) -> int:
    if backend == "postgresql":
        return int(connection.query("SHOW max_connections").fetchall()[0][0])
    return int(connection.query("SELECT @@GLOBAL.max_connections").fetchall()[0][0])


# ------------------------------------------------------------------ one run


def run_scale(n_workers: int, n_keys: int | None = None, *, heartbeat: float = 1.0, work_ms: float = 0.0,
              timeout: float = 900.0) -> dict:
    """N workers on K keys of a throwaway table (see the module docstring); returns the figures. The
    schema is dropped and every worker process ended, whatever happens."""
    from neuralreg_schema import settings
    from populate import jobs
    dj = settings.configure()
    backend = settings.backend(dj)
    n_keys = n_keys or max(MIN_KEYS, 20 * n_workers)
    schema_name = f"neuralreg_scale{uuid.uuid4().hex[:8]}"
    schema, item, echo = declare(schema_name)
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        conn = echo.connection
        limit = _max_connections(conn, backend)
        _, in_use_before = _server_connections(conn, backend)
        needed = CONNECTIONS_PER_WORKER * n_workers + in_use_before
        if needed > limit:
            raise SystemExit(f"{n_workers} workers need {CONNECTIONS_PER_WORKER * n_workers} connections "
                             f"({CONNECTIONS_PER_WORKER} each) beside the {in_use_before} in use, but the "
                             f"server allows max_connections = {limit}: raise it (docs/cluster.md)")
        item.insert({"item": i} for i in range(n_keys))
        jobs.declare([echo])
        echo.jobs.refresh()
        with tempfile.TemporaryDirectory(prefix="neuralreg-scale-") as tmp:
            folder = Path(tmp)
            env = dict(os.environ, DJ_JOBS_KEEP_COMPLETED="true", OMP_NUM_THREADS="1",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
            for i in range(n_workers):
                log = open(folder / f"worker{i}.log", "w+")
                logs.append(log)
                procs.append(subprocess.Popen([sys.executable, __file__, "--child", schema_name, str(folder),
                                               str(heartbeat), str(work_ms / 1000)], cwd=ROOT, env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + timeout
            while len(list(folder.glob("*.ready"))) < n_workers:
                failed = [p for p in procs if p.poll() is not None]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(f"workers did not start: {_tail(logs, procs)}")
                time.sleep(0.1)
            started = time.perf_counter()
            (folder / "go").write_text("")
            samples = []
            while any(p.poll() is None for p in procs):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers still running after {timeout:.0f} s: {_tail(logs, procs)}")
                samples.append(_server_connections(conn, backend))
                time.sleep(0.25)
            wall = time.perf_counter() - started
            reports = []
            for p in procs:
                path = folder / f"{p.pid}.json"
                if p.returncode != 0 or not path.is_file():
                    raise RuntimeError(f"worker {p.pid} ended with status {p.returncode}: {_tail(logs, procs)}")
                reports.append(json.loads(path.read_text()))
        made = [k for r in reports for k in r["made"]]
        worker_ids = set()
        per_worker = []
        for r in reports:
            mine = set(r["connections"]["work"]) | set(r["connections"]["heartbeat"])
            worker_ids |= mine
            per_worker.append(len(mine))
        busiest = max(samples, key=lambda s: len(s[0] & worker_ids)) if samples else (set(), 0)
        completed = echo.jobs.completed.to_dicts()
        first = min(j["reserved_time"] for j in completed)
        last = max(j["completed_time"] for j in completed)
        span = (last - first).total_seconds()
        return {
            "backend": backend, "schema": schema_name, "workers": n_workers, "keys": n_keys, "rows": len(echo()),
            "errors": len(echo.jobs.errors), "completed": len(completed),
            "jobs_per_s": n_keys / span if span > 0 else float("inf"), "span": span, "wall": wall,
            "make_calls": len(made), "distinct": len(set(made)), "duplicates": len(made) - len(set(made)),
            "attempts": sum(r["attempts"] for r in reports), "conflicts": sum(r["conflicts"] for r in reports),
            "connections_per_worker": max(per_worker), "connections_per_worker_min": min(per_worker),
            "workers_without_heartbeat_connection": sum(1 for r in reports if not r["connections"]["heartbeat"]),
            "in_use": len(busiest[0] & worker_ids), "server_total": busiest[1], "server_before": in_use_before,
            "max_connections": limit, "served_by": sum(1 for r in reports if r["made"]),
            "rss_mb": max(r["rss_mb"] for r in reports), "torch_imported": any(r["torch"] for r in reports),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        schema.drop(prompt=False)


def _tail(logs, procs) -> str:
    for log, p in zip(logs, procs):
        if p.poll() not in (None, 0):
            log.flush()
            log.seek(0)
            return f"worker {p.pid} (status {p.returncode}):\n{log.read()[-3000:]}"
    logs[0].flush()
    logs[0].seek(0)
    return logs[0].read()[-3000:]


# ------------------------------------------------------------------ the command


HEADER = (f"{'backend':>10} {'workers':>7} {'keys':>5} {'jobs/s':>7} {'span s':>7} {'conflicts':>9} "
          f"{'dupl.':>5} {'conn/worker':>11} {'in use':>6} {'server':>6} {'max_conn':>8} {'RSS MB':>6}")


def line(r: dict) -> str:
    return (f"{r['backend']:>10} {r['workers']:>7} {r['keys']:>5} {r['jobs_per_s']:>7.1f} {r['span']:>7.1f} "
            f"{r['conflicts']:>9} {r['duplicates']:>5} {r['connections_per_worker']:>11} {r['in_use']:>6} "
            f"{r['server_total']:>6} {r['max_connections']:>8} {r['rss_mb']:>6.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 64], help="worker counts to run")
    parser.add_argument("--keys-per-worker", type=int, default=20, help=f"keys = this x N (at least {MIN_KEYS})")
    parser.add_argument("--work-ms", type=float, default=0.0, help="milliseconds each make sleeps")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between the workers' heartbeats")
    parser.add_argument("--backends", nargs="+", choices=["mysql", "postgresql"],
                        help="run once per backend (DJ_BACKEND); default: the configured one")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.workers) or args.keys_per_worker < 1 or args.work_ms < 0 or args.heartbeat < 0.1:
        parser.error("--workers and --keys-per-worker must be >= 1, --work-ms >= 0, --heartbeat >= 0.1")
    if args.backends:
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        i = rest.index("--backends")
        j = i + 1
        while j < len(rest) and not rest[j].startswith("--"):
            j += 1
        rest = rest[:i] + rest[j:]
        status = 0
        for backend in args.backends:
            print(f"== DJ_BACKEND={backend}", flush=True)
            status |= subprocess.run([sys.executable, __file__, *rest], env=dict(os.environ, DJ_BACKEND=backend)).returncode
        return status
    print(f"{os.cpu_count()} CPU cores, load average before {os.getloadavg()[0]:.2f}; heartbeat {args.heartbeat:g} s, "
          f"make sleeps {args.work_ms:g} ms", flush=True)
    print(HEADER, flush=True)
    results = []
    for n in args.workers:
        r = run_scale(n, max(MIN_KEYS, args.keys_per_worker * n), heartbeat=args.heartbeat, work_ms=args.work_ms)
        results.append(r)
        print(line(r), flush=True)
        if r["rows"] != r["keys"] or r["errors"] or r["duplicates"]:
            print(f"  WRONG: {r['rows']} rows of {r['keys']} keys, {r['errors']} errors, "
                  f"{r['duplicates']} duplicates", flush=True)
        if r["workers_without_heartbeat_connection"]:
            print(f"  {r['workers_without_heartbeat_connection']} worker(s) ended before their first heartbeat",
                  flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}; torch imported by the workers: "
          f"{any(r['torch_imported'] for r in results)}", flush=True)
    last = results[-1]
    print(f"workers served: {last['workers']} at {last['jobs_per_s']:.1f} jobs/s, duplicates {last['duplicates']}")
    return 0 if all(r["duplicates"] == 0 and r["rows"] == r["keys"] and not r["errors"] for r in results) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raise SystemExit(child(sys.argv[2:]))
    raise SystemExit(main())
