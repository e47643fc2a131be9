"""The `neuralreg` command: argument parsing and dispatch.

    neuralreg db up | status [--json] | down | worker-user [--force] [--rotate]   bring the database up
                                               (idempotent), report, stop ours, the worker account
    neuralreg ingest simulated [--profile demo] [--seed 0] [--tuning mouse|low|high]
    neuralreg ingest sensorium PATH [PATH ...]   folders or zips of Sensorium 2022 static scans
    neuralreg group NAME --image-set SET | --scans A-S-I ...   scans whose similarity matrices are averaged
    neuralreg plan-similarity [--model demo] [--model-seed 0] [--vgg]   a predictive model's similarity configs
    neuralreg plan STUDY [...]                 every row that defines a study (populate/plans.py)
    neuralreg populate [worker options]        the worker loop (populate/worker.py) over the whole graph
    neuralreg status [--json]                  rows per table and job queues
    neuralreg jobs [errors|held|retry|ignore|prioritize|reclaim] [--json] [--table T] [--key NAME=VALUE ...]
    neuralreg launch slurm [--workers N] [--submit] ...   a SLURM array job of workers (populate/launch.py)
    neuralreg report [--out DIR]               the paper's figures and tables from the database
    neuralreg export --key NAME=VALUE ... --out FILE [--input rgb|gray]   one classifier as a torch.export file
    neuralreg drop [--yes]                     drop every schema of the prefix (asks to type it back)
    neuralreg store gc [--delete] [--min-age S]   store files no row references (dry run unless --delete)
    neuralreg demo [--profile demo]            all of the above on the simulated experiment (prefix 'neuralreg_demo')
    neuralreg compose-gpus N [--remote]        docker-compose.gpus.yml: one compose worker per GPU
    neuralreg selftest [--device cuda|cpu] [--quick] [--json FILE]   kernels, bf16, the tiny study, speed

`--prefix P` (or $NEURALREG_PREFIX) selects the schemas `P_experiment`, ... (default 'neuralreg'; the
demo's: 'neuralreg_demo'); like `--threads`, it goes before or after the subcommand. Read-only
commands (status, jobs, jobs errors, db status, report) open existing schemas only: for a prefix
without schemas they say so and name the prefixes that have them. `--json` (status, jobs, jobs
errors, db status) prints one JSON object:

    status       {"prefix", "connection", "tables": [{"table", "rows", and for computed tables "done",
                 "remaining", "pending", "reserved", "error", "ignore"}]}   (rows null: not in the database)
    jobs         {"prefix", "tables": [{"table", "done", "remaining", "pending", "reserved", "error", "ignore", "preempted"}]}
    jobs errors  {"prefix", "errors": [{"table", "key", "message", "stack", "host", "pid", "when"}]}
    jobs held    {"prefix", "held": [{"table", "key", "host", "pid", "user", "since", "heartbeat", "preemptions"}]}
    db status    {"backend", "host", "port", "database", "user", "answers", "login", "local_server_pid",
                 "docker", and once logged in the server's settings (e.g. "version") and "schemas"}

Exit status: 0 success; 1 a runtime error (one line `neuralreg: error: ...` on stderr; NEURALREG_DEBUG=1
adds the traceback), a job that failed in `populate` or `demo`, or `db status` that cannot log in;
2 a usage error; `populate` also 70 (a hung job) and 75 (stopped by SIGTERM/SIGINT, its job given back).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from populate import plans

from . import export, settings
from .messages import one_line


def _prefix(args) -> str:
    return getattr(args, "prefix", None) or os.environ.get("NEURALREG_PREFIX") or settings.DEFAULT_PREFIX


def _say(message: str) -> None:
    print(message, flush=True)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str), flush=True)


def _stdout_for_json() -> None:
    """Keep stdout for the JSON object: DataJoint's log lines (it logs to stdout) go to stderr."""
    import logging
    settings.configure()                                # imports datajoint, which sets up its logger
    for handler in logging.getLogger("datajoint").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _open_existing(args) -> dict:
    """The pipeline bound to the existing schemas of the prefix: read-only commands create nothing."""
    from . import pipeline
    return pipeline.open_existing(_prefix(args))


