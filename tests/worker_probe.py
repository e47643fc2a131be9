"""Shared by the worker fault tests: run Python in a subprocess at the repository root, and read the
state of a schema prefix's tables from outside the test process (each process binds one prefix)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
out = {}
for name in json.loads(sys.argv[2]):
    mod, table = name.split(".")
    t = getattr(m[mod], table)
    remaining, total = t.progress(display=False)
    out[name] = {"rows": len(t()), "remaining": remaining, "jobs": t.jobs.progress(),
                 "errors": [str(e) for e in t.jobs.errors.to_arrays("error_message")]}
pred = m["predictive"]
out["units"] = len(pred.PredictiveModel.Unit())
out["n_scans"] = len(m["experiment"].Scan())
configs = list(zip(*pred.PredictiveModelConfig.to_arrays("model_hash", "config_name")))
out["models"] = {c: len(pred.PredictiveModel & {"model_hash": h}) for h, c in configs}
out["model_errors"] = {c: len(pred.PredictiveModel.jobs.errors & {"model_hash": h}) for h, c in configs}
print(json.dumps(out, default=str))
"""


def run_python(args, env=None, timeout=300):
    """`python *args` at the repository root; the CompletedProcess (text output captured)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def probe(prefix, tables, env=None) -> dict:
    """{table: rows, remaining, job counts, error messages} for `tables` ('module.Class'), plus the
    PredictiveModel.Unit count ('units'), the scan count and the models and model errors per config."""
    out = run_python(["-c", PROBE, prefix, json.dumps(list(tables))], env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
