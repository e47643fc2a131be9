"""The worker loop: populate every computed table of the graph, upstream first, until no work is left.

Run one per GPU (or per core budget), on any machine that reaches the database and the store:

    python -m populate.worker --prefix neuralreg            # until the graph is complete
    python -m populate.worker --prefix neuralreg --forever  # poll for new work (docker compose worker)

Jobs are reserved through DataJoint's per-table job queues (`Table.jobs`), so any number of workers
compute every key exactly once. Errors are recorded in the job table (`neuralreg jobs`) and the
worker goes on with other keys.
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


def run_once(tables: list, display_progress: bool = True) -> dict:
    """One pass over the tables; returns {table name: (made, errors)}."""
    done = {}
    for table in tables:
        result = table.populate(reserve_jobs=True, suppress_errors=True, display_progress=display_progress)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tables = computed_tables(pipeline.activate(args.prefix))
    while True:
        reclaimed = jobs.reclaim(tables)        # jobs of dead workers go back to the queue
        if reclaimed:
            log.warning("reclaimed jobs of dead workers: %s", reclaimed)
        made = run_once(tables)
        log.info("pass done: %s", json.dumps(made))
        if not args.forever and not any(n for n, _ in made.values()):
            return 0
        if args.forever:
            time.sleep(args.poll)


if __name__ == "__main__":
    raise SystemExit(main())