# ------------------------------------------------------------------ db

def cmd_db(args) -> int:
    from . import db
    if args.action == "up":
        db.up(say=_say, reset_password=args.reset_password)
    elif args.action == "status":
        info = db.status()
        if args.json:
            _print_json(info)
        else:
            for key, value in info.items():
                print(f"{key:>20}: {value}")
        return 0 if info["login"] else 1
    elif args.action == "worker-user":
        db.worker_user(args.name, say=_say, force=args.force, rotate=args.rotate, prefix=_prefix(args))
    else:
        db.down(say=_say)
    return 0


def cmd_compose_gpus(args) -> int:
    from . import compose
    path = compose.write_gpu_override(args.gpus, remote=args.remote, first_gpu=args.first_gpu,
                                      out=Path(args.out) if args.out else None)
    base = "worker-remote" if args.remote else "worker"
    names = " ".join(f"{base}-gpu{args.first_gpu + i}" for i in range(args.gpus))
    profile = " --profile remote" if args.remote else ""
    _say(f"wrote {path}: {names}, one GPU each. Start them with:\n"
         f"  docker compose -f docker-compose.yml -f {path.name}{profile} up -d {names}")
    return 0


# ------------------------------------------------------------------ ingest, plans

def cmd_ingest(args) -> int:
    from populate import ingest
    if args.source == "simulated":
        keys = ingest.ingest_simulated(_prefix(args), args.profile, args.seed, args.tuning)
    else:
        keys = ingest.ingest_sensorium(_prefix(args), args.paths)
    _say(f"ingested {len(keys)} new scan(s)")
    return 0


def cmd_group(args) -> int:
    from . import pipeline
    scans = [_scan_key(text) for text in args.scans] if args.scans else None     # before any schema is made
    prefix = _prefix(args)
    pipeline.require_schemas(prefix, f"no scans to group into {args.name!r}",
                             f"ingest recordings first (`neuralreg --prefix {prefix} ingest sensorium PATH ...` "
                             "or `ingest simulated`)")
    modules = pipeline.activate(prefix)
    key = modules["similarity"].ScanGroup.add(args.name, scans, image_set=args.image_set,
                                               description=args.description)
    n = len(modules["similarity"].ScanGroup.Member & key)
    _say(f"scan group {args.name!r}: {n} scans")
    return 0


_SCAN_KEY_RANGES = {"animal_id": (-2 ** 31, 2 ** 31 - 1), "session": (-2 ** 15, 2 ** 15 - 1),
                    "scan_idx": (-2 ** 15, 2 ** 15 - 1)}     # int32, int16, int16: experiment.Scan


def _scan_key(text: str) -> dict:
    """'ANIMAL-SESSION-SCAN' (e.g. 26872-17-20) to a Scan key: exactly three whole numbers, each in its
    column's range; anything else is refused (an extra part was dropped silently before)."""
    parts = text.split("-")
    if len(parts) != 3 or not all(part.isdigit() and part.isascii() for part in parts):
        raise ValueError(f"--scans {text!r}: write ANIMAL-SESSION-SCAN, three whole numbers (e.g. 26872-17-20)")
    key = dict(zip(_SCAN_KEY_RANGES, map(int, parts)))
    for name, (low, high) in _SCAN_KEY_RANGES.items():
        if not low <= key[name] <= high:
            raise ValueError(f"--scans {text!r}: {name} {key[name]} is outside {low}..{high}")
    return key


def cmd_plan_similarity(args) -> int:
    plans.plan_similarity(_prefix(args), args.model, vgg=args.vgg, model_seed=args.model_seed)
    return 0


def cmd_plan(args) -> int:
    plans.plan_study(_prefix(args), args.study, **{k: getattr(args, a) for k, a in plans.PLAN_ARGS.items()})
    return 0


# ------------------------------------------------------------------ populate, status, jobs, report, drop

def cmd_populate(args) -> int:
    from populate import worker
    args.prefix, args.threads = _prefix(args), getattr(args, "threads", None)
    if not args.forever and _nothing_to_populate(args.prefix):
        return 0
    return worker.run(args)


