"""`neuralreg selftest`: does this machine (a new GPU node, a new image) compute correctly, and how fast?

    neuralreg selftest [--device cuda|cpu] [--quick] [--json FILE]

Five parts, each ended by a timeout (they run in subprocesses, so a hang in native code fails its
check instead of blocking the node), one table on the terminal, one JSON, exit status 1 when any
check fails:

1. environment   torch, CUDA, cuDNN, driver, device name and memory, CPU budget and threads
                 (compute/common/runtime.environment);
2. kernels       every convolution of the tiny, demo and paper networks (classifier ResNet18 and
                 ResNet34, predictive core) as one real training step runs it on the device, forward
                 output and weight gradient against a float64 CPU reference (compute/kernelcheck.py);
3. precision     the similarity loss and its gradients with bf16 against float32, as the trainer runs
                 it (features from bf16 autocast, loss in float32: must be safe) and entirely under
                 autocast (reported: the reason the loss runs in float32), with the bounds of
                 compute/classifier/precision.py;
4. study         the tiny study end to end through real processes on the device, in a throwaway prefix
                 (`neuralreg_selftest_<hex>`) dropped afterwards: `neuralreg ingest simulated --profile
                 tiny`, `neuralreg plan tiny --no-vgg`, then a worker (`python -m populate.worker`);
                 every table (and part table) must have rows, no job may fail, and every row that
                 records a device must name this one (on `--device cpu` the worker sees no GPU);
5. throughput    the regularized / plain training step ratio of the demo and paper classifier recipes,
                 the paper predictive model's training trials/s, minimal-perturbation samples/s of PGD
                 (with its minimal-epsilon search) and DDN, peak device memory (compute/throughput.py;
                 --quick: small networks and batches, figures not the recipes').

Speed figures are reported, never judged: only correctness fails the selftest. Sized to finish within
8 minutes on one GPU; `--device cpu --quick` runs in the test suite.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import settings

ROOT = Path(__file__).resolve().parent.parent          # where neuralreg_schema and populate are importable
# seconds each part may take (full, quick); the full run on a CPU gets CPU_FULL times as long
TIMEOUTS = {"kernels": (420, 300), "numeric": (420, 240), "ingest": (300, 300), "plan": (120, 120),
            "worker": (900, 600)}
CPU_FULL = 3


def _timeout(part: str, device: str, quick: bool) -> float:
    return TIMEOUTS[part][quick] * (CPU_FULL if device == "cpu" and not quick else 1)


def _python(args: list[str], timeout: float, env: dict) -> tuple[int | None, str]:
    """Run `python *args` in this working directory (so that it finds the same datajoint.json) in a
    process group of its own, the package importable; (exit status or None on timeout, its output).
    On timeout the whole group is killed."""
    import signal
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        return None, out
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise


def _finite(value):
    """`value` with every non-finite float written as a string ('inf', 'nan'): strict JSON."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


class Report:
    """The rows of the table: (part, check, result, status) with status PASS, FAIL or INFO."""

    def __init__(self, say):
        self.rows: list[dict] = []
        self.say = say

    def add(self, part: str, check: str, result: str, status: str = "INFO") -> None:
        self.rows.append({"part": part, "check": check, "result": result, "status": status})
        self.say(f"  [{status}] {part}: {check}: {result}")

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "FAIL"]

    def table(self) -> str:
        widths = [max(len(r[c]) for r in self.rows + [dict(part="part", check="check", result="result",
                                                          status="status")]) for c in ("part", "check", "status")]
        lines = [f"{'part':<{widths[0]}}  {'check':<{widths[1]}}  {'status':<{widths[2]}}  result"]
        lines.append("-" * (sum(widths) + 6 + 40))
        for r in self.rows:
            lines.append(f"{r['part']:<{widths[0]}}  {r['check']:<{widths[1]}}  {r['status']:<{widths[2]}}  "
                         f"{r['result']}")
        return "\n".join(lines)


# ------------------------------------------------------------------ parts

