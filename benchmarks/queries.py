"""Measured model queries per sample of every attack (issue 22), on a study's trained classifiers, and
the `paper` suite's cost extrapolated from them. Writes nothing to the database: it reads the
classifiers and runs compute/evaluation/attacks.run_attack itself, which counts every row the
attack sends through the model, forward and gradient (compute/evaluation/queries.py).

1. The study's own suite (default: the demo's `demo` suite on the demo study `neuralreg_demo`) on
   its classifiers and samples, exactly as AttackResult runs it: per attack the forward rows,
   gradient rows and queries (their sum) per attacked sample, mean over the classifiers.
2. A probe of every `paper` attack the study's suite lacks, on the first classifier and --probe
   samples, each with a short setting of the paper grid's structure (PROBE; JSMA: the paper's
   setting with the candidate pool 64, which changes no query, one direction and 3 targets).
3. The extrapolation, named LINEAR IN NOMINAL ITERATIONS: for each attack its measured queries per
   sample per nominal iteration (`nominal`: PGD / Adam-PGD (search_steps + 1) x steps, Carlini-Wagner
   binary_search_steps x steps, Brendel-Bethge its DDN start's steps + steps, FMN with a start
   init_steps + steps, JSMA steps x targets, SparseFool steps x df_steps, the others steps) times
   the nominal iterations of every `paper` setting, times its repeats (randomized attacks). The
   early-stopping attacks (JSMA, SparseFool) and PGD's bisection (which drops samples not fooled at
   eps_hi) use fewer than their nominal iterations on a trained network: the measured ratio carries
   that. The cost: a forward row costs about a third of a forward-and-backward pass and a gradient
   row the other two thirds, so passes = (forward + 2 gradient) / 3; GPU-hours at 5 000-20 000
   passes/s (docs/gpu.md's assumption) for 1000 samples x 25 classifiers.

    python benchmarks/queries.py [--prefix neuralreg_demo] [--suite demo] [--probe 16] [--no-bb]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from neuralreg_schema.compute.evaluation import attacks as A
from neuralreg_schema.compute.evaluation.recipes import recipe
from neuralreg_schema.compute.evaluation.specs import SPARSE_FAMILIES, expand_grid

PROBE = {
    "cw-l2": {"steps": 10, "binary_search_steps": 3, "stepsize": 1e-2, "initial_const": 1e-2},
    "ddn-l2": {"steps": 10},
    "fmn-l2": {"steps": 10},
    "pgd-l2": {"steps": 5, "abs_stepsize": 1e-1, "eps_hi": 6.0, "search_steps": 4},
    "adampgd-linf": {"steps": 5, "abs_stepsize": 1e-2, "eps_hi": 0.3, "search_steps": 4},
    "adampgd-l2": {"steps": 5, "abs_stepsize": 1e-1, "eps_hi": 6.0, "search_steps": 4},
    "bb-l2": {"steps": 10, "lr": 1e-3},
    "jsma-l0": {"theta": 1.0, "gamma": 0.145, "direction": "increase", "pool": 64, "steps": 80, "targets": 3},
    "sparsefool-l1": {"lambda_": 2.0, "steps": 50, "df_steps": 50, "candidates": 10},
}
PROXY = {"bb-l0": "bb-l2", "bb-l1": "bb-l2", "bb-linf": "bb-l2", "fmn-l0": "fmn-l2", "fmn-l1": "fmn-l2",
         "fmn-linf": "fmn-l2", "pgd-linf": "adampgd-linf"}     # used only when the attack itself was not measured
PAPER_CLASSIFIERS, PAPER_SAMPLES = 25, 1000
GPU_PASSES_PER_S = (5_000, 20_000)


def nominal(name: str, p: dict) -> float:
    """Nominal iterations per sample of one run (the module docstring's list)."""
    if name.startswith("cw"):
        return p["binary_search_steps"] * p["steps"]
    if A.ATTACKS[name].kind == "eps":
        return (p["search_steps"] + 1) * p["steps"]
    if name.startswith("bb"):
        return p["init_steps"] + p["steps"]
    if name.startswith("fmn") and p.get("init"):
        return p["init_steps"] + p["steps"]
    if name.startswith("jsma"):
        return p["steps"] * p["targets"]
    if name.startswith("sparsefool"):
        return p["steps"] * p["df_steps"]
    return p["steps"]


def measured(outcome) -> dict:
    """Per attacked sample, summed over the outcome's runs: forward, gradient, queries, and per nominal iteration."""
    fwd = sum(r["forward_rows"] / max(1, r["attacked"]) for r in outcome.params_tried)
    grad = sum(r["gradient_rows"] / max(1, r["attacked"]) for r in outcome.params_tried)
    nom = sum(nominal(outcome.name, r["params"]) for r in outcome.params_tried)
    return {"forward": fwd, "gradient": grad, "queries": fwd + grad, "nominal": nom,
            "per_nominal": (fwd + grad) / nom, "passes_per_nominal": (fwd + 2 * grad) / 3 / nom,
            "seconds": outcome.seconds}


def _study(prefix: str, suite: str):
    from neuralreg_schema import pipeline
    from neuralreg_schema.evaluation import attack_samples
    mods = pipeline.open_existing(prefix)
    clf, ev = mods["classifier"], mods["evaluation"]
    s = (ev.AttackSuite & {"suite": suite}).fetch1()
    attacks = (ev.AttackSuite.Member * ev.AttackConfig & {"suite": suite}).to_dicts(order_by="attack")
    keys = clf.RegularizedClassifier.keys(order_by="reg_hash, seed")
    data = {}
    for key in keys:
        ds = key["dataset"]
        if ds not in data:
            d = clf.ClassificationDataset.load({"dataset": ds})
            idx = attack_samples(len(d.test_images), s["n_samples"], s["sample_seed"])
            data[ds] = (d.test_images[idx].astype(np.float32) / 255.0, d.test_labels[idx])
    label = {tuple(r[k] for k in ("reg_hash",)): r["label"] for r in clf.Regularizer.to_dicts()}
    return mods, s, attacks, keys, data, label


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefix", default="neuralreg_demo")
    p.add_argument("--suite", default="demo")
    p.add_argument("--classifiers", type=int, default=0, help="at most this many classifiers (0: all)")
    p.add_argument("--probe", type=int, default=16, help="samples of the paper-attack probe")
    p.add_argument("--no-bb", action="store_true", help="leave Brendel-Bethge out of the probe (numba JIT ~40 s)")
    args = p.parse_args(argv)
    mods, suite, attacks, keys, data, label = _study(args.prefix, args.suite)
    keys = keys[:args.classifiers] if args.classifiers else keys
    clf = mods["classifier"]
    print(f"1. suite {args.suite!r} of {args.prefix!r}: {len(attacks)} attacks x {len(keys)} classifiers, "
          f"{suite['n_samples']} samples (queries per attacked sample, summed over each attack's runs)")
    per_attack: dict = {}
    for key in keys:
        net = clf.RegularizedClassifier().network(key, device="cpu")
        x, y = data[key["dataset"]]
        for a in attacks:
            out = A.run_attack(net, x, y, a["attack"], grid=a["grid"], repeats=a["repeats"], seed=suite["attack_seed"],
                               batch_size=a["batch_size"], device="cpu")
            per_attack.setdefault(a["attack"], []).append(measured(out))
        print(f"   {label[(key['reg_hash'],)]} seed {key['seed']}: done")
    print(f"   {'attack':14s} {'forward':>9s} {'gradient':>9s} {'queries':>9s} {'nominal it':>10s} "
          f"{'q / nominal it':>14s}  (mean over classifiers; range of queries)")
    rates = {}
    for name, ms in per_attack.items():
        q = [m["queries"] for m in ms]
        mean = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
        rates[name] = mean
        print(f"   {name:14s} {mean['forward']:9.1f} {mean['gradient']:9.1f} {mean['queries']:9.1f} "
              f"{mean['nominal']:10.0f} {mean['per_nominal']:14.2f}  ({min(q):.1f}-{max(q):.1f})")
    paper = recipe("paper")
    missing = [n for n in paper["attacks"] if n not in rates and n in PROBE and not (args.no_bb and n.startswith("bb"))]
    print(f"\n2. probe of the paper attacks the suite lacks, on {label[(keys[0]['reg_hash'],)]} seed {keys[0]['seed']}, "
          f"{args.probe} samples")
    net = clf.RegularizedClassifier().network(keys[0], device="cpu")
    x, y = data[keys[0]["dataset"]]
    for name in missing:
        t0 = time.perf_counter()
        out = A.run_attack(net, x[:args.probe], y[:args.probe], name, grid=PROBE[name], device="cpu")
        m = measured(out)
        rates[name] = m
        print(f"   {name:14s} {m['forward']:9.1f} {m['gradient']:9.1f} {m['queries']:9.1f} {m['nominal']:10.0f} "
              f"{m['per_nominal']:14.2f}  ({time.perf_counter() - t0:.1f} s)")
    print("\n3. the paper suite per sample, LINEAR IN NOMINAL ITERATIONS (measured queries per nominal iteration x "
          "each paper setting's nominal iterations x repeats)")
    total_q = total_passes = total_nominal = 0.0
    for name in paper["attacks"]:
        src = name if name in rates else PROXY.get(name)
        if src not in rates:
            print(f"   {name:14s} not measured (left out)")
            continue
        spec = A.ATTACKS[name]
        reps = paper["repeats"] if spec.stochastic else 1
        settings = [spec.params(s) for s in expand_grid(paper["grids"][name])]
        nom = reps * sum(nominal(name, s) for s in settings)
        q, passes = nom * rates[src]["per_nominal"], nom * rates[src]["passes_per_nominal"]
        total_q, total_passes, total_nominal = total_q + q, total_passes + passes, total_nominal + nom
        early = " (early stopping)" if issubclass(spec.family, SPARSE_FAMILIES) else ""
        print(f"   {name:14s} {len(settings):3d} settings x {reps} -> {nom:9.0f} nominal it, {q:11.0f} queries, "
              f"{passes:11.0f} passes per sample (rate of {src}){early}")
    per_clf = total_passes * PAPER_SAMPLES
    hours = [PAPER_CLASSIFIERS * per_clf / r / 3600 for r in GPU_PASSES_PER_S[::-1]]
    print(f"   total per sample: {total_nominal:.3g} nominal iterations, {total_q:.3g} measured-rate queries, "
          f"{total_passes:.3g} forward-and-backward pass equivalents")
    print(f"   per classifier ({PAPER_SAMPLES} samples): {per_clf:.3g} passes (docs/gpu.md's nominal count: 5.4e8)")
    print(f"   {PAPER_CLASSIFIERS} classifiers at {GPU_PASSES_PER_S[0]}-{GPU_PASSES_PER_S[1]} passes/s: "
          f"{hours[0]:.0f}-{hours[1]:.0f} GPU-hours for the attacks (old nominal estimate: 190-750)")


if __name__ == "__main__":
    main()