def _nothing_to_populate(prefix: str) -> bool:
    """One pass of `populate` on a prefix without schemas is refused (nothing is created: SchemasMissing);
    on one with nothing ingested and nothing planned it says so (True: nothing to do). A `--forever`
    worker is not asked: it may start before the study exists, and waits for it."""
    from . import pipeline
    first_steps = (f"ingest recordings (`neuralreg --prefix {prefix} ingest simulated`, or `ingest sensorium PATH ...` "
                   f"and `neuralreg --prefix {prefix} group NAME --image-set SET`) and plan a study "
                   f"(`neuralreg --prefix {prefix} plan demo`), then populate")
    pipeline.require_schemas(prefix, "nothing to populate (nothing ingested or planned)", first_steps)
    modules = pipeline.activate(prefix)
    if len(modules["experiment"].Scan()) or len(modules["classifier"].ClassifierPlan()):
        return False
    _say(f"nothing to populate in prefix {prefix!r}: no scan is ingested and no classifier is planned; {first_steps}")
    return True


def cmd_status(args) -> int:
    _show_status(_prefix(args), _open_existing(args), as_json=args.json)
    return 0


def _show_status(prefix: str, modules: dict, as_json: bool = False) -> None:
    from populate import jobs
    rows = jobs.table_status(modules)
    if as_json:
        _print_json({"prefix": prefix, "connection": settings.connection_summary(), "tables": rows})
        return
    print(f"schemas with prefix '{prefix}' on {settings.connection_summary()}")
    for r in rows:
        count = "-" if r["rows"] is None else r["rows"]
        queue = ""
        if "done" in r and r["done"] is not None:
            queue = (f"{r['done']}/{r['done'] + r['remaining']} done; jobs: {r['pending']} pending, "
                     f"{r['reserved']} reserved, {r['error']} error")
        elif r["rows"] is None:
            queue = "(not in the database)"
        print(f"  {r['table']:<42} {count:>9}  {queue}")
    print(jobs.STATUS_LEGEND)
    for line in jobs.unqueued(prefix, rows):
        print(line)


def _parse_key(items: list[str]) -> dict:
    """NAME=VALUE texts to {NAME: 'VALUE'}: the values stay text, and populate.jobs parses each by its
    attribute's type in the table it restricts (refusing what does not parse)."""
    key = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"key part {item!r}: write NAME=VALUE")
        if name in key:
            raise ValueError(f"key part {item!r}: {name} is given twice")
        key[name] = value
    return key


def cmd_jobs(args) -> int:
    from populate import jobs, worker
    prefix = _prefix(args)
    tables = [t for t in worker.computed_tables(_open_existing(args)) if t().is_declared]
    if args.action in ("status", "held"):
        rows = jobs.progress(tables) if args.action == "status" else jobs.held(tables)
        if args.json:
            _print_json({"prefix": prefix, "tables" if args.action == "status" else "held": rows})
        else:
            print("\n".join(jobs.progress_lines(prefix, rows) if args.action == "status" else jobs.held_lines(rows)))
    elif args.action == "errors":
        found = jobs.errors(tables, args.table)
        if args.json:
            _print_json({"prefix": prefix, "errors": found})
            return 0
        for e in found:
            print(f"{e['table']} {e['key']} on {e['host']} pid {e['pid']} at {e['when']}:\n  {e['message']}")
            if args.trace and e["stack"]:
                print("  " + e["stack"].replace("\n", "\n  "))
        print(f"{len(found)} job(s) in error")
    elif args.action == "retry":
        n = jobs.retry(tables, args.table, _parse_key(args.key) if args.key else None)
        print(f"cleared {n} error(s): the next populate tries them again")
    elif args.action == "prioritize":
        if not args.table or args.priority is None:
            raise ValueError("jobs prioritize needs --table and --priority N (lower runs first)")
        n = jobs.prioritize(tables, args.table, args.priority, _parse_key(args.key) if args.key else None)
        print(f"{n} pending job(s) now at priority {args.priority}")
    elif args.action == "ignore":
        if not args.table or not args.key:
            raise ValueError("jobs ignore needs --table and --key NAME=VALUE ...")
        jobs.ignore(tables, args.table, _parse_key(args.key))
        print("ignored")
    else:
        reclaimed = jobs.reclaim(tables)
        print(f"reclaimed: {reclaimed or 'nothing'}")
    return 0