def _environment(report: Report, env: dict) -> None:
    gpu = (f"{env['device']}, {env['device_memory_gib']} GiB, compute capability {env.get('compute_capability')}, "
           f"bf16 {'yes' if env.get('bf16_supported') else 'no'}" if env["device_memory_gib"] else env["device"])
    report.add("environment", "torch", f"{env['torch']} (python {env['python']})")
    report.add("environment", "CUDA / cuDNN / driver",
               f"CUDA build {env['cuda_build'] or 'none'}, available {env['cuda_available']}, "
               f"cuDNN {env['cudnn'] or 'none'}, "
               f"driver {env['driver'] or 'none'}, {env['gpus']} GPU(s)")
    report.add("environment", "device", gpu)
    report.add("environment", "CPU", f"budget {env['cpu_budget']} of {env['cpus_on_machine']} CPUs, torch threads "
               f"{env['torch_threads']}, oneDNN {env['onednn']}, OMP_WAIT_POLICY {env['omp_wait_policy']}")


def _kernels(report: Report, device: str, quick: bool, env: dict, work: Path) -> dict:
    out_json = work / "kernels.json"
    rc, out = _python(["-X", "faulthandler", "-m", "neuralreg_schema.compute.kernelcheck", "--device", device,
                       "--repeats", "1" if quick else "3", "--json", str(out_json)],
                      _timeout("kernels", device, quick), env)
    data = json.loads(out_json.read_text()) if out_json.exists() else {"rows": []}
    by_net: dict[str, list] = {}
    for row in data.get("rows", []):
        by_net.setdefault(row["network"], []).append(row)
    for net, rows in by_net.items():
        worst = f"output {max(r['output'] for r in rows):.1e}, weight grad {max(r['weight_grad'] for r in rows):.1e}"
        bf16 = [r for r in rows if "bf16_output" in r]
        if bf16:
            worst += (f"; bf16 output {max(r['bf16_output'] for r in bf16):.1e}, weight grad "
                      f"{max(r['bf16_weight_grad'] for r in bf16):.1e}")
        layouts = sorted({r["layout"] for r in rows})
        report.add("kernels", net, f"{len(rows)} distinct convs ({'/'.join(layouts)}), worst rel. error {worst}",
                   "PASS")
    if rc is None:
        report.add("kernels", "kernel check",
                   f"hung: no result within {_timeout('kernels', device, quick):.0f} s: {_tail(out, 400)}", "FAIL")
    elif rc != 0:
        for error in data.get("errors") or [f"exit {rc}: {_tail(out, 600)}"]:
            report.add("kernels", "kernel check", f"failed: {error}", "FAIL")
    else:
        report.add("kernels", "kernel check", f"{len(data['rows'])} distinct convolutions within tolerance "
                   f"(float32 1e-3, bf16 2e-2 of the float64 reference)", "PASS")
    return data


def _numeric(report: Report, device: str, quick: bool, env: dict, work: Path) -> dict:
    out_json = work / "numeric.json"
    profile = "quick" if quick else ("gpu" if device == "cuda" else "cpu")
    rc, out = _python(["-X", "faulthandler", "-m", "neuralreg_schema.compute.selfcheck", "--device", device,
                       "--profile", profile, "--json", str(out_json)], _timeout("numeric", device, quick), env)
    data = json.loads(out_json.read_text()) if out_json.exists() else {}
    for r in data.get("precision", []):
        what = (f"loss {r['loss_rel']:.1e} (bound {r['bound_loss_rel_bound']:.1e}), grad features "
                f"{r['grad_features_rel']:.1e}, grad gamma {r['grad_gamma_rel']:.1e}; max |S| "
                f"{r['bound_max_abs_S']:.2f}, offset {r['bound_max_offset']:.1f}")
        if r["mode"] == "features":
            ok = r["safe"] and r["bound_holds"]
            report.add("precision", f"bf16 features, fp32 loss ({r['recipe']}, B={r['stim_batch']})",
                       ("safe: " if r["safe"] else "UNSAFE: ") + what
                       + ("" if r["bound_holds"] else "; BOUND EXCEEDED"),
                       "PASS" if ok else "FAIL")
        else:
            report.add("precision", f"loss under bf16 autocast ({r['recipe']}, B={r['stim_batch']})",
                       ("safe: " if r["safe"] else "unsafe, hence the fp32 loss: ") + what
                       + ("" if r["bound_holds"] else "; BOUND EXCEEDED"), "PASS" if r["bound_holds"] else "FAIL")
    tp = data.get("throughput", {})
    for r in tp.get("classifier", []):
        report.add("throughput", f"classifier step, {r['recipe']} recipe",
                   f"regularized/plain {r['ratio']:.2f} ({r['regularized_s'] * 1e3:.1f} / {r['plain_s'] * 1e3:.1f} ms; "
                   f"width {r['width']}, batch {r['batch']}, {r['stim_batch']} stimuli; "
                   f"{r['images_per_s']:.0f} img/s plain)")
    for r in tp.get("predictive", []):
        report.add("throughput", f"predictive model, {r['recipe']} recipe",
                   f"{r['trials_per_s']:.1f} training trials/s ({r['neurons']} neurons, batch {r['batch']}, "
                   f"{r['ms_per_step']:.0f} ms/step)")
    for r in tp.get("attacks", []):
        report.add("throughput", f"minimal perturbation, {r['attack']}",
                   f"{r['samples_per_s']:.2f} samples/s, {r['sample_grads_per_s']:.0f} sample-gradients/s "
                   f"(ResNet18 width {r['width']}, {r['samples']} samples, {r['setting']})")
    if data.get("peak_mib") is not None:
        report.add("throughput", "peak memory", f"{data['peak_mib']:.0f} MiB "
                   + ("allocated on the GPU" if device == "cuda" else "resident (CPU process)"))
    for error in data.get("errors", []):
        report.add("numeric", "error", error[:300], "FAIL")
    if rc is None:
        report.add("numeric", "precision and throughput",
                   f"hung: not done within {_timeout('numeric', device, quick):.0f} s: "
                   f"{_tail(out, 400)}", "FAIL")
    elif rc != 0 and not data.get("errors"):
        report.add("numeric", "precision and throughput", f"failed (exit {rc}): {_tail(out, 600)}", "FAIL")
    return data


