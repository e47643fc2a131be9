"""Attack throughput of the robustness evaluation (compute/evaluation/attacks.py, foolbox 3) and the cost of the
paper-size evaluation of one classifier.

Model: ResNet18 (CIFAR form) built by `ClassifierNet("resnet18", 10, width)` with random
initialisation (throughput does not depend on training; the attacks' success and distances do, so
the distances printed are not meaningful), on random 32x32 grayscale images in [0, 1]; labels are
the model's own predictions, so every sample is attacked.

1. Demo recipe (RECIPES["demo"]) at --demo-width (16, the demo classifier) on --samples images:
   per attack the wall time and samples/s, and the total (the demo's budget: well under a minute on
   2 CPU cores).
2. Paper recipe at --paper-width (64, the paper's ResNet18), EXTRAPOLATED: every attack runs once
   with short probe settings on --probe images; its time per sample and per gradient step is
   scaled to the paper recipe's steps, grid, repeats (randomized attacks only) and 1000 samples.
   The probe counts the sample-gradients each attack computes (a counting wrapper around the
   network), so its rate is per sample-gradient whatever the attack's early stopping did; the paper
   estimate multiplies it by the nominal gradient steps per sample of each paper setting:
   DDN/FMN `steps`; Carlini-Wagner binary_search_steps x steps (probed with
   abort_early off; in the paper settings abort_early can end sooner: an upper bound); PGD / Adam-PGD (search_steps + 1) x steps (samples not fooled at
   eps_hi leave the search: an upper bound); Brendel-Bethge the DDN start (100 steps) + `steps`,
   one gradient and one per-sample numba solve per step. Brendel-Bethge is probed only with
   --bb (its numba JIT costs 30-40 s per norm, excluded from the timing by a warm-up call), on
   bb-l2 alone (timed from DDN starting points), and that rate is used for all four BB norms; without --bb the BB rows are left out of
   the total and the line says so.

3. JSMA and SparseFool (compute/evaluation/sparse_attacks.py; they stop per sample at its first adversarial,
   so their cost is per attack iteration, not per nominal step): at --demo-width on --sparse-samples
   images, every paper setting once: wall time, samples/s and the mean iterations used. In the
   paper estimate of step 2 their rate is seconds per sample-iteration on the width-64 probe
   (iterations as the attacks report them: JSMA one forward and two backward passes plus the pair
   search; SparseFool one DeepFool run plus the linear solver), times the iterations per sample of
   each paper setting: the probe's mean (random-init networks fall quickly: a low estimate) and the
   setting's maximum (steps x targets for JSMA, steps for SparseFool: the upper bound).

On a GPU (--device cuda, default when available) the clock is read after torch.cuda.synchronize.

    python benchmarks/attacks.py [--device cpu] [--samples 64] [--probe 8] [--bb] [--sparse-samples 16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from neuralreg_schema.compute.evaluation import attacks as A
from neuralreg_schema.compute.evaluation.specs import expand_grid
from neuralreg_schema.compute.classifier.train import ClassifierNet


def _model_and_data(width: int, n: int, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    net = ClassifierNet("resnet18", 10, width).to(device).eval()
    x = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()
    y = A.predict(net, x)
    return net, x, y


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _units(name: str, p: dict) -> float:
    """Gradient steps per sample of one run of attack `name` with full params p (upper bounds)."""
    if name.startswith("cw"):
        return p["binary_search_steps"] * p["steps"]
    if A.ATTACKS[name].kind == "eps":
        return (p["search_steps"] + 1) * p["steps"]
    return p["steps"]


PROBE = {   # short settings for the width-64 probe (same code path as the paper settings)
    "ddn-l2": {"steps": 10}, "fmn-l0": {"steps": 10}, "fmn-l1": {"steps": 10}, "fmn-l2": {"steps": 10},
    "fmn-linf": {"steps": 10}, "cw-l2": {"steps": 5, "binary_search_steps": 2, "abort_early": False},
    "pgd-linf": {"steps": 5, "search_steps": 2}, "pgd-l2": {"steps": 5, "search_steps": 2},
    "adampgd-linf": {"steps": 5, "search_steps": 2}, "adampgd-l2": {"steps": 5, "search_steps": 2},
    "bb-l2": {"steps": 10},
    "jsma-l0": {"steps": 20, "theta": 1.0, "gamma": 0.2, "targets": 1},
    "sparsefool-l1": {"steps": 10, "lambda_": 3.0},
}
SPARSE = ("jsma-l0", "sparsefool-l1")


class Counting(torch.nn.Module):
    """Counts the samples of every gradient-enabled forward pass (one gradient each in the attacks)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.grad = net, 0

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad += len(x)
        return self.net(x)


