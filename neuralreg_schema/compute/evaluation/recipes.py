"""Attack recipes: the suites of attacks with their grids, repeats, sample counts and batch sizes that
AttackSuite.add_recipe stores (evaluation.py) and compute/evaluation/attacks.run_recipe runs. Data only, checked
against compute/evaluation/specs.py when this module is imported; never imports datajoint.

Each recipe is a dict: "attacks" (names of attack_specs.ATTACKS, in run order), "grids" (per attack:
option -> list of values; every fixed-epsilon attack's grid also holds the recipe's "search_steps"),
"repeats" (seeds per setting of a randomized attack), "n_samples" (test samples attacked),
"batch_size", "search_steps" and "note".
"""
from __future__ import annotations

import copy

from .specs import ATTACKS, parse_grid


def _eps_grid(name: str, grid: dict, search_steps: int) -> dict:
    return {**grid, "search_steps": [search_steps]} if ATTACKS[name].kind == "eps" else dict(grid)


def _recipe(attacks: dict, n_samples: int, batch_size: int, repeats: int, search_steps: int, note: str) -> dict:
    return {"attacks": list(attacks), "grids": {k: _eps_grid(k, g, search_steps) for k, g in attacks.items()},
            "repeats": repeats, "n_samples": n_samples, "batch_size": batch_size,
            "search_steps": search_steps, "note": note}


# The paper's grids (main text Sec. 4.2): PGD step sizes 1e-6 ... 1 x iterations 10, 30, 50, 100, 200;
# the gradient-based boundary attack (Brendel-Bethge) step sizes 0.0003 ... 0.3 (the text lists
# "0.03" twice; the second is read as 0.3, continuing the series). The supplement: every attack with
# "a range of hyperparameters", 5 repeats (here: of the randomized attacks only), 1000 samples.
# Every iterative attack runs at the five iteration counts, which also give the Fig. 5 curve
# (minimal perturbation vs the attack's query budget); the minimization attacks also at 1000.
PAPER_STEPS = [10, 30, 50, 100, 200]
PAPER_PGD_STEPSIZES = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
PAPER_BB_STEPSIZES = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]

RECIPES: dict[str, dict] = {
    # the supplement: every attack of its list for the four norms (JSMA and SparseFool from
    # compute/evaluation/sparse_attacks.py), the paper's grids, 5 repeats of the randomized attacks, 1000 test
    # samples, the smallest adversarial per sample over settings and repeats; for a GPU (cost:
    # benchmarks/attacks.py and docs/robustness.md)
    "paper": _recipe({
        **{f"bb-{norm}": {"lr": PAPER_BB_STEPSIZES, "steps": PAPER_STEPS + [1000]}
           for norm in ("l0", "l1", "l2", "linf")},
        "cw-l2": {"steps": PAPER_STEPS, "binary_search_steps": [9], "stepsize": [1e-3, 1e-2, 1e-1],
                  "initial_const": [1e-2]},
        "ddn-l2": {"steps": PAPER_STEPS + [1000], "init_epsilon": [1.0, 0.1], "gamma": [0.05, 0.02]},
        **{f"fmn-{norm}": {"steps": PAPER_STEPS + [1000], "max_stepsize": [1.0, 0.1], "gamma": [0.05, 0.2]}
           for norm in ("l0", "l1", "l2", "linf")},
        "pgd-linf": {"steps": PAPER_STEPS, "abs_stepsize": PAPER_PGD_STEPSIZES, "eps_hi": [0.3]},
        "adampgd-linf": {"steps": PAPER_STEPS, "abs_stepsize": [1e-4, 1e-3, 1e-2], "eps_hi": [0.3]},
        "pgd-l2": {"steps": PAPER_STEPS, "abs_stepsize": [1e-3, 1e-2, 1e-1], "eps_hi": [6.0]},
        "adampgd-l2": {"steps": PAPER_STEPS, "abs_stepsize": [1e-3, 1e-2, 1e-1], "eps_hi": [6.0]},
        # Papernot et al. 2016's setting (sparse_attacks.py): theta +-1 (increase / decrease), gamma
        # 14.5 %, every pair, every other class as a target (the smallest adversarial is kept)
        "jsma-l0": {"theta": [1.0], "gamma": [0.145], "direction": ["increase", "decrease"], "pool": [0],
                    "steps": [80], "targets": [9]},
        "sparsefool-l1": {"lambda_": [1.0, 2.0, 3.0], "steps": [50], "df_steps": [50], "candidates": [10]},
    }, n_samples=1000, batch_size=250, repeats=5, search_steps=12,
        note="Li et al. 2019 supplement / Schott et al. 2019: all attacks incl. JSMA, SparseFool; paper grids; "
             "5 repeats (randomized); 1000 samples"),
    # two CPU cores, one ResNet18 width 16 in well under a minute: one cheap attack per norm (+ the
    # batched PGD search); short runs, no grid, no repeats; no BB (numba JIT 30-50 s) and no CW
    "demo": _recipe({
        "ddn-l2": {"steps": [10]},
        "fmn-l0": {"steps": [8], "init": ["ddn-l2"], "init_steps": [10]},
        "fmn-l1": {"steps": [8]},
        "fmn-linf": {"steps": [8]},
        "pgd-linf": {"steps": [3], "rel_stepsize": [0.5], "eps_hi": [0.0625]},
    }, n_samples=64, batch_size=64, repeats=1, search_steps=3,
        note="2 CPU cores: one short attack per norm + the Linf PGD search, 64 samples"),
    # tests: seconds on a tiny CNN; every attack kind except BB (numba JIT) once, a 2-point grid;
    # DDN at two iteration counts and the early-stopping sparse attacks give the budget curve points
    "tiny": _recipe({
        "ddn-l2": {"steps": [3, 10]},
        "jsma-l0": {"steps": [10], "theta": [1.0], "gamma": [0.2]},
        "sparsefool-l1": {"steps": [5], "lambda_": [3.0], "df_steps": [10]},
        "fmn-l0": {"steps": [10], "init": ["ddn-l2"], "init_steps": [5]},
        "fmn-l1": {"steps": [10]},
        "fmn-l2": {"steps": [10]},
        "fmn-linf": {"steps": [10]},
        "cw-l2": {"steps": [10], "binary_search_steps": [2], "stepsize": [5e-2], "initial_const": [1.0]},
        "pgd-linf": {"steps": [5], "rel_stepsize": [0.3, 0.5], "eps_hi": [0.5]},
        "pgd-l2": {"steps": [5], "rel_stepsize": [0.3], "eps_hi": [8.0]},
        "adampgd-linf": {"steps": [5], "rel_stepsize": [0.3], "eps_hi": [0.5]},
        "adampgd-l2": {"steps": [5], "rel_stepsize": [0.3], "eps_hi": [8.0]},
    }, n_samples=8, batch_size=8, repeats=2, search_steps=4,
        note="unit tests: every attack kind but Brendel-Bethge, a few steps, 8 samples"),
}


def recipe(name: str) -> dict:
    """A deep copy of RECIPES[name]."""
    if name not in RECIPES:
        raise KeyError(f"unknown attack recipe {name!r}; known: {', '.join(RECIPES)}")
    return copy.deepcopy(RECIPES[name])


for _name, _recipe_ in RECIPES.items():        # every grid parses: a typo fails at import, not in a job
    for _attack in _recipe_["attacks"]:
        parse_grid(_attack, _recipe_["grids"][_attack])

__all__ = ["PAPER_BB_STEPSIZES", "PAPER_PGD_STEPSIZES", "PAPER_STEPS", "RECIPES", "recipe"]