def _tables(module) -> list:
    """(name, table class, is computed) of every table and part table a schema module defines."""
    dj = settings.configure()
    found = []
    for name, obj in vars(module).items():
        if isinstance(obj, type) and issubclass(obj, dj.Table) and obj.__module__ == module.__name__ \
                and not issubclass(obj, dj.Part):
            found.append((name, obj, issubclass(obj, (dj.Computed, dj.Imported))))
            for part_name, part in vars(obj).items():
                if isinstance(part, type) and issubclass(part, dj.Part):
                    found.append((f"{name}.{part_name}", part, False))
    return found


def wrong_devices(seen, device: str) -> list[str]:
    """The device descriptions in `seen` (e.g. 'cpu', 'cuda:0 (NVIDIA H100 80GB HBM3)') that are not
    `device` ('cpu' or 'cuda')."""
    return [d for d in seen if not (d == "cpu" if device == "cpu" else d.startswith("cuda"))]


def _verify_study(report: Report, prefix: str, device: str) -> dict:
    """Rows per table of the study's prefix; every table and part table must have rows, and every row
    that records a device must name `device` ('cpu', or 'cuda...' for cuda)."""
    from . import pipeline
    modules = pipeline.open_existing(prefix)
    counts, devices, empty_computed, empty_other, wrong = {}, {}, [], [], {}
    for module_name in pipeline.MODULES:
        for name, table, computed in _tables(modules[module_name]):
            full = f"{module_name}.{name}"
            rows = len(table())
            counts[full] = rows
            if not rows:
                (empty_computed if computed else empty_other).append(full)
            if "device" in table.heading.names and rows:
                seen = sorted({d["device"] for d in table.proj("device").to_dicts()})
                devices[full] = seen
                bad = wrong_devices(seen, device)
                if bad:
                    wrong[full] = bad
    computed = [f"{m}.{n}" for m in pipeline.MODULES for n, _, c in _tables(modules[m]) if c]
    empty = empty_computed + empty_other
    report.add("study", "every table populated",
               f"{sum(counts[t] for t in computed)} computed rows in {len(computed)} computed tables, "
               f"{sum(counts.values())} rows in all {len(counts)} tables and parts"
               + (f"; EMPTY: {', '.join(empty)}" if empty else ""), "FAIL" if empty else "PASS")
    report.add("study", "every row records the device",
               (f"wrong device in {wrong}" if wrong else
                f"{', '.join(sorted({d for ds in devices.values() for d in ds}))} in "
                f"{sum(counts[t] for t in devices)} rows of {', '.join(t.split('.', 1)[1] for t in devices)} "
                "(the other tables compute with numpy and carry no device column)"),
               "FAIL" if wrong or not devices else "PASS")
    return {"rows": counts, "devices": devices, "empty_computed": empty_computed, "empty_other": empty_other}