def cmd_report(args) -> int:
    from . import report
    _open_existing(args)
    written = report.write_report(_prefix(args), args.out, say=_say)
    if not written:
        _say("nothing to report yet: no classifiers or checks in these tables")
    for path in written:
        _say(f"  {path}")
    _say(f"{len(written)} files in {args.out}")
    return 0


def cmd_drop(args) -> int:
    from . import pipeline
    prefix = _prefix(args)
    pipeline.schema_names(prefix)                                   # a valid prefix, or ValueError
    existing = pipeline.existing_prefixes()
    if prefix not in existing:
        others = ", ".join(p for p in existing if p != prefix) or "none"
        raise pipeline.SchemasMissing(f"prefix {prefix!r} has no schemas on {settings.connection_summary()}; "
                                      f"prefixes with schemas here: {others}")
    names = [f"{prefix}_{m}" for m in existing[prefix]]
    _say(f"on {settings.connection_summary()}, drop {len(names)} schema(s) with all their rows and stored files: "
         f"{', '.join(names)}")
    if not args.yes:
        try:
            answer = input(f"type the prefix ({prefix}) to drop them: ")
        except EOFError:
            answer = ""
        if answer.strip() != prefix:
            raise ValueError(f"not confirmed (typed {answer.strip()!r}, not {prefix!r}): nothing dropped")
    pipeline.drop_all(prefix)
    _say(f"dropped {', '.join(names)}")
    return 0


def cmd_store(args) -> int:
    from . import store_gc
    result = store_gc.collect(_open_existing(args), delete=args.delete, min_age=args.min_age)
    for o in result["orphans"]:
        age = "age unknown" if o["age_s"] is None else f"{o['age_s']:.0f} s old"
        print(f"  {o['path']}  {o['bytes']} bytes, {age}")
    total = sum(o["bytes"] for o in result["orphans"])
    _say(f"{len(result['orphans'])} file(s) of prefix {_prefix(args)!r} in the store that no row references "
         f"({total / 2 ** 20:.1f} MiB; {result['stored']} stored, {result['referenced']} referenced)")
    if result["dry_run"]:
        _say("dry run: nothing removed (`neuralreg store gc --delete` removes those older than --min-age)")
    else:
        _say(f"removed {result['deleted']} ({result['bytes_freed'] / 2 ** 20:.1f} MiB); kept {result['kept_young']} "
             f"younger than {args.min_age:g} s or of unknown age (an insert may be writing them)")
    return 0


# ------------------------------------------------------------------ demo

