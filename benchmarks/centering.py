"""Loss floor of Eq. 8 under the old and the new centring of Eq. 9, at the recipes' stimulus batches.

Synthetic known answer (compute/classifier/centering.py): a rank-40 target (Eq. 2 on 1000 stimuli x 400
neurons, signal plus noise, centred over all stimuli) and features equal to the very responses
that generated it, so a perfect network exists. The floor is Eq. 8 averaged over random stimulus
batches; the ratio divides it by the loss of predicting S^CNN = 0 on the same batches
(0: the loss can reach zero; 1: no better than predicting zeros).

  batch     old: centred by the mean of the step's stimulus batch
  running   new: the trainer's running mean (exact over all stimuli at the start, then an EMA of
            each batch's mean, updated after the batch's loss; momentum = the recipe's center_momentum)
  all       Eq. 9 with the exact mean over all stimuli (reference)

    python benchmarks/centering.py [--steps 300] [--stim 8 12 64]

The last line is the new centring's ratio at the paper recipe's stimulus batch:
`loss floor ratio: <ratio with three decimals>` (0.002 on this machine).
"""
from __future__ import annotations

import argparse
import os
import time

from neuralreg_schema.compute.classifier import centering, recipes as clf_recipes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="random stimulus batches per estimate")
    p.add_argument("--stim", type=int, nargs="+", default=None,
                   help="stimulus batches (default: the demo's and the paper's, and 8 and 12)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    recipes = {name: clf_recipes.check_config(clf_recipes.default_config(name)) for name in ("demo", "paper")}
    sizes = sorted(set(a.stim or [8, 12] + [cfg["stim_batch"] for cfg in recipes.values()]))
    momentum = recipes["paper"]["center_momentum"]
    assert recipes["demo"]["center_momentum"] == momentum
    r = centering.synthetic_responses(seed=a.seed)
    t0 = time.perf_counter()
    print(f"synthetic target: rank 40, {r.shape[0]} stimuli x {r.shape[1]} neurons; features = the generating "
          f"responses; {a.steps} batches per estimate; running-mean momentum {momentum:g}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'stimuli':>7} {'recipe':>7} {'zero loss':>10} {'batch (old)':>12} {'running (new)':>14} {'all images':>11}"
          f" {'mean S_cnn old':>15}")
    results = {}
    for b in sizes:
        rows = {c: centering.loss_floor(r, b, c, n_steps=a.steps, momentum=momentum, seed=a.seed)
                for c in centering.CENTERINGS}
        results[b] = rows
        recipe = ",".join(n for n, cfg in recipes.items() if cfg["stim_batch"] == b) or "-"
        print(f"{b:>7} {recipe:>7} {rows['batch']['zero']:>10.4f} {rows['batch']['ratio']:>12.3f} "
              f"{rows['running']['ratio']:>14.3f} {rows['all']['ratio']:>11.3f} {rows['batch']['mean_s_cnn']:>15.4f}")
    print(f"(ratios: floor / zero-prediction loss; {time.perf_counter() - t0:.1f} s)")
    paper_b = recipes["paper"]["stim_batch"]
    row = results.get(paper_b) or {"running": centering.loss_floor(r, paper_b, "running", n_steps=a.steps,
                                                                   momentum=momentum, seed=a.seed)}
    print(f"loss floor ratio: {row['running']['ratio']:.3f}")


if __name__ == "__main__":
    main()