def _time_bb(name, counted, x, y, dev) -> float:
    """Seconds of the Brendel-Bethge iterations alone: started from DDN adversarials computed
    beforehand (untimed), after a one-sample warm-up call that JIT-compiles numba (untimed)."""
    import eagerpy as ep
    import foolbox as fb
    spec = A.ATTACKS[name]
    fmodel = fb.PyTorchModel(A.Logits(counted).eval(), bounds=(0, 1), device=dev)
    xt, yt = torch.as_tensor(x, device=dev), torch.as_tensor(y, device=dev)
    _, start, ok = A.ATTACKS["ddn-l2"].build({"steps": 30})(fmodel, xt, fb.Misclassification(yt), epsilons=None)
    ok = ok.cpu().numpy().astype(bool)
    xs, ys, ss = xt[ok], yt[ok], ep.astensor(start[ok])
    t0 = time.perf_counter()
    spec.build({"steps": 1}).run(fmodel, xs[:1], fb.Misclassification(ys[:1]), starting_points=ss[:1])
    print(f"   ({name}: numba JIT warm-up {time.perf_counter() - t0:.1f} s, not counted)")
    counted.grad = 0
    _sync(dev)
    t0 = time.perf_counter()
    spec.build(PROBE[name]).run(fmodel, xs, fb.Misclassification(ys), starting_points=ss)
    _sync(dev)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--samples", type=int, default=None, help="demo samples (default: the demo recipe's)")
    p.add_argument("--demo-width", type=int, default=16)
    p.add_argument("--paper-width", type=int, default=64)
    p.add_argument("--probe", type=int, default=8, help="samples of the width-64 probe")
    p.add_argument("--bb", action="store_true", help="probe Brendel-Bethge too (numba JIT 30-50 s first)")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--sparse-samples", type=int, default=16, help="samples of the JSMA / SparseFool timing (3.)")
    p.add_argument("--skip-sparse", action="store_true", help="leave out 3. (the width-64 probe still runs them)")
    a = p.parse_args(argv)
    dev = A.resolve_device(a.device)
    desc = (f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda"
            else f"cpu, {torch.get_num_threads()} torch threads")
    print(f"device: {desc}; torch {torch.__version__}; foolbox {__import__('foolbox').__version__}")
    import foolbox  # noqa: F401  (import time not in the figures)

    if not a.skip_demo:
        r = A.recipe("demo")
        n = a.samples or r["n_samples"]
        net, x, y = _model_and_data(a.demo_width, n, dev)
        print(f"\n1. demo recipe: ResNet18 width {a.demo_width} (random init), {n} samples 32x32, "
              f"batch {r['batch_size']}, repeats {r['repeats']}, search steps {r['search_steps']}")
        print(f"   {'attack':<14}{'settings':>9}{'seconds':>9}{'samples/s':>11}{'fooled':>8}{'median own':>12}")
        total = 0.0
        for name in r["attacks"]:
            _sync(dev)
            t0 = time.perf_counter()
            o = A.run_attack(net, x, y, name, grid=r["grids"][name], repeats=r["repeats"],
                             batch_size=r["batch_size"], device=dev, seed=0)
            _sync(dev)
            dt = time.perf_counter() - t0
            total += dt
            print(f"   {name:<14}{len(o.params_tried):>9}{dt:>9.2f}{n / dt:>11.1f}{int(o.success.sum()):>5}/{n:<3}"
                  f"{np.median(o.distances[o.norm]):>11.4g}")
        print(f"   total {total:.1f} s for {len(r['attacks'])} attacks ({n / total:.2f} samples/s for all together)")

    # 3. JSMA and SparseFool at the demo width, every paper setting
    paper = A.recipe("paper")
    n = a.sparse_samples
    net, x, y = _model_and_data(a.demo_width, n, dev, seed=2)
    print(f"\n3. JSMA and SparseFool: ResNet18 width {a.demo_width} (random init), {n} samples 32x32, each paper "
          f"setting once")
    print(f"   {'attack':<14}{'setting':<48}{'seconds':>9}{'samples/s':>11}{'iter/sample':>12}{'fooled':>8}")
    for name in () if a.skip_sparse else SPARSE:
        for setting in expand_grid(paper["grids"][name]):
            _sync(dev)
            t0 = time.perf_counter()
            o = A.run_attack(net, x, y, name, grid=[setting], batch_size=n, device=dev)
            _sync(dev)
            dt = time.perf_counter() - t0
            its = o.params_tried[0]["iterations"] / max(int(o.clean_correct.sum()), 1)
            print(f"   {name:<14}{str(setting):<48}{dt:>9.2f}{n / dt:>11.2f}{its:>12.1f}{int(o.success.sum()):>5}/{n}")

    # 2. width-64 probe and paper extrapolation
    m = a.probe
    net, x, y = _model_and_data(a.paper_width, m, dev, seed=1)
    counted = Counting(net)
    probes = [k for k in PROBE if a.bb or not k.startswith("bb-")]
    print(f"\n2. probe at width {a.paper_width} (random init), {m} samples, short settings: time per "
          f"sample-gradient (counted; forward-only passes of the attack included in the time)")
    print(f"   {'attack':<14}{'probe s':>9}{'grad evals':>12}{'ms/sample-grad':>16}")
    rate, probe_iterations = {}, {}
    for name in probes:
        counted.grad = 0
        if name.startswith("bb-"):
            dt = _time_bb(name, counted, x, y, dev)
        else:
            _sync(dev)
            t0 = time.perf_counter()
            o = A.run_attack(counted, x, y, name, grid=[PROBE[name]], repeats=1, batch_size=m, device=dev)
            _sync(dev)
            dt = time.perf_counter() - t0
        if name in SPARSE:          # per sample-iteration, as the attack reports its iterations
            units = max(o.params_tried[0]["iterations"], 1)
            probe_iterations[name] = units / max(int(o.clean_correct.sum()), 1)
            rate[name] = dt / units
            print(f"   {name:<14}{dt:>9.2f}{units:>12}{1e3 * rate[name]:>16.2f}  (per sample-iteration; "
                  f"{probe_iterations[name]:.1f} iterations per sample)")
            continue
        rate[name] = dt / max(counted.grad, 1)
        print(f"   {name:<14}{dt:>9.2f}{counted.grad:>12}{1e3 * rate[name]:>16.2f}")

    n_paper = paper["n_samples"]
    print(f"\n   paper recipe, EXTRAPOLATED from the probe rates: {n_paper} samples x attack x grid x repeats "
          f"(repeats {paper['repeats']} for randomized attacks only), search steps {paper['search_steps']}")
    print(f"   {'attack':<14}{'runs':>6}{'steps/sample':>14}{'hours':>9}")
    total_h = 0.0
    missing = []
    for name in paper["attacks"]:
        spec = A.ATTACKS[name]
        settings = [spec.params(s) for s in expand_grid(paper["grids"][name])]
        reps = paper["repeats"] if spec.stochastic else 1
        if name.startswith("bb-"):
            if "bb-l2" not in rate:
                missing.append(name)
                continue
            steps = sum(s["steps"] for s in settings) * reps
            init = sum(s["init_steps"] for s in settings) * reps
            sec = n_paper * (steps * rate["bb-l2"] + init * rate["ddn-l2"])
            steps += init
        elif name in SPARSE:        # upper bound: every sample uses all iterations; low: the probe's mean
            steps = sum(s["steps"] * s.get("targets", 1) for s in settings)
            sec = n_paper * steps * rate[name]
            low = n_paper * len(settings) * probe_iterations[name] * rate[name]
            total_h += sec / 3600
            print(f"   {name:<14}{len(settings):>6}{steps:>14}{sec / 3600:>9.2f}  (at the probe's "
                  f"{probe_iterations[name]:.1f} iterations per sample: {low / 3600:.2f} h)")
            continue
        else:
            steps = sum(_units(name, s) for s in settings) * reps
            sec = n_paper * steps * rate[name]
        total_h += sec / 3600
        print(f"   {name:<14}{len(settings) * reps:>6}{steps:>14}{sec / 3600:>9.2f}")
    print(f"   total {total_h:.1f} h per classifier on {desc} (extrapolated, upper bound: no early stopping)"
          + (f"; without {', '.join(missing)} (run with --bb)" if missing else ""))


if __name__ == "__main__":
    main()
