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
worker after S seconds without work. SIGTERM during a job: DataJoint records that job as an error
("SIGTERM received": `neuralreg jobs retry` queues it again) and the worker exits.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

from neuralreg_schema import pipeline, settings
from populate import jobs

log = logging.getLogger("neuralreg.worker")


def computed_tables(modules: dict) -> list:
    """Every Computed/Imported table of the activated modules, in pipeline (upstream-first) order."""
    dj = settings.configure()
    tables = []
    for name in pipeline.MODULES:
        module = modules[name]
        for attr in getattr(module, "POPULATE_ORDER", ()):
            table = getattr(module, attr)
            if issubclass(table, (dj.Computed, dj.Imported)):
                tables.append(table)
    return tables


def select_tables(tables: list, names) -> list:
    """The tables named (class name or module.Class), in the given (upstream-first) order."""
    if not names:
        return tables
    wanted = set(names)
    chosen = [t for t in tables if t.__name__ in wanted or f"{t.__module__.rsplit('.', 1)[-1]}.{t.__name__}" in wanted]
    known = {t.__name__ for t in chosen} | {f"{t.__module__.rsplit('.', 1)[-1]}.{t.__name__}" for t in chosen}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"populate.worker: no computed table named {sorted(unknown)}; tables: "
                         f"{', '.join(t.__name__ for t in tables)}")
    return chosen


def run_once(tables: list, display_progress: bool = True, max_jobs: int | None = None) -> dict:
    """One pass over the tables (at most `max_jobs` computed keys); returns {table: (made, errors)}."""
    done = {}
    for table in tables:
        if max_jobs is not None and max_jobs <= 0:
            break
        result = table.populate(reserve_jobs=True, suppress_errors=True, display_progress=display_progress,
                                max_calls=max_jobs)
        if max_jobs is not None:
            max_jobs -= result["success_count"] + len(result["error_list"])
        done[table.__name__] = (result["success_count"], len(result["error_list"]))
        for key, error in result["error_list"]:
            log.error("%s %s: %s", table.__name__, key, error)
    return done


def pending(tables: list) -> int:
    return sum(table.progress(display=False)[0] for table in tables)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default=os.environ.get("NEURALREG_PREFIX", settings.DEFAULT_PREFIX))
    parser.add_argument("--forever", action="store_true", help="keep polling for new work")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between passes with --forever")
    parser.add_argument("--tables", nargs="+", help="only these tables (e.g. PredictiveModel similarity.SimilarityMatrix)")
    parser.add_argument("--max-jobs", type=int, help="stop after this many keys (computed or failed)")
    parser.add_argument("--idle-exit", type=float, help="with --forever: exit after this many seconds without work")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tables = select_tables(computed_tables(pipeline.activate(args.prefix)), args.tables)
    budget, idle_since = args.max_jobs, time.monotonic()
    while True:
        reclaimed = jobs.reclaim(tables)        # jobs of dead workers go back to the queue
        if reclaimed:
            log.warning("reclaimed jobs of dead workers: %s", reclaimed)
        made = run_once(tables, max_jobs=budget)
        log.info("pass done: %s", json.dumps(made))
        worked = sum(n + e for n, e in made.values())
        if budget is not None:
            budget -= worked
            if budget <= 0:
                log.info("--max-jobs %d reached", args.max_jobs)
                return 0
        if worked:
            idle_since = time.monotonic()
        if not args.forever and not any(n for n, _ in made.values()):
            return 0
        if args.forever:
            if args.idle_exit is not None and time.monotonic() - idle_since >= args.idle_exit:
                log.info("no work for %.0f s: exiting (--idle-exit)", args.idle_exit)
                return 0
            time.sleep(args.poll)


if __name__ == "__main__":
    raise SystemExit(main())
