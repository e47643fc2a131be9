"""`neuralreg launch slurm`: workers as a SLURM job array (docs/cluster.md, SLURM).

    neuralreg --prefix P launch slurm --workers 8 [--gres gpu:1] [--time 1-00:00:00] [--grace 120]
        [--image neuralreg-worker.sif] [--secrets DIR] [--idle-exit S] [--out FILE] [--submit]

Fills deploy/slurm/worker.sbatch.in with the study's options (prefix, database host and port, backend,
object store) and the resources asked for, writes the script (default `neuralreg-<prefix>.sbatch`) and,
with --submit, submits it with `sbatch --parsable` and prints the array's job id. One worker per array
task (`--gres gpu:1` each by default; `--gres none` on a CPU partition). The worker runs from this
checkout with this Python (a shared filesystem), or from an Apptainer image (`--image`, with the bind
mounts a read-only image needs: deploy/apptainer/worker.def). Credentials: the folder `--secrets`
(default ~/.config/neuralreg/secrets) must hold database.user and database.password as 0600 files; the
script names the folder only, and checks the modes again on the node.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "slurm" / "worker.sbatch.in"
_FIELD = re.compile(r"\{\{([A-Z_]+)\}\}")
_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_GRES = re.compile(r"^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$")
_PARTITION = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")      # one partition or a list


def add_parser(sub, common) -> None:
    """The `launch` command on the `neuralreg` subparsers (cli.py); its func is `run`."""
    p = sub.add_parser("launch", parents=[common], help="write (and --submit) a SLURM array job of workers",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)
    s = p.add_subparsers(dest="scheduler", required=True)
    q = s.add_parser("slurm", parents=[common], help="a SLURM array job: one worker per task")
    q.add_argument("--workers", type=int, default=2, help="array tasks, one worker each (default 2)")
    q.add_argument("--max-running", type=int, help="at most this many tasks at once (the array's %%M)")
    q.add_argument("--gres", default="gpu:1", help="generic resources per task (default gpu:1; 'none': no --gres)")
    q.add_argument("--cpus", type=int, default=8, help="CPUs per task (default 8; the worker's torch threads)")
    q.add_argument("--mem", default="32G", help="memory per task (default 32G)")
    q.add_argument("--time", default="1-00:00:00", help="time limit per task (default 1-00:00:00)")
    q.add_argument("--grace", type=int, default=120,
                   help="seconds before the time limit at which SLURM sends SIGTERM (--signal=TERM@S; default 120)")
    q.add_argument("--partition", help="partition (default: the cluster's)")
    q.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="another sbatch option, e.g. --sbatch=--qos=preemptible (repeatable)")
    q.add_argument("--idle-exit", type=float,
                   help="wait this many seconds for new work before a task ends (default: end when the queue is empty)")
    q.add_argument("--max-preemptions", type=int, help="worker option (default: the worker's, 10)")
    q.add_argument("--tables", nargs="+", help="worker option: only these tables")
    q.add_argument("--image", help="an Apptainer image of the worker (deploy/apptainer/worker.def); default: "
                                   "this checkout and this Python, on a filesystem the nodes share")
    q.add_argument("--secrets", help="folder of the 0600 files database.user, database.password "
                                     "(default ~/.config/neuralreg/secrets)")
    q.add_argument("--cache", help="with --image: folder bound to /cache (default ~/.cache/neuralreg)")
    q.add_argument("--logs", default="slurm-logs", help="folder of the logs %%x_%%A_%%a.log (default ./slurm-logs)")
    q.add_argument("--job-name", help="default: nr-<prefix>")
    q.add_argument("--out", help="the script to write (default: ./neuralreg-<prefix>.sbatch)")
    q.add_argument("--submit", action="store_true", help="submit it with sbatch and print the job id")


def check_secrets(folder: Path) -> None:
    """database.user and database.password in `folder`, regular files of mode 0600 (or 0400); ValueError
    naming the file and the fix otherwise."""
    if not folder.is_dir():
        raise ValueError(f"--secrets {folder}: no such folder (it holds the worker's database.user and "
                         "database.password, 0600 files: docs/cluster.md, SLURM)")
    for name in ("database.user", "database.password"):
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{path} is missing: write the worker account's {name.split('.')[1]} there (chmod 600)")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode not in (0o600, 0o400):
            raise ValueError(f"{path} has mode {mode:o}: run `chmod 600 {path}` (credentials come from 0600 files only)")


def _check(args) -> None:
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: must be >= 1")
    if args.max_running is not None and args.max_running < 1:
        raise ValueError(f"--max-running {args.max_running}: must be >= 1")
    if args.cpus < 1:
        raise ValueError(f"--cpus {args.cpus}: must be >= 1")
    if not 1 <= args.grace <= 3600:
        raise ValueError(f"--grace {args.grace}: must be 1..3600 seconds")
    if not _TIME.match(args.time):
        raise ValueError(f"--time {args.time!r}: not a SLURM time (e.g. 1-00:00:00, 12:00:00, 90)")
    if not _MEM.match(args.mem):
        raise ValueError(f"--mem {args.mem!r}: not a SLURM memory size (e.g. 32G, 16000M)")
    if args.gres != "none" and not _GRES.match(args.gres):
        raise ValueError(f"--gres {args.gres!r}: not a SLURM gres list (e.g. gpu:1, gpu:a100:1) or 'none'")
    if args.partition is not None and not _PARTITION.match(args.partition):
        raise ValueError(f"--partition {args.partition!r}: not a SLURM partition name or list (e.g. gpu, gpu,preempt)")
    if re.search(r"\s", str(args.logs)):
        raise ValueError(f"--logs {str(args.logs)!r}: choose a folder without whitespace (the script's #SBATCH "
                         "--output line would be cut at it)")
    if args.idle_exit is not None and args.idle_exit < 0:
        raise ValueError(f"--idle-exit {args.idle_exit}: must be >= 0 seconds")
    if args.max_preemptions is not None and args.max_preemptions < 0:
        raise ValueError(f"--max-preemptions {args.max_preemptions}: must be >= 0")
    for option in args.sbatch:
        if not option.startswith("--") or "\n" in option:
            raise ValueError(f"--sbatch {option!r}: give one sbatch option, e.g. --sbatch=--qos=preemptible")
        if re.match(r"--(export|wrap)\b", option):
            raise ValueError(f"--sbatch {option!r}: not allowed here (nothing reaches the worker through "
                             "--export; the script is the job)")


def render(args, prefix: str) -> str:
    """The filled template (see the module docstring)."""
    from neuralreg_schema import db, settings
    _check(args)
    secrets = Path(args.secrets).expanduser() if args.secrets else settings.user_secrets_dir()
    check_secrets(secrets)
    target = db.configured_target()
    dj = settings.configure()
    store = os.environ.get("NEURALREG_STORE") or dj.config.stores[settings.STORE].get("location", "")
    is_file_store = not str(store).startswith("s3://") and dj.config.stores[settings.STORE].get("protocol", "file") == "file"
    options = ["--preempt-grace", str(max(1, min(20, args.grace // 2)))]
    if args.idle_exit is not None:
        options += ["--forever", "--idle-exit", f"{args.idle_exit:g}", "--poll", f"{min(30.0, max(1.0, args.idle_exit / 4)):g}"]
    if args.max_preemptions is not None:
        options += ["--max-preemptions", str(args.max_preemptions)]
    if args.tables:
        options += ["--tables", *args.tables]
    if args.image:
        image = Path(args.image).expanduser().resolve()
        cache = Path(args.cache).expanduser() if args.cache else Path.home() / ".cache" / "neuralreg"
        binds = [f'"$secrets":/run/secrets/neuralreg:ro', shlex.quote(str(cache)) + ":/cache"]
        env = ["NEURALREG_SECRETS=/run/secrets/neuralreg"]
        if is_file_store:
            binds.append(shlex.quote(str(Path(store).resolve())) + ":/store/main")
            env.append("NEURALREG_STORE=/store/main")
        elif store:
            env.append(f"NEURALREG_STORE={store}")
        run_cmd = (f"apptainer exec --nv --no-home --pwd /app --bind {','.join(binds)} "
                   f"--env {','.join(env)} {shlex.quote(str(image))} python")
    else:
        run_cmd = (f"--chdir={shlex.quote(str(ROOT))} env NEURALREG_SECRETS=\"$secrets\" "
                   f"NEURALREG_STORE={shlex.quote(str(store))} {shlex.quote(sys.executable)}")
    resources = []
    if args.gres != "none":
        resources.append(f"#SBATCH --gres={args.gres}")
    if args.partition:
        resources.append(f"#SBATCH --partition={args.partition}")
    resources += [f"#SBATCH {option}" for option in args.sbatch]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", args.job_name or f"nr-{prefix}")
    logs = Path(args.logs).expanduser().resolve()
    fields = {
        "JOB_NAME": name, "ARRAY": f"0-{args.workers - 1}" + (f"%{args.max_running}" if args.max_running else ""),
        "CPUS": str(args.cpus), "MEM": args.mem, "TIME": args.time, "GRACE": str(args.grace),
        "RESOURCES": "\n".join(resources) or "# (no --gres: a CPU partition)", "LOGS": str(logs),
        "SECRETS": shlex.quote(str(secrets.resolve())), "DB_HOST": shlex.quote(target.host), "DB_PORT": str(target.port),
        "BACKEND": f" DJ_BACKEND={target.backend}" if target.backend != "mysql" else "",
        "IDLE_NOTE": f" and no new work came for {args.idle_exit:g} s" if args.idle_exit is not None else "",
        "RUN": run_cmd, "PREFIX": shlex.quote(prefix), "WORKER_OPTIONS": " ".join(shlex.quote(o) for o in options),
    }
    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"{TEMPLATE}: the SLURM template is missing (run from a checkout of neuralreg)")
    text = _FIELD.sub(lambda m: fields[m.group(1)], TEMPLATE.read_text())
    assert "{{" not in text, "a field of the template was left unfilled"
    return text


def check_study(prefix: str, tables) -> None:
    """Before a script is written: the study's schemas exist (workers on a mistyped prefix would find
    nothing to do; SchemasMissing names the prefixes that exist), and every --tables name is one of
    its computed tables (as the worker would check on every node)."""
    from neuralreg_schema import pipeline
    from . import worker
    problem = worker.unknown_tables(worker.computed_tables(pipeline.open_existing(prefix)), tables)
    if problem is not None:
        raise ValueError(f"--tables: {problem}")


def run(args) -> int:
    """Write the script; with --submit, submit it. Returns the exit status."""
    from neuralreg_schema import settings
    prefix = getattr(args, "prefix", None) or os.environ.get("NEURALREG_PREFIX") or settings.DEFAULT_PREFIX
    text = render(args, prefix)
    check_study(prefix, args.tables)
    out = Path(args.out or f"neuralreg-{prefix}.sbatch")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    Path(args.logs).expanduser().mkdir(parents=True, exist_ok=True)       # sbatch does not create it
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")          # all or nothing: no half script
    try:
        partial.write_text(text)
        partial.chmod(0o755)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {out} (workers: {args.workers}, logs: {Path(args.logs).expanduser().resolve()}/%x_%A_%a.log)")
    from neuralreg_schema import db
    host = db.configured_target().host
    if host in ("127.0.0.1", "localhost", "::1"):
        print(f"note: the workers connect to {host}: right only when the jobs run on this machine "
              "(set DJ_HOST to an address the compute nodes reach)")
    if not args.submit:
        print(f"submit with: sbatch {out}")
        return 0
    done = subprocess.run(["sbatch", "--parsable", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    job = done.stdout.strip().split(";")[0]
    print(f"submitted array job {job}: `squeue -j {job}`; `neuralreg --prefix {prefix} jobs held` shows its workers")
    return 0