def _study(report: Report, device: str, quick: bool, env: dict, threads: int) -> dict:
    from . import db, pipeline
    target = db.configured_target()
    if not db.answers(target, timeout=3):
        report.add("study", "database", f"no database answers at {target.host}:{target.port} (DJ_HOST/DJ_PORT, "
                   "`neuralreg db up`): the tiny study could not run", "FAIL")
        return {}
    prefix = f"neuralreg_selftest_{uuid.uuid4().hex[:8]}"
    cli = ["-m", "neuralreg_schema.cli", "--prefix", prefix, "--threads", str(threads)]
    steps = (("ingest", [*cli, "ingest", "simulated", "--profile", "tiny"]),
             ("plan", [*cli, "plan", "tiny", "--no-vgg"]),
             ("worker", ["-m", "populate.worker", "--prefix", prefix, "--threads", str(threads)]))
    result = {"prefix": prefix, "seconds": {}}
    try:
        for name, args in steps:
            t0 = time.perf_counter()
            rc, out = _python(args, _timeout(name, device, quick), env)
            result["seconds"][name] = round(time.perf_counter() - t0, 1)
            if rc != 0:
                why = f"hung: not done within {_timeout(name, device, quick):.0f} s" if rc is None else f"exit {rc}"
                report.add("study", name, f"{why}: {_tail(out, 800)}", "FAIL")
                return result
        report.add("study", "tiny study through a worker",
                   f"ingest {result['seconds']['ingest']:.0f} s, plan {result['seconds']['plan']:.0f} s, worker "
                   f"{result['seconds']['worker']:.0f} s (every job succeeded), prefix {prefix}", "PASS")
        result.update(_verify_study(report, prefix, device))
    except Exception as exc:            # noqa: BLE001 - a failed check, reported
        report.add("study", "verification", f"{type(exc).__name__}: {exc}", "FAIL")
    finally:
        try:
            pipeline.drop_all(prefix)
            result["dropped"] = True
        except Exception as exc:        # noqa: BLE001
            report.add("study", "drop the throwaway prefix", f"{prefix}: {type(exc).__name__}: {exc}", "FAIL")
    return result


# ------------------------------------------------------------------ the command

def run(device: str | None = None, quick: bool = False, json_path: str | None = None, say=print) -> int:
    """Run the selftest (module docstring); returns the exit status (0: every check passed)."""
    import torch
    from .compute.common.runtime import environment
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    started = time.time()
    report = Report(say)
    say(f"neuralreg selftest on {device}{' (quick sizes)' if quick else ''}, code {settings.code_version()}")
    has_device = device == "cpu" or torch.cuda.is_available()
    env = environment(device if has_device else "cpu")
    _environment(report, env)
    result = {"device": device, "quick": quick, "environment": env}
    if not has_device:
        report.add("environment", "device", "no CUDA device is visible to torch (driver, CUDA_VISIBLE_DEVICES, a "
                   "CPU-only torch build?)", "FAIL")
    else:
        threads = torch.get_num_threads()
        child = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if device == "cpu":
            child["CUDA_VISIBLE_DEVICES"] = ""          # the study's worker must not find a GPU
        with tempfile.TemporaryDirectory(prefix="neuralreg_selftest_") as work:
            say("== kernels: every convolution against a float64 CPU reference")
            result["kernels"] = _kernels(report, device, quick, child, Path(work))
            say("== precision and throughput")
            result["numeric"] = _numeric(report, device, quick, child, Path(work))
            say("== the tiny study through a worker, in a throwaway prefix")
            result["study"] = _study(report, device, quick, child, threads)
    result["seconds"] = round(time.time() - started, 1)
    result["checks"] = report.rows
    result["passed"] = not report.failed
    say("\n" + report.table())
    say(f"\nselftest {'PASSED' if result['passed'] else 'FAILED'} on {env['device']} in {result['seconds']:.0f} s"
        + (f": {len(report.failed)} check(s) failed" if report.failed else ""))
    if json_path:
        Path(json_path).write_text(json.dumps(_finite(result), indent=1, default=str))
    return 0 if result["passed"] else 1
