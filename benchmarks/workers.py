"""Benchmark: worker throughput and CPU use with 1 and 2 worker processes, and DataJoint's overhead per job.

For each worker count (default 1, then 2) it ingests the tiny simulated study (2 scans x 40 neurons)
into a fresh schema prefix, adds one PredictiveModel config and --configs seeds of it (PredictiveSeed
rows 0 .. configs - 1; --epochs epochs each, so 2 x configs independent jobs of about a second),
starts that many `python -m populate.worker --prefix P --tables PredictiveModel` processes at once
(torch limited to --threads threads each, so 2 workers can use 2 cores) and waits for them. Jobs
are kept in the job table (DJ_JOBS_KEEP_COMPLETED=true) so their times can be read back. It prints,
measured in this run:
  jobs/s     jobs / span, span = first reservation to last completion (worker start-up excluded)
  wall       seconds from starting the workers to the last one exiting (start-up, imports included)
  cpu        CPU seconds of the worker processes (getrusage RUSAGE_CHILDREN) / wall, summed over
             workers, in cores (2.0 = both cores busy all the time; the database server is not counted)
  job        mean seconds per job inside populate (job table `duration`: make_fetch twice, training,
             insert, transaction), of which `train` in the training itself (PredictiveModel.train_seconds)
  overhead   job - train: fetching the scan, storing weights/predictions, DataJoint's transaction and
             job bookkeeping, per job
then the speed-up (jobs/s with 2 workers / with 1). Finally DataJoint's own cost per job, with a
table whose make inserts one number (in a throw-away schema): seconds per key of populate minus
the time inside make, with and without reserve_jobs. Every prefix is dropped at the end. Needs the
database (`neuralreg db up`).

    python benchmarks/workers.py [--workers 1 2] [--configs 6] [--epochs 4] [--threads 1] [--trivial 200]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLAN = """
import sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
m["predictive"].PredictiveModelConfig.add("tiny", name=f"bench{sys.argv[3]}", max_epochs=int(sys.argv[3]),
                                          patience=int(sys.argv[3]))
m["predictive"].PredictiveSeed.add(*range(int(sys.argv[2])))      # seed 0 is there already
"""

STATS = """
import json, sys
from neuralreg_schema import pipeline
pm = pipeline.activate(sys.argv[1])["predictive"].PredictiveModel
jobs = pm.jobs.completed.to_dicts()
first = min(j["reserved_time"] for j in jobs)
last = max(j["completed_time"] for j in jobs)
print(json.dumps({"n": len(jobs), "rows": len(pm()), "errors": len(pm.jobs.errors),
                  "span": (last - first).total_seconds(),
                  "duration": sum(float(j["duration"]) for j in jobs) / len(jobs),
                  "train": float(sum(pm.to_arrays("train_seconds")) / len(pm())),
                  "pids": len({(j["host"], j["pid"]) for j in jobs})}))
"""


def _python(args, env=None):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def run_workers(n_workers: int, args) -> dict:
    from neuralreg_schema import pipeline
    prefix = f"neuralreg_benchw{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, DJ_JOBS_KEEP_COMPLETED="true", OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    try:
        _python(["-m", "neuralreg_schema.cli", "--prefix", prefix, "ingest", "simulated", "--profile", "tiny",
                 "--seed", "7"], env)
        _python(["-c", PLAN, prefix, str(args.configs), str(args.epochs)], env)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        workers = [subprocess.Popen([sys.executable, "-m", "populate.worker", "--prefix", prefix, "--tables",
                                     "PredictiveModel"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for _ in range(n_workers)]
        logs = [w.communicate()[1] for w in workers]
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if any(w.returncode for w in workers):
            raise SystemExit(f"a worker failed:\n{logs[0][-3000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        stats = json.loads(_python(["-c", STATS, prefix], env).strip().splitlines()[-1])
        if stats["errors"] or stats["rows"] != 2 * args.configs:
            raise SystemExit(f"{n_workers} worker(s): {stats['errors']} errors, {stats['rows']} of "
                             f"{2 * args.configs} models")
        return {"workers": n_workers, "wall": wall, "cpu": cpu / wall, **stats}
    finally:
        pipeline.drop_all(prefix)


def trivial_overhead(n_keys: int) -> dict:
    """Seconds per key of populate minus the time inside make, for a make that inserts one number."""
    from neuralreg_schema import settings
    dj = settings.configure()
    schema = dj.Schema(f"neuralreg_benchdj{uuid.uuid4().hex[:8]}")
    inside = [0.0]

    @schema
    class Item(dj.Lookup):
        definition = """
        # keys of the trivial table
        item : int32      # key
        """
        contents = [{"item": i} for i in range(n_keys)]

    @schema
    class Echo(dj.Computed):
        definition = """
        # one number per key: a make that does (almost) nothing
        -> Item
        ---
        value : int32     # the key again
        """

        def make(self, key):
            t = time.perf_counter()
            self.insert1({**key, "value": key["item"]})
            inside[0] += time.perf_counter() - t

    result = {}
    try:
        for label, reserve in (("direct", False), ("reserve_jobs", True)):
            inside[0] = 0.0
            started = time.perf_counter()
            Echo.populate(reserve_jobs=reserve)
            total = time.perf_counter() - started
            assert len(Echo()) == n_keys
            result[label] = {"per_key": total / n_keys, "make": inside[0] / n_keys,
                             "overhead": (total - inside[0]) / n_keys}
            with dj.config.override(safemode=False):
                Echo.delete_quick()
                Echo.jobs.delete_quick()
    finally:
        schema.drop(prompt=False)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    parser.add_argument("--configs", type=int, default=6, help="seeds of the config (x 2 scans = jobs) per run")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per job")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (OMP_NUM_THREADS)")
    parser.add_argument("--trivial", type=int, default=200, help="keys of the trivial-make table")
    args = parser.parse_args()
    print(f"{2 * args.configs} PredictiveModel jobs per run ('tiny' config, {args.epochs} epochs, "
          f"{args.threads} torch thread(s) per worker), {os.cpu_count()} CPU cores, load average before "
          f"{os.getloadavg()[0]:.2f} (other processes compete for the cores when it is high)")
    print(f"{'workers':>7} {'jobs':>5} {'jobs/s':>7} {'span s':>7} {'wall s':>7} {'cpu':>6} "
          f"{'job s':>6} {'train s':>7} {'overhead s':>10}")
    rates = {}
    for n in args.workers:
        r = run_workers(n, args)
        rates[n] = r["n"] / r["span"]
        print(f"{n:>7} {r['n']:>5} {rates[n]:>7.2f} {r['span']:>7.1f} {r['wall']:>7.1f} {r['cpu']:>6.2f} "
              f"{r['duration']:>6.2f} {r['train']:>7.2f} {r['duration'] - r['train']:>10.3f}"
              + ("" if r["pids"] == n else f"   (only {r['pids']} worker(s) got jobs)"), flush=True)
    if 1 in rates:
        for n in sorted(rates):
            if n != 1:
                print(f"speed-up with {n} workers: {rates[n] / rates[1]:.2f}x (jobs/s over the span)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    t = trivial_overhead(args.trivial)
    for label, r in t.items():
        print(f"DataJoint per job, trivial make ({label:>12}): {1000 * r['per_key']:6.1f} ms per key, "
              f"{1000 * r['make']:5.1f} ms inside make, overhead {1000 * r['overhead']:6.1f} ms")


if __name__ == "__main__":
    main()
