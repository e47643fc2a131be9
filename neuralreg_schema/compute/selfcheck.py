"""The numeric half of `neuralreg selftest`, run in a subprocess of its own (so a hang in native code
is ended by the caller's timeout): bf16 against float32 for the similarity loss
(`classifier/precision.py`) and the throughput figures (`throughput.py`), written to a JSON file after
every item, so a run that is cut short still leaves what it measured.

    python -m neuralreg_schema.compute.selfcheck --device cuda|cpu [--profile gpu|cpu|quick] --json FILE

The JSON: {"environment": {...}, "precision": [rows of precision.compare], "throughput":
{"classifier": [...], "predictive": [...], "attacks": [...]}, "errors": ["what failed: why"], "done": bool}.
The kernel check is a subprocess of its own (`kernelcheck.py`); the database part lives above the schema
modules (neuralreg_schema/selftest.py)."""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from .classifier import precision
from .common.runtime import environment, resolve_device
from . import throughput

# what each profile measures: precision-check recipes (with a stimulus batch override for quick),
# classifier recipes of the step ratio, predictive recipes, attacks
PLAN = {
    "gpu": {"precision": [("demo", None), ("paper", None)], "classifier": ["demo", "paper"],
            "predictive": ["paper"], "attacks": ["pgd-linf", "ddn-l2"]},
    "cpu": {"precision": [("demo", None), ("paper", None)], "classifier": ["demo", "paper"],
            "predictive": ["paper"], "attacks": ["pgd-linf", "ddn-l2"]},
    "quick": {"precision": [("demo", 8)], "classifier": ["demo", "paper"], "predictive": ["paper"],
              "attacks": ["pgd-linf", "ddn-l2"]},
}


def run(device, profile: str, path: str | None, say=print) -> dict:
    dev = resolve_device(device)
    plan = PLAN[profile]
    result = {"environment": environment(dev), "profile": profile, "precision": [],
              "throughput": {"classifier": [], "predictive": [], "attacks": []}, "errors": [], "done": False}

    def save():
        if path:
            with open(path, "w") as f:
                json.dump(result, f, indent=1, default=str)

    def attempt(what: str, func, into: list):
        try:
            got = func()
        except Exception as exc:                # noqa: BLE001 - reported as a failed check, the rest goes on
            result["errors"].append(f"{what}: {type(exc).__name__}: {exc}")
            say(f"{what}: FAILED {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        else:
            into.extend(got if isinstance(got, list) else [got])
            say(f"{what}: {json.dumps(got, default=str)}")
        save()

    save()
    for recipe, n_stim in plan["precision"]:
        attempt(f"precision {recipe}", lambda: precision.network_check(recipe, dev, n_stim=n_stim),
                result["precision"])
    for recipe in plan["classifier"]:
        attempt(f"classifier step {recipe}", lambda: throughput.classifier_step_ratio(recipe, dev, profile),
                result["throughput"]["classifier"])
    for recipe in plan["predictive"]:
        attempt(f"predictive {recipe}", lambda: throughput.predictive_throughput(recipe, dev, profile),
                result["throughput"]["predictive"])
    for name in plan["attacks"]:
        attempt(f"attack {name}", lambda: throughput.attack_throughput(name, dev, profile),
                result["throughput"]["attacks"])
    peaks = [r["peak_mib"] for rows in result["throughput"].values() for r in rows]
    result["peak_mib"] = max(peaks) if peaks else None
    result["done"] = True
    save()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--profile", choices=sorted(PLAN), default=None,
                        help="sizes (throughput.PROFILES; default: gpu on a GPU, else cpu)")
    parser.add_argument("--json", help="write the results here (after every item)")
    args = parser.parse_args(argv)
    dev = resolve_device(args.device)
    profile = args.profile or ("gpu" if dev.type == "cuda" else "cpu")
    result = run(dev, profile, args.json, say=lambda m: print(m, flush=True))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