def cmd_demo(args) -> int:
    import logging
    from populate import corruptions, ingest
    from . import db, pipeline, report
    prefix = getattr(args, "prefix", None) or os.environ.get("NEURALREG_PREFIX") or plans.DEMO_PREFIX
    args.prefix = prefix
    started = time.time()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("neuralreg").setLevel(logging.INFO)
    _say("== 1/5 database")
    db.up(say=_say)
    _say("== 2/5 ingest the simulated experiment")
    ingest.ingest_simulated(prefix, args.profile, args.seed)
    _say("== 3/5 study configuration")
    plans.plan_study(prefix, plans.DEMO_STUDY[args.profile], model=plans.DEMO_MODEL[args.profile],
                     dataset=args.dataset, vgg=False if args.profile != "full" else None)
    if args.profile != "tiny" and args.dataset.startswith("offline"):   # a LOCAL set, not CIFAR-10-C (docs/robustness.md)
        corruptions.import_local(prefix, args.dataset)
    modules = pipeline.activate(prefix)
    predictive = modules["predictive"]
    model = predictive.model_key(predictive.PredictiveModelConfig.add(plans.DEMO_MODEL[args.profile]), 0)
    _say("== 4/5 populate the graph (Eq. 1, predictive models, similarity matrices, checks, classifiers, "
         "noise and attack evaluation)")
    from populate import worker
    made = worker.run_once(worker.computed_tables(modules))
    errors = {name: e for name, (_, e) in made.items() if e}
    _say("== 5/5 summary")
    _show_status(prefix, modules)
    summary = report.demo_summary(modules, model)
    summary["classifiers"] = report.classifier_summary(modules)
    print(report.format_demo_summary(summary))
    if summary["classifiers"]:
        print(report.format_classifiers(summary["classifiers"]))
    figures = report.write_report(prefix, args.out, say=_say)
    _say(f"\nfigures and tables (PNG, CSV) from the tables, in {Path(args.out).resolve()}: "
         f"{', '.join(p.name for p in figures if p.suffix == '.png')}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    _say(f"\ndemo finished in {time.time() - started:.0f} s; its tables are in the schemas '{prefix}_*'. "
         f"Every command takes that prefix:\n"
         f"  neuralreg --prefix {prefix} status    (or: export NEURALREG_PREFIX={prefix})\n"
         f"  pipeline.open_existing('{prefix}') in Python (binds to these schemas, creates nothing)")
    if errors:
        _say(f"jobs failed: {errors} (neuralreg --prefix {prefix} jobs errors)")
        return 1
    return 0


# ------------------------------------------------------------------ selftest

def cmd_selftest(args) -> int:
    from . import selftest
    return selftest.run(args.device, args.quick, args.json, say=_say)


# ------------------------------------------------------------------ parser

class _Version(argparse.Action):
    """--version: the package version and, in a git checkout, its commit (settings.code_version)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"neuralreg {settings.code_version()}")
        parser.exit()


def _common() -> argparse.ArgumentParser:
    """--prefix and --threads: on the command and on every subcommand, so either position works (a
    value after the subcommand wins)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default=argparse.SUPPRESS,
                        help="schema prefix (default: $NEURALREG_PREFIX or 'neuralreg'; demo: 'neuralreg_demo')")
    common.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                        help="torch CPU threads (default: the CPUs this process may use, divided by "
                             "$NEURALREG_WORKERS)")
    return common


