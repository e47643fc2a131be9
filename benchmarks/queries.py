"""Measured model queries per sample of every attack (issue 22), on a study's trained classifiers, and
the `paper` suite's cost extrapolated from them. Writes nothing to the database: it reads the
classifiers and runs compute/evaluation/attacks.run_attack itself, which counts every row the
attack sends through the model, forward and gradient (compute/evaluation/queries.py).

1. The study's own suite (default: the demo's `demo` suite on the demo study `neuralreg_demo`) on
   its classifiers and samples, exactly as AttackResult runs it: per attack the forward rows,
   gradient rows and queries (their sum) per attacked sample, mean over the classifiers.
2. The `paper` suite measured at demo size on the first classifier and --probe samples, then
   extrapolated (what is measured and what is modelled, per kind of attack):
   a) fixed-step attacks (DDN, FMN, Carlini-Wagner with its 9 binary-search rounds, Brendel-Bethge
      with its 100-step DDN start): the first paper setting at two step counts (10, 30); forward and
      gradient rows per sample fitted as a + b x steps and summed over the paper's settings and
      repeats; the grid's other step sizes are assumed to cost the same (abort_early and FMN's
      steps are what they are at the fitted size). Brendel-Bethge is measured on bb-l2 (one numba
      JIT) and taken for the four norms.
   b) PGD and Adam-PGD: every paper setting run once with no bisection step, which measures its
      first attempt and the fraction f of samples fooled at eps_hi; the 12 further attempts cost f x
      (steps gradient + steps + 1 forward rows) each, exactly (the search keeps every sample fooled at
      eps_hi and drops the others); x 5 repeats.
   c) JSMA and SparseFool (early stopping): the paper settings as they are (JSMA with the candidate
      pool 64, which changes the pair search but no query, and 3 of its 9 targets, scaled x 3).
3. The total per attacked sample and its cost: a forward row costs about a third of a
   forward-and-backward pass and a gradient row the other two thirds, so passes = (forward + 2
   gradient) / 3; GPU-hours at 5 000-20 000 passes/s (docs/gpu.md's assumption) for 1000 samples x
   25 classifiers. The extrapolation is named in the output: MEASURED AT DEMO SIZE (width-16
   classifiers on the offline stand-in), the per-sample query counts carried over to the paper's
   width-64 CIFAR classifiers unchanged (queries per sample do not depend on the width; how soon a
   sample is fooled does, and that is the extrapolation's assumption).

    python benchmarks/queries.py [--prefix neuralreg_demo] [--suite demo] [--probe 16] [--no-bb]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from neuralreg_schema.compute.evaluation import attacks as A
from neuralreg_schema.compute.evaluation.recipes import recipe
from neuralreg_schema.compute.evaluation.specs import expand_grid

# two step counts per attack: queries = a + b x steps (forward and gradient rows fitted separately)
AFFINE = {
    "ddn-l2": {"init_epsilon": 1.0, "gamma": 0.05},
    "fmn-l0": {"max_stepsize": 1.0, "gamma": 0.05}, "fmn-l1": {"max_stepsize": 1.0, "gamma": 0.05},
    "fmn-l2": {"max_stepsize": 1.0, "gamma": 0.05}, "fmn-linf": {"max_stepsize": 1.0, "gamma": 0.05},
    "cw-l2": {"binary_search_steps": 9, "stepsize": 1e-2, "initial_const": 1e-2},
    "bb-l2": {"lr": 1e-3},
}
AFFINE_STEPS = (10, 30)
PROXY = {"bb-l0": "bb-l2", "bb-l1": "bb-l2", "bb-linf": "bb-l2"}    # one numba JIT instead of four
PAPER_CLASSIFIERS, PAPER_SAMPLES = 25, 1000
GPU_PASSES_PER_S = (5_000, 20_000)


def per_sample(outcome) -> tuple[float, float]:
    """(forward, gradient) rows per attacked sample, summed over the outcome's runs."""
    return (sum(r["forward_rows"] / max(1, r["attacked"]) for r in outcome.params_tried),
            sum(r["gradient_rows"] / max(1, r["attacked"]) for r in outcome.params_tried))


