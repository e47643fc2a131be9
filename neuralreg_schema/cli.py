"""The `neuralreg` command.

    neuralreg db up | status | down          bring the database up (idempotent), report, stop ours
    neuralreg ingest simulated [--profile demo] [--seed 0]
    neuralreg ingest sensorium PATH [PATH ...]   folders or zips of Sensorium 2022 static scans
    neuralreg populate                         run the worker loop once over the whole graph
    neuralreg status                           rows per table and job queues
    neuralreg demo [--profile demo]            all of the above on the simulated experiment (prefix 'neuralreg_demo')

`--prefix` (or NEURALREG_PREFIX) selects the schemas: `<prefix>_experiment`, ... (default 'neuralreg').
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import settings


def _prefix(args) -> str:
    return args.prefix or os.environ.get("NEURALREG_PREFIX") or settings.DEFAULT_PREFIX


def _say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ db

def cmd_db(args) -> int:
    from . import db
    if args.action == "up":
        db.up(say=_say, reset_password=args.reset_password)
    elif args.action == "status":
        info = db.status()
        for key, value in info.items():
            print(f"{key:>20}: {value}")
        return 0 if info["login"] else 1
    else:
        db.down(say=_say)
    return 0


# ------------------------------------------------------------------ ingest

def ingest_simulated(prefix: str, profile: str, seed: int) -> list[dict]:
    from . import pipeline
    from .compute import simulate
    experiment = pipeline.activate(prefix)["experiment"]
    started = time.time()
    _say(f"simulating the '{profile}' experiment (seed {seed})")
    sim = simulate.simulate_experiment(profile, seed=seed, progress=lambda m: _say(f"  {m}"))
    _say(f"  {len(sim.scans)} scans, {len(sim.image_set.image_ids)} images, "
         f"{sum(s.n_neurons for s in sim.scans)} neurons in {time.time() - started:.1f} s")
    return experiment.ingest(sim.image_set, sim.scans, source_path=f"{profile}/seed={seed}", progress=_say)


def ingest_sensorium(prefix: str, paths: list[str]) -> list[dict]:
    from tqdm import tqdm
    from . import pipeline
    from .compute import sensorium
    experiment = pipeline.activate(prefix)["experiment"]
    keys = []
    for path in paths:
        with tqdm(desc=Path(path).name[:40], unit="trial", leave=False) as bar:
            def progress(done, total):
                bar.total = total
                bar.n = done
                bar.refresh()
            try:
                image_set, scan = sensorium.read_sensorium(path, progress=progress)
            except sensorium.SensoriumFormatError as exc:
                if str(Path(path)) in str(exc):
                    raise
                raise sensorium.SensoriumFormatError(path, str(exc)) from None
        for note in scan.notes:
            _say(f"  note: {note}")
        keys += experiment.ingest(image_set, [scan], source_path=Path(path).name, progress=_say)
    return keys


def cmd_ingest(args) -> int:
    if args.source == "simulated":
        keys = ingest_simulated(_prefix(args), args.profile, args.seed)
    else:
        keys = ingest_sensorium(_prefix(args), args.paths)
    _say(f"ingested {len(keys)} new scan(s)")
    return 0


# ------------------------------------------------------------------ populate / status

def cmd_populate(args) -> int:
    from populate import worker
    argv = ["--prefix", _prefix(args)] + (["--forever"] if args.forever else [])
    return worker.main(argv)


def _tables(module, dj) -> list:
    """The master tables defined in a schema module, in definition order, each followed by its parts."""
    found = []
    for table in vars(module).values():
        if isinstance(table, type) and issubclass(table, dj.Table) and table.__module__ == module.__name__:
            found.append(table)
            found += [p for p in vars(table).values() if isinstance(p, type) and issubclass(p, dj.Part)]
    return found


def status_table(prefix: str) -> list[tuple[str, int, str]]:
    """(table, rows, job summary) for every table of the activated pipeline."""
    from . import pipeline
    dj = settings.configure()
    rows = []
    for name, module in pipeline.activate(prefix).items():
        for table in _tables(module, dj):
            jobs = ""
            if issubclass(table, (dj.Computed, dj.Imported)):
                remaining, total = table.progress()
                p = table.jobs.progress()
                jobs = (f"{total - remaining}/{total} done; jobs: {p['pending']} pending, "
                        f"{p['reserved']} reserved, {p['error']} error")
            label = table.__qualname__ if issubclass(table, dj.Part) else table.__name__
            rows.append((f"{name}.{label}", len(table()), jobs))
    return rows


def cmd_status(args) -> int:
    prefix = _prefix(args)
    print(f"schemas with prefix '{prefix}' on {settings.connection_summary()}")
    for name, count, jobs in status_table(prefix):
        print(f"  {name:<32} {count:>9}  {jobs}")
    return 0


# ------------------------------------------------------------------ demo

def demo_summary(prefix: str) -> dict:
    """The numbers the demo prints: per scan, Spearman(w_a, true reliability) and counts."""
    import numpy as np
    from scipy.stats import spearmanr
    from . import pipeline
    experiment = pipeline.activate(prefix)["experiment"]
    summary = {}
    for key in experiment.Scan.keys(order_by="animal_id, session, scan_idx"):
        scan = (experiment.Scan & key).fetch1()
        row = {"neurons": scan["n_neurons"], "trials": scan["n_trials"],
               "oracle_images": scan["n_oracle_images"], "source": scan["source"]}
        joined = experiment.Neuron.Unit * experiment.SimulatedUnit & key
        if len(joined):
            w, truth = joined.to_arrays("snr_weight", "true_reliability")
            row["median_w"] = float(np.median(w))
            row["spearman_w_truth"] = float(spearmanr(w, truth).statistic)
        summary["{animal_id}-{session}-{scan_idx}".format(**key)] = row
    return summary


DEMO_PREFIX = "neuralreg_demo"


def cmd_demo(args) -> int:
    from . import db
    prefix = args.prefix or os.environ.get("NEURALREG_PREFIX") or DEMO_PREFIX
    args.prefix = prefix
    started = time.time()
    _say("== 1/4 database")
    db.up(say=_say)
    _say("== 2/4 ingest the simulated experiment")
    ingest_simulated(prefix, args.profile, args.seed)
    _say("== 3/4 populate the graph")
    from populate import worker
    from . import pipeline
    worker.run_once(worker.computed_tables(pipeline.activate(prefix)))
    _say("== 4/4 summary")
    cmd_status(args)
    summary = demo_summary(prefix)
    print(f"\n{'scan':>14} {'neurons':>8} {'trials':>7} {'oracle':>7} {'median w_a':>11} {'Spearman(w_a, true)':>20}")
    for name, row in summary.items():
        print(f"{name:>14} {row['neurons']:>8} {row['trials']:>7} {row['oracle_images']:>7} "
              f"{row.get('median_w', float('nan')):>11.3f} {row.get('spearman_w_truth', float('nan')):>20.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    _say(f"\ndemo finished in {time.time() - started:.0f} s; its tables are in the schemas '{prefix}_*':\n"
         f"  neuralreg --prefix {prefix} status    or    pipeline.activate('{prefix}') in Python")
    return 0


# ------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuralreg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", help="schema prefix (default: $NEURALREG_PREFIX or 'neuralreg')")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="database bring-up")
    p.add_argument("action", choices=["up", "status", "down"])
    p.add_argument("--reset-password", action="store_true",
                   help="with up: set the existing application account's password to a new one")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("ingest", help="insert recordings")
    isub = p.add_subparsers(dest="source", required=True)
    q = isub.add_parser("simulated", help="the embedded simulated experiment")
    q.add_argument("--profile", default="demo", choices=["tiny", "demo", "full"])
    q.add_argument("--seed", type=int, default=0)
    q = isub.add_parser("sensorium", help="Sensorium 2022 static scans (folders or zips)")
    q.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("populate", help="run the worker loop over the graph")
    p.add_argument("--forever", action="store_true")
    p.set_defaults(func=cmd_populate)

    p = sub.add_parser("status", help="rows per table and job queues")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="database up, simulated experiment, populate, summary")
    p.add_argument("--profile", default="demo", choices=["tiny", "demo", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pymysql.err import OperationalError
    from . import db
    from .compute.recording import RecordingError
    try:
        if args.command not in ("db", "demo"):
            target = db.configured_target()
            if not db.answers(target, timeout=3):
                raise db.DatabaseError(f"no database answers at {target.host}:{target.port}: run "
                                       "`neuralreg db up`, or point DJ_HOST/DJ_PORT at your server")
        return args.func(args)
    except (RecordingError, db.DatabaseError, FileNotFoundError) as exc:
        print(f"neuralreg: error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        target = db.configured_target()
        print(f"neuralreg: error: database at {target.host}:{target.port}: {exc.args[-1]} "
              "(is it up? `neuralreg db up`; are DJ_USER/DJ_PASS or .secrets/ right?)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
