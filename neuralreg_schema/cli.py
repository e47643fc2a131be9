"""The `neuralreg` command.

    neuralreg db up | status | down          bring the database up (idempotent), report, stop ours
    neuralreg ingest simulated [--profile demo] [--seed 0]
    neuralreg ingest sensorium PATH [PATH ...]   folders or zips of Sensorium 2022 static scans
    neuralreg populate                         run the worker loop once over the whole graph
    neuralreg group NAME --image-set SET | --scans A-S-I ...   scans whose similarity matrices are averaged
    neuralreg plan-similarity [--model demo] [--vgg]   predictive-model config + the paper's similarity configs
    neuralreg status                           rows per table and job queues
    neuralreg jobs [errors|retry|ignore|reclaim] [--table T] [--key NAME=VALUE ...]   job administration
    neuralreg demo [--profile demo]            all of the above on the simulated experiment (prefix 'neuralreg_demo')
    neuralreg compose-gpus N [--remote]        docker-compose.gpus.yml: one compose worker per GPU

`--prefix` (or NEURALREG_PREFIX) selects the schemas: `<prefix>_experiment`, ... (default 'neuralreg').
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from populate import plans

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
    elif args.action == "worker-user":
        db.worker_user(args.name, say=_say)
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


# ------------------------------------------------------------------ ingest


def cmd_ingest(args) -> int:
    from populate import ingest
    if args.source == "simulated":
        keys = ingest.ingest_simulated(_prefix(args), args.profile, args.seed)
    else:
        keys = ingest.ingest_sensorium(_prefix(args), args.paths)
    _say(f"ingested {len(keys)} new scan(s)")
    return 0


# ------------------------------------------------------------------ populate / status

def cmd_populate(args) -> int:
    from populate import worker
    argv = ["--prefix", _prefix(args)] + (["--forever"] if args.forever else [])
    if args.threads:
        argv += ["--threads", str(args.threads)]
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
        print(f"  {name:<42} {count:>9}  {jobs}")
    return 0


def _parse_key(items: list[str]) -> dict:
    key = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"key part {item!r}: write NAME=VALUE")
        key[name] = int(value) if value.lstrip("-").isdigit() else value
    return key


def cmd_jobs(args) -> int:
    from populate import jobs, worker
    from . import pipeline
    tables = worker.computed_tables(pipeline.activate(_prefix(args)))
    if args.action == "status":
        print(f"{'table':<36} {'done':>7} {'remaining':>9} {'pending':>8} {'reserved':>9} {'error':>6} {'ignore':>7}")
        for r in jobs.progress(tables):
            print(f"{r['table']:<36} {r['done']:>7} {r['remaining']:>9} {r['pending']:>8} {r['reserved']:>9} "
                  f"{r['error']:>6} {r['ignore']:>7}")
    elif args.action == "errors":
        found = jobs.errors(tables, args.table)
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


# ------------------------------------------------------------------ demo

def demo_summary(prefix: str, model: dict | None = None) -> dict:
    """The numbers the demo prints: per scan, Spearman(w_a, true reliability), the predictive
    model's correlations and Spearman(v_a, true reliability); per group, the Fig. 1C/D checks.
    `model` ({'model_hash': ...}) picks the predictive-model config (default: the first one)."""
    import numpy as np
    from scipy.stats import spearmanr
    from . import pipeline
    modules = pipeline.activate(prefix)
    experiment, predictive, similarity = modules["experiment"], modules["predictive"], modules["similarity"]
    if model is None:
        hashes = predictive.PredictiveModelConfig.to_arrays("model_hash", order_by="model_hash")
        model = {"model_hash": hashes[0] if len(hashes) else ""}
    scans = {}
    for key in experiment.Scan.keys(order_by="animal_id, session, scan_idx"):
        scan = (experiment.Scan & key).fetch1()
        row = {"neurons": scan["n_neurons"], "trials": scan["n_trials"],
               "oracle_images": scan["n_oracle_images"], "source": scan["source"]}
        joined = experiment.Neuron.Unit * experiment.SimulatedUnit & key
        if len(joined):
            w, truth = joined.to_arrays("snr_weight", "true_reliability")
            row["median_w"] = float(np.median(w))
            row["spearman_w_truth"] = float(spearmanr(w, truth).statistic)
        for fit in (predictive.PredictiveModel & key & model).to_dicts():
            mkey = {**key, **model}
            row["model_test_corr"] = fit["mean_test_corr"]
            row["model_oracle_corr"] = fit["mean_oracle_corr"]
            row["model_epochs"] = fit["epochs_run"]
            row["model_seconds"] = fit["train_seconds"]
            units = predictive.PredictiveModel.Unit * experiment.SimulatedUnit & mkey
            if len(units):
                v, truth = units.to_arrays("test_corr", "true_reliability")
                row["spearman_v_truth"] = float(spearmanr(v, truth).statistic)
        scans["{animal_id}-{session}-{scan_idx}".format(**key)] = row
    groups = {}
    for st in (similarity.SimilarityStability & model).to_dicts(order_by="scan_group"):
        groups[st["scan_group"]] = {
            "scans": st["n_scans"], "oracle_images": st["n_oracle_images"],
            "r_model_oracle": st["r_model_oracle"], "r_data_oracle": st["r_data_oracle"],
            "eq4_scan_std": (st["scan_fluctuation"] or {}).get("std"),
            "eq5_repeat_std": st["repeat_fluctuation"]["std"]}
    configs = similarity.SimilarityConfig & [model, "model_hash is null"]
    targets = [{"group": r["scan_group"], "label": (similarity.SimilarityConfig & r).fetch1("label"),
                "images": r["n_images"], "scans": r["n_scans"], "std_offdiag": r["std_offdiag"]}
               for r in (similarity.AveragedSimilarity & configs.proj()).to_dicts(order_by="scan_group, sim_hash")]
    return {"scans": scans, "groups": groups, "targets": targets}


def print_summary(summary: dict) -> None:
    nan = float("nan")
    print(f"\n{'scan':>14} {'neurons':>8} {'trials':>7} {'oracle':>7} {'median w_a':>11} {'rho(w_a,true)':>14} "
          f"{'test r':>7} {'oracle r':>9} {'rho(v_a,true)':>14} {'train s':>8}")
    for name, row in summary["scans"].items():
        print(f"{name:>14} {row['neurons']:>8} {row['trials']:>7} {row['oracle_images']:>7} "
              f"{row.get('median_w', nan):>11.3f} {row.get('spearman_w_truth', nan):>14.3f} "
              f"{row.get('model_test_corr', nan):>7.3f} {row.get('model_oracle_corr', nan):>9.3f} "
              f"{row.get('spearman_v_truth', nan):>14.3f} {row.get('model_seconds', nan):>8.0f}")
    for name, g in summary["groups"].items():
        eq4 = g["eq4_scan_std"]
        print(f"\nscan group {name} ({g['scans']} scans, {g['oracle_images']} oracle images):\n"
              f"  r(S_model, S_oracle) = {g['r_model_oracle']:.3f}   r(S_data, S_oracle) = {g['r_data_oracle']:.3f}"
              f"   (paper, Fig. 1D: 0.73 and 0.39)\n"
              f"  s.d. of Eq. 4 (across scans) = {eq4 if eq4 is None else format(eq4, '.3f')}   "
              f"s.d. of Eq. 5 (across repeats) = {g['eq5_repeat_std']:.3f}   (paper, Fig. 1C: Eq. 4 narrower)")
    if summary["targets"]:
        print("\naveraged similarity matrices (regularization targets):")
        for t in summary["targets"]:
            print(f"  {t['group']:<16} {t['label']:<24} {t['images']:>5} images x {t['scans']} scans, "
                  f"s.d. off-diagonal {t['std_offdiag']:.3f}")


def classifier_summary(prefix: str) -> list[dict]:
    """Per data set, classifier recipe and regularizer: clean test accuracy over seeds, the held-out
    similarity loss before and after training, the layer with the largest final gamma_k, the accuracy
    at the strongest level of the first noise config and the median and mean minimal L2 / Linf
    perturbation of the first attack suite (clean errors as 0; when evaluated). Built on report's
    queries (one query per table)."""
    import numpy as np
    import pandas as pd
    from . import pipeline, report
    modules = pipeline.activate(prefix)
    runs = report.classifier_table(modules)
    if runs.empty:
        return []
    key = report.CLASSIFIER_KEY
    runs = runs.sort_values(["dataset", "config_name", "kind", "seed"], kind="stable")
    noisy, noise_sd = pd.Series(dtype=float), None
    noise = report.noise_table(modules)
    if not noise.empty:
        noise = noise[noise["noise_name"] == sorted(noise["noise_name"].unique())[0]]
        noise_sd = float(noise["sigma"].max())
        noisy = noise[noise["sigma"] == noise_sd].set_index(key)["accuracy"]
    medians, means = {}, {}
    perturbation = report.perturbation_table(modules)
    if not perturbation.empty:
        perturbation = perturbation[perturbation["suite"] == sorted(perturbation["suite"].unique())[0]]
        medians = {norm: part.set_index(key)["median"] for norm, part in perturbation.groupby("norm")}
        means = {norm: part.set_index(key)["mean"] for norm, part in perturbation.groupby("norm")}
    weights = pd.DataFrame(modules["classifier"].RegularizedClassifier.LayerWeight.to_dicts())
    top = (weights.loc[weights.groupby(key)["gamma"].idxmax()].set_index(key)["layer"] if not weights.empty
           else pd.Series(dtype=int))
    out = []
    for (_, config, label, group), part in runs.groupby(["dataset", "config_name", "label", "scan_group"],
                                                         sort=False, dropna=False):
        index = pd.MultiIndex.from_frame(part[key])
        held = part.dropna(subset=["heldout_loss"])
        acc = part["test_accuracy"].to_numpy(float)
        out.append({
            "dataset": part["dataset"].iloc[0], "config": config, "regularizer": label,
            "scan_group": None if pd.isna(group) else group,
            "accuracy": acc.tolist(), "seconds": part["train_seconds"].tolist(),
            "heldout_before": held["initial_heldout_loss"].tolist(), "heldout_after": held["heldout_loss"].tolist(),
            "top_layer": [int(k) for k in top.reindex(index).dropna()],
            "noisy_accuracy": noisy.reindex(index).dropna().tolist(), "noise_sd": noise_sd if len(noisy) else None,
            **{f"median_{n}": medians[n].reindex(index).dropna().tolist() if n in medians else []
               for n in ("l2", "linf")},
            **{f"mean_{n}": means[n].reindex(index).dropna().tolist() if n in means else []
               for n in ("l2", "linf")},
            "seeds": len(acc), "mean_accuracy": float(acc.mean()),
            "sem_accuracy": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else 0.0})
    return out


def print_classifiers(rows: list[dict]) -> None:
    if not rows:
        return
    import numpy as np
    sd = next((r["noise_sd"] for r in rows if r["noise_sd"] is not None), None)
    noisy = f"acc. at sd {sd:g}" if sd is not None else "noisy acc."
    print(f"\n{'classifier':<36} {'seeds':>5} {'clean accuracy':>16} {noisy:>14} {'median L2':>10} "
          f"{'mean L2':>8} {'median Linf':>11} {'mean Linf':>10} {'held-out Eq. 8 loss':>22} {'top layer':>10} "
          f"{'train s':>8}")

    def mean(values, fmt):
        return format(float(np.mean(values)), fmt) if values else "-"

    for r in rows:
        held = (f"{np.mean(r['heldout_before']):.3f} -> {np.mean(r['heldout_after']):.3f}"
                if r["heldout_after"] else "-")
        top = ",".join(str(k) for k in r["top_layer"]) or "-"
        name = f"{r['regularizer']} ({r['config']}, {r['dataset']})"
        print(f"{name:<36} {r['seeds']:>5} {r['mean_accuracy']:>9.3f} +- {r['sem_accuracy']:.3f} "
              f"{mean(r['noisy_accuracy'], '.3f'):>14} {mean(r['median_l2'], '.4f'):>10} "
              f"{mean(r['mean_l2'], '.4f'):>8} {mean(r['median_linf'], '.4f'):>11} {mean(r['mean_linf'], '.4f'):>10} "
              f"{held:>22} {top:>10} {np.mean(r['seconds']):>8.0f}")


def cmd_plan_similarity(args) -> int:
    plans.plan_similarity(_prefix(args), args.model, vgg=args.vgg)
    return 0


def cmd_plan(args) -> int:
    plans.plan_study(_prefix(args), args.study, groups=args.group, dataset=args.dataset, seeds=args.seeds, vgg=args.vgg,
               classifier=args.classifier, model=args.model, data_root=args.data_root)
    return 0


def cmd_report(args) -> int:
    from . import report
    written = report.write_report(_prefix(args), args.out)
    if not written:
        _say("nothing to report yet: no classifiers or checks in these tables")
    for path in written:
        _say(f"  {path}")
    _say(f"{len(written)} files in {args.out}")
    return 0


def cmd_group(args) -> int:
    from . import pipeline
    modules = pipeline.activate(_prefix(args))
    scans = None
    if args.scans:
        scans = [dict(zip(("animal_id", "session", "scan_idx"), map(int, s.split("-")))) for s in args.scans]
    key = modules["similarity"].ScanGroup.add(args.name, scans, image_set=args.image_set,
                                               description=args.description)
    n = len(modules["similarity"].ScanGroup.Member & key)
    _say(f"scan group {args.name!r}: {n} scans")
    return 0


def cmd_demo(args) -> int:
    import logging
    from populate import ingest
    from . import db
    prefix = args.prefix or os.environ.get("NEURALREG_PREFIX") or plans.DEMO_PREFIX
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
    from . import pipeline
    model = pipeline.activate(prefix)["predictive"].PredictiveModelConfig.add(plans.DEMO_MODEL[args.profile])
    _say("== 4/5 populate the graph (Eq. 1, predictive models, similarity matrices, checks, classifiers, "
         "noise and attack evaluation)")
    from populate import worker
    made = worker.run_once(worker.computed_tables(pipeline.activate(prefix)))
    errors = {name: e for name, (_, e) in made.items() if e}
    _say("== 5/5 summary")
    cmd_status(args)
    summary = demo_summary(prefix, model)
    summary["classifiers"] = classifier_summary(prefix)
    print_summary(summary)
    print_classifiers(summary["classifiers"])
    from . import report
    figures = report.write_report(prefix, args.out)
    _say(f"\nfigures and tables (PNG, CSV) from the tables, in {Path(args.out).resolve()}: "
         f"{', '.join(p.name for p in figures if p.suffix == '.png')}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    _say(f"\ndemo finished in {time.time() - started:.0f} s; its tables are in the schemas '{prefix}_*':\n"
         f"  neuralreg --prefix {prefix} status    or    pipeline.activate('{prefix}') in Python")
    if errors:
        _say(f"jobs failed: {errors} (see the job tables: Table.jobs.errors)")
        return 1
    return 0


# ------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuralreg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", help="schema prefix (default: $NEURALREG_PREFIX or 'neuralreg')")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the CPUs this process may "
                                                    "use, divided by $NEURALREG_WORKERS)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="database bring-up")
    p.add_argument("action", choices=["up", "status", "down", "worker-user"])
    p.add_argument("--name", default="neuralreg_worker", help="worker-user: the account to create")
    p.add_argument("--reset-password", action="store_true",
                   help="with up: set the existing application account's password to a new one")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("compose-gpus", help="write docker-compose.gpus.yml: one compose worker per GPU")
    p.add_argument("gpus", type=int, help="GPUs (workers) on this host")
    p.add_argument("--remote", action="store_true", help="copy the `remote` profile's worker (no database here)")
    p.add_argument("--first-gpu", type=int, default=0, help="id of the first GPU (default 0)")
    p.add_argument("--out", help="file to write (default: docker-compose.gpus.yml in the project)")
    p.set_defaults(func=cmd_compose_gpus)

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

    p = sub.add_parser("jobs", help="job queues: progress, errors, retry, ignore, reclaim jobs of dead workers")
    p.add_argument("action", nargs="?", default="status", choices=["status", "errors", "retry", "ignore", "reclaim",
                                                                      "prioritize"])
    p.add_argument("--priority", type=int, help="prioritize: the new priority (lower runs first; default jobs: 5)")
    p.add_argument("--key", nargs="+", metavar="NAME=VALUE", help="parts of a key (retry, ignore)")
    p.add_argument("--table", help="e.g. PredictiveModel or predictive.PredictiveModel")
    p.add_argument("--trace", action="store_true", help="errors: print the tracebacks")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("group", help="define a scan group (scans whose similarity matrices are averaged)")
    p.add_argument("name")
    p.add_argument("--image-set", help="every scan of this image set (default: the scans named by --scans)")
    p.add_argument("--scans", nargs="+", metavar="ANIMAL-SESSION-SCAN", help="e.g. 26872-17-20")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_group)

    p = sub.add_parser("plan-similarity", help="insert a predictive-model config and the paper's similarity configs")
    p.add_argument("--model", default="demo", help="predictive-model recipe: tiny, demo or paper")
    p.add_argument("--vgg", action=argparse.BooleanOptionalAction, default=None,
                   help="include the VGG control (default: when its weights are on this machine)")
    p.set_defaults(func=cmd_plan_similarity)

    p = sub.add_parser("plan", help="insert the rows that define a study: configs, regularizers, seeds")
    p.add_argument("study", choices=list(plans.STUDIES))
    p.add_argument("--group", nargs="+", help="scan groups whose averaged matrices are the targets (default: all)")
    p.add_argument("--dataset", help="cifar10, cifar100, offline (stand-in: digits) or offline-photos (stand-in: "
                                     "patches of photos shipped with scikit-image) (default: the study's)")
    p.add_argument("--classifier", help="classifier recipe: tiny, demo or paper (default: the study's)")
    p.add_argument("--model", help="predictive-model recipe: tiny, demo or paper (default: the study's)")
    p.add_argument("--data-root", help="a folder holding the CIFAR .tar.gz (md5-checked and extracted into "
                                       "$NEURALREG_DATA, where workers on this machine look)")
    p.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default: the study's)")
    p.add_argument("--vgg", action=argparse.BooleanOptionalAction, default=None,
                   help="include the VGG control (default: when its weights are on this machine)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("report", help="the paper's figures (PNG) and tables (CSV), from queries")
    p.add_argument("--out", default="report", help="output folder (default: ./report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="database up, simulated experiment, populate, summary")
    p.add_argument("--profile", default="demo", choices=["tiny", "demo", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="offline-photos",
                   help="classification data set: offline-photos (stand-in: patches of photos shipped with "
                        "scikit-image, default), offline (stand-in: the bundled digits), cifar10 or cifar100")
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--out", default="demo_output", help="folder for the report's figures and CSV tables")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pymysql.err import OperationalError
    from . import db
    from .compute import runtime
    from .compute.datasets import DatasetError
    from .compute.recording import RecordingError
    try:
        runtime.configure_threads(args.threads)
        if args.command not in ("db", "demo", "compose-gpus"):
            target = db.configured_target()
            if not db.answers(target, timeout=3):
                raise db.DatabaseError(f"no database answers at {target.host}:{target.port}: run "
                                       "`neuralreg db up`, or point DJ_HOST/DJ_PORT at your server")
        return args.func(args)
    except (RecordingError, db.DatabaseError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"neuralreg: error: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, *db.driver_errors()) as exc:
        target = db.configured_target()
        print(f"neuralreg: error: database at {target.host}:{target.port}: {exc.args[-1]} "
              "(is it up? `neuralreg db up`; are DJ_USER/DJ_PASS or .secrets/ right?)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