def passes(forward: float, gradient: float) -> float:
    """Forward-and-backward pass equivalents: a forward row ~1/3 of one, a gradient row ~2/3."""
    return (forward + 2 * gradient) / 3


def _study(prefix: str, suite: str):
    from neuralreg_schema import pipeline
    from neuralreg_schema.evaluation import attack_samples
    mods = pipeline.open_existing(prefix)
    clf, ev = mods["classifier"], mods["evaluation"]
    s = (ev.AttackSuite & {"suite": suite}).fetch1()
    attacks = (ev.AttackSuite.Member * ev.AttackConfig & {"suite": suite}).to_dicts(order_by="attack")
    keys = clf.RegularizedClassifier.keys(order_by="seed, reg_hash")      # seed 0 of each regularizer first
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
    p.add_argument("--skip-suite", action="store_true", help="skip 1. (the study's own suite)")
    args = p.parse_args(argv)
    mods, suite, attacks, keys, data, label = _study(args.prefix, args.suite)
    keys = keys[:args.classifiers] if args.classifiers else keys
    clf = mods["classifier"]
    print(f"1. suite {args.suite!r} of {args.prefix!r}: {len(attacks)} attacks x {len(keys)} classifiers, "
          f"{suite['n_samples']} samples (queries per attacked sample, summed over each attack's runs)")
    per_attack: dict = {}
    for key in ([] if args.skip_suite else keys):
        net = clf.RegularizedClassifier().network(key, device="cpu")
        x, y = data[key["dataset"]]
        for a in attacks:
            out = A.run_attack(net, x, y, a["attack"], grid=a["grid"], repeats=a["repeats"], seed=suite["attack_seed"],
                               batch_size=a["batch_size"], device="cpu")
            per_attack.setdefault(a["attack"], []).append(per_sample(out) + (out.seconds,))
        print(f"   {label[(key['reg_hash'],)]} seed {key['seed']}: done")
    print(f"   {'attack':14s} {'forward':>9s} {'gradient':>9s} {'queries':>9s}  (per attacked sample, mean over "
          "classifiers; range of queries; seconds)")
    total = np.zeros(3)
    for name, ms in per_attack.items():
        m = np.mean(ms, axis=0)
        q = [f + g for f, g, _ in ms]
        total += m
        print(f"   {name:14s} {m[0]:9.1f} {m[1]:9.1f} {m[0] + m[1]:9.1f}  ({min(q):.1f}-{max(q):.1f}; {m[2]:.1f} s)")
    print(f"   {'suite':14s} {total[0]:9.1f} {total[1]:9.1f} {total[0] + total[1]:9.1f}")
    paper = recipe("paper")
    net = clf.RegularizedClassifier().network(keys[0], device="cpu")
    x, y = data[keys[0]["dataset"]]
    x, y = x[:args.probe], y[:args.probe]
    who = f"{label[(keys[0]['reg_hash'],)]} seed {keys[0]['seed']}, {len(x)} samples"
    cost = {}                       # paper attack -> (forward, gradient) per sample over its settings and repeats
    fits = {}                       # probed attack -> (b, a) of forward and of gradient rows = a + b x steps

    def run(name, grid, repeats=1):
        t0 = time.perf_counter()
        out = A.run_attack(net, x, y, name, grid=grid, repeats=repeats, device="cpu")
        return out, time.perf_counter() - t0

    print(f"\n2. the paper suite, measured at demo size on {who}:")
    print("   a) fixed-step attacks at two step counts: forward and gradient rows = a + b x steps (fitted), then "
          "summed over the paper settings (their other step sizes assumed to cost the same)")
    for name in paper["attacks"]:
        src = PROXY.get(name, name)
        if src not in AFFINE or (args.no_bb and name.startswith("bb")):
            continue
        if src not in fits:
            pts = []
            for steps in AFFINE_STEPS:
                out, sec = run(src, {**AFFINE[src], "steps": steps})
                pts.append(per_sample(out))
                print(f"      {src:14s} steps {steps:3d}: forward {pts[-1][0]:8.1f}, gradient {pts[-1][1]:8.1f} ({sec:.0f} s)")
            (f1, g1), (f2, g2) = pts
            ds = AFFINE_STEPS[1] - AFFINE_STEPS[0]
            fits[src] = ((f2 - f1) / ds, f1 - (f2 - f1) / ds * AFFINE_STEPS[0],
                         (g2 - g1) / ds, g1 - (g2 - g1) / ds * AFFINE_STEPS[0])
        bf, af, bg, ag = fits[src]
        spec = A.ATTACKS[name]
        reps = paper["repeats"] if spec.stochastic else 1
        settings = [spec.params(g) for g in expand_grid(paper["grids"][name])]
        cost[name] = (reps * sum(af + bf * st["steps"] for st in settings),
                      reps * sum(ag + bg * st["steps"] for st in settings))
    print("   b) PGD / Adam-PGD: every paper setting once with no bisection step, which measures the first attempt "
          "and the fraction f fooled at eps_hi; the 12 bisection attempts then cost f (2 steps + 1) rows each "
          "(exact: the search keeps every sample fooled at eps_hi)")
    for name in paper["attacks"]:
        spec = A.ATTACKS[name]
        if spec.kind != "eps":
            continue
        fwd = grad = 0.0
        t0 = time.perf_counter()
        for st in expand_grid(paper["grids"][name]):
            search = st.get("search_steps", paper["search_steps"])
            out = A.run_attack(net, x, y, name, grid={**st, "search_steps": 0}, device="cpu")
            f0, g0 = per_sample(out)
            frac = float(out.success[out.clean_correct].mean()) if out.clean_correct.any() else 0.0
            fwd += f0 + search * frac * (st["steps"] + 1)
            grad += g0 + search * frac * st["steps"]
        reps = paper["repeats"]
        cost[name] = (reps * fwd, reps * grad)
        print(f"      {name:14s} {len(expand_grid(paper['grids'][name]))} settings x {reps} repeats "
              f"({time.perf_counter() - t0:.0f} s)")
    print("   c) JSMA and SparseFool (early stopping): the paper settings run as they are (JSMA: candidate pool 64, "
          "which changes no query, and 3 of the 9 targets, x 3)")
    for name in ("jsma-l0", "sparsefool-l1"):
        fwd = grad = 0.0
        t0 = time.perf_counter()
        for st in expand_grid(paper["grids"][name]):
            scale = 1.0
            if name == "jsma-l0":
                scale = st["targets"] / 3
                st = {**st, "pool": 64, "targets": 3}
            out = A.run_attack(net, x, y, name, grid=st, device="cpu")
            f0, g0 = per_sample(out)
            fwd, grad = fwd + scale * f0, grad + scale * g0
        cost[name] = (fwd, grad)
        print(f"      {name:14s} ({time.perf_counter() - t0:.0f} s)")
    print(f"\n3. the paper suite per attacked sample, and its cost")
    total_f = total_g = 0.0
    for name in paper["attacks"]:
        if name not in cost:
            print(f"   {name:14s} not measured (left out of the total)")
            continue
        f, g = cost[name]
        total_f, total_g = total_f + f, total_g + g
        print(f"   {name:14s} forward {f:10.0f}  gradient {g:10.0f}  queries {f + g:10.0f}  passes {passes(f, g):10.0f}")
    per_clf = passes(total_f, total_g) * PAPER_SAMPLES
    hours = [PAPER_CLASSIFIERS * per_clf / r / 3600 for r in GPU_PASSES_PER_S[::-1]]
    print(f"   total per sample: {total_f + total_g:.3g} queries ({total_f:.3g} forward, {total_g:.3g} gradient), "
          f"{passes(total_f, total_g):.3g} forward-and-backward pass equivalents")
    print(f"   per classifier ({PAPER_SAMPLES} samples): {per_clf:.3g} passes (docs/gpu.md's nominal count: 5.4e8)")
    print(f"   {PAPER_CLASSIFIERS} classifiers at {GPU_PASSES_PER_S[0]}-{GPU_PASSES_PER_S[1]} passes/s: "
          f"{hours[0]:.1f}-{hours[1]:.1f} GPU-hours for the attacks (old nominal estimate: 190-750)")

if __name__ == "__main__":
    main()