def build_parser() -> argparse.ArgumentParser:
    from populate import corruptions, jobs as jobs_text, launch, worker
    common = _common()
    parser = argparse.ArgumentParser(prog="neuralreg", description=__doc__, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, **kwargs):
        p = sub.add_parser(name, parents=[common], **kwargs)
        p.set_defaults(func=func)
        return p

    p = command("db", cmd_db, help="database bring-up")
    p.add_argument("action", choices=["up", "status", "down", "worker-user"])
    p.add_argument("--name", default="neuralreg_worker", help="worker-user: the account to create")
    p.add_argument("--reset-password", action="store_true",
                   help="with up: set the existing application account's password to a new one")
    p.add_argument("--json", action="store_true", help="status: print one JSON object")
    p.add_argument("--force", action="store_true",
                   help="worker-user: take over an existing account this project did not create (resets its password)")
    p.add_argument("--rotate", action="store_true",
                   help="worker-user: give the existing worker account a new password (default: keep it)")

    p = command("compose-gpus", cmd_compose_gpus, help="write docker-compose.gpus.yml: one compose worker per GPU")
    p.add_argument("gpus", type=int, help="GPUs (workers) on this host")
    p.add_argument("--remote", action="store_true", help="copy the `remote` profile's worker (no database here)")
    p.add_argument("--first-gpu", type=int, default=0, help="id of the first GPU (default 0)")
    p.add_argument("--out", help="file to write (default: docker-compose.gpus.yml in the project)")

    p = command("ingest", cmd_ingest, help="insert recordings")
    isub = p.add_subparsers(dest="source", required=True)
    q = isub.add_parser("simulated", parents=[common], help="the embedded simulated experiment")
    q.add_argument("--profile", default="demo", choices=["tiny", "demo", "full"])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--tuning", default="mouse", choices=["mouse", "low", "high"],
                   help="receptive fields of the simulated neurons: mouse (V1-like, default), low (coarse, "
                        "luminance-sensitive: similarity close to the lowpass target) or high (fine: close to "
                        "the highpass target); its scan group is <image set>-<tuning> (docs/controls.md)")
    q = isub.add_parser("sensorium", parents=[common], help="Sensorium 2022 static scans (folders or zips)")
    q.add_argument("paths", nargs="+")
    corruptions.register(command)          # `neuralreg corruptions import|local` (populate/corruptions.py)

    p = command("populate", cmd_populate, help="run the worker loop over the graph (the worker's options)",
                description=worker.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_options(p, common=False)

    p = command("status", cmd_status, help="rows per table and job queues", description=jobs_text.COLUMNS)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = command("jobs", cmd_jobs, help="job queues: progress, errors, retry, ignore, reclaim jobs of dead workers",
                description="Job queues per computed table. " + jobs_text.COLUMNS)
    p.add_argument("action", nargs="?", default="status", choices=["status", "errors", "held", "retry", "ignore",
                                                                      "reclaim", "prioritize"])
    p.add_argument("--priority", type=int, help="prioritize: the new priority (lower runs first; default jobs: 5)")
    p.add_argument("--key", nargs="+", metavar="NAME=VALUE", help="parts of a key (retry, ignore)")
    p.add_argument("--table", help="e.g. PredictiveModel or predictive.PredictiveModel")
    p.add_argument("--trace", action="store_true", help="errors: print the tracebacks")
    p.add_argument("--json", action="store_true", help="status, errors, held: print one JSON object")

    launch.add_parser(sub, common)       # `launch slurm`: populate/launch.py
    p = command("group", cmd_group, help="define a scan group (scans whose similarity matrices are averaged)")
    p.add_argument("name")
    p.add_argument("--image-set", help="every scan of this image set (default: the scans named by --scans)")
    p.add_argument("--scans", nargs="+", metavar="ANIMAL-SESSION-SCAN", help="e.g. 26872-17-20")
    p.add_argument("--description", default="")

    p = command("plan-similarity", cmd_plan_similarity,
                help="insert a predictive-model config and the paper's similarity configs")
    p.add_argument("--model", default="demo", help="predictive-model recipe: tiny, demo or paper")
    p.add_argument("--model-seed", type=int, default=0,
                   help="seed of the predictive model the model and shuffle matrices use (default 0)")
    p.add_argument("--vgg", action=argparse.BooleanOptionalAction, default=None,
                   help="include the VGG control (default: when its weights are on this machine)")

    p = command("plan", cmd_plan, help="insert the rows that define a study: configs, regularizers, seeds")
    p.add_argument("study", choices=list(plans.STUDIES))
    p.add_argument("--group", nargs="+", help="scan groups whose averaged matrices are the targets (default: all)")
    p.add_argument("--dataset", help="cifar10, cifar100, offline (stand-in: digits) or offline-photos (stand-in: "
                                     "patches of photos shipped with scikit-image) (default: the study's)")
    p.add_argument("--classifier", help="classifier recipe: tiny, demo or paper (default: the study's)")
    p.add_argument("--model", help="predictive-model recipe: tiny, demo or paper (default: the study's)")
    p.add_argument("--model-seed", type=int, default=0,
                   help="seed of the predictive model behind the neural-model and shuffle targets (default 0)")
    p.add_argument("--data-root", help="a folder holding the CIFAR .tar.gz (md5-checked and extracted into "
                                       "$NEURALREG_DATA, where workers on this machine look)")
    p.add_argument("--seeds", type=worker.count(1), help="number of seeds, 0..N-1 (default: the study's)")
    p.add_argument("--attacks", help="attack suite: tiny, demo, paper or none (default: the study's)")
    p.add_argument("--autoattack", help="AutoAttack's samples: tiny, demo, paper or none (default: the study's)")
    p.add_argument("--vgg", action=argparse.BooleanOptionalAction, default=None,
                   help="include the VGG control (default: when its weights are on this machine)")

    export.add_command(command)                         # `neuralreg export` (neuralreg_schema/export.py)
    p = command("report", cmd_report, help="the paper's figures (PNG) and tables (CSV), from queries")
    p.add_argument("--out", default="report", help="output folder (default: ./report)")

    p = command("drop", cmd_drop, help="drop every schema of the prefix, after you type the prefix back")
    p.add_argument("--yes", action="store_true", help="do not ask")

    p = command("store", cmd_store, help="the object store: gc lists (--delete: removes) files no row references")
    p.add_argument("action", choices=["gc"])
    p.add_argument("--delete", action="store_true", help="remove the orphans (default: a dry run that lists them)")
    p.add_argument("--min-age", type=float, default=3600.0,
                   help="with --delete: remove only orphans older than this many seconds (default 3600: a worker "
                        "writes its file just before its row)")

    p = command("demo", cmd_demo, help="database up, simulated experiment, populate, summary")
    p.add_argument("--profile", default="demo", choices=["tiny", "demo", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="offline-photos",
                   help="classification data set: offline-photos (stand-in: patches of photos shipped with "
                        "scikit-image, default), offline (stand-in: the bundled digits), cifar10 or cifar100")
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--out", default="demo_output", help="folder for the report's figures and CSV tables")

    p = command("selftest", cmd_selftest, help="check this machine before starting workers: kernels against a "
                "float64 reference, bf16, the tiny study through a worker, throughput (neuralreg_schema/selftest.py)")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if available")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds on a CPU; the test suite's run)")
    p.add_argument("--json", help="also write every check and figure to this JSON file")
    return parser


# ------------------------------------------------------------------ main

def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)                      # a usage error exits 2 here
    if args.command == "jobs" and args.json and args.action not in ("status", "errors", "held"):
        parser.error("--json goes with `jobs` (status), `jobs errors` and `jobs held`")
    if args.command == "db" and args.json and args.action != "status":
        parser.error("--json goes with `db status`")
    if args.command == "db" and (args.force or args.rotate) and args.action != "worker-user":
        parser.error("--force and --rotate go with `db worker-user`")
    from pymysql.err import OperationalError
    from . import db
    from .compute.common import runtime
    try:
        if args.command != "demo" and getattr(args, "json", False):
            _stdout_for_json()
        runtime.configure_threads(getattr(args, "threads", None))
        if args.command not in ("db", "compose-gpus", "selftest"):       # the prefix rule, before any connection
            from . import pipeline
            pipeline.check_prefix(getattr(args, "prefix", None) or os.environ.get("NEURALREG_PREFIX")
                                  or (plans.DEMO_PREFIX if args.command == "demo" else settings.DEFAULT_PREFIX))
        if args.command not in ("db", "demo", "compose-gpus", "selftest"):     # selftest reports it itself
            target = db.configured_target()
            if not db.answers(target, timeout=3):
                raise db.DatabaseError(f"no database answers at {target.host}:{target.port}: run "
                                       "`neuralreg db up`, or point DJ_HOST/DJ_PORT at your server")
        return args.func(args)
    except KeyboardInterrupt:
        print("neuralreg: error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:                           # e.g. the worker's "no computed table named ..."
        if isinstance(exc.code, str):
            print(f"neuralreg: error: {one_line(exc.code)}", file=sys.stderr)
            return 1
        raise
    except (OperationalError, *db.driver_errors()) as exc:
        if os.environ.get("NEURALREG_DEBUG"):
            raise
        target = db.configured_target()
        print(f"neuralreg: error: database at {target.host}:{target.port}: {one_line(exc)} "
              "(is it up? `neuralreg db up`; are DJ_USER/DJ_PASS or .secrets/ right?)", file=sys.stderr)
        return 1
    except Exception as exc:                            # noqa: BLE001 - every runtime error: one line, exit 1
        if os.environ.get("NEURALREG_DEBUG"):
            raise
        from .compute.classifier.data import DatasetError
        from .compute.experiment.recording import RecordingError
        expected = (RecordingError, db.DatabaseError, DatasetError, FileNotFoundError, ValueError, LookupError)
        what = one_line(exc) if isinstance(exc, expected) else f"{type(exc).__name__}: {one_line(exc)}"
        print(f"neuralreg: error: {what}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
