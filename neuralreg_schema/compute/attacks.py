"""Minimal adversarial perturbations of a trained classifier (Li et al. 2019, supplement "More
extensive tests on adversarial robustness"; the evaluation scheme of Schott et al. 2019) with
foolbox 3. Pure numpy/PyTorch/foolbox: arrays and a model in, per-sample distances out; never
imports datajoint.

Protocol
--------
For one classifier, a fixed subset of test images (the same for every model) and one attack:
every hyperparameter setting of the attack's grid is run `repeats` times (different seeds) on every
sample, and per sample the adversarial with the smallest perturbation in the attack's own norm is
kept (`run_attack`). Its size is recorded in all four norms (`distances`). The robustness score of
the paper (Figs. 5 and 7) is, per norm and sample, the minimum over all attacks
(`minimal_over_attacks`); the paper reports its median (Fig. 5) and its mean (supplement Fig. 7):
`distance_statistics` gives both, with the SEM over samples, with clean errors counted as 0 and
with them left out; `robust_accuracy` the fraction not fooled within a budget (RobustBench's
Linf 8/255 and L2 0.5: `ROBUSTBENCH_BUDGETS`).

Query budget (Fig. 5's curve): every run records, per sample, the iterations it used (its `steps`;
the early-stopping sparse attacks report each sample's own count). `AttackOutcome.budget_distances`
holds, at each budget of `budget_points` (the grid's `steps` values and 1, 2, 5, 10, 20, ... up to
the largest), the adversarial kept among the runs that used at most that many iterations
(`reduce_runs`); `budget_curve` takes the minimum over attacks at every budget (an attack counts
from its smallest budget on). At the largest budget it equals the final result.

JSMA ("jsma-l0", L0) and SparseFool ("sparsefool-l1", L1), both L0/L1 attacks in the supplement's
list and absent from foolbox 3, are compute/sparse_attacks.py (why not a library: its docstring);
they keep, per sample, the smallest adversarial over runs in L0 and in L1 separately
(`AttackSpec.select`), and go through the same re-check.

Rules
-----
- The model runs in eval mode, wrapped as `foolbox.PyTorchModel(net.eval(), bounds=(0, 1))`; a
  network whose forward returns a tuple (ClassifierNet: (logits, features)) is wrapped so foolbox
  sees the logits only. The caller's train/eval mode is restored afterwards.
- Samples the model misclassifies without attack get distance 0 in every norm (success True,
  clean_correct False); they are not attacked.
- Samples that no run of the attack fools get +inf in every norm (success False).
- Every adversarial an attack claims is re-checked (`recheck`): finite, within [0, 1] (exactly, no
  tolerance: foolbox clips to the bounds) and misclassified by the model (argmax of the logits !=
  label). A claim that fails the re-check is a failure for that run; the count of such rejections
  is `AttackOutcome.rejected`.
- NaN: an adversarial holding NaN/inf fails the re-check (so it is a rejected claim, never a
  distance); `distances` raises ValueError on non-finite input and `minimal_over_attacks` raises
  on NaN distances, so a NaN can never become a robustness score.
- Minimization attacks ("min": DDN, FMN, Carlini-Wagner, Brendel-Bethge) run once per setting with
  `epsilons=None`. Fixed-epsilon attacks ("eps": PGD and Adam-PGD, Linf and L2) get each sample's
  minimal epsilon by a batched binary search (`minimal_epsilon_search`): all samples at once, each
  with its own epsilon, using foolbox's PGD loop with a per-sample epsilon tensor (subclasses
  below override only the random start and the projection so that epsilon may be a (N, 1, 1, 1)
  tensor).
- Brendel-Bethge starts from the re-checked adversarials of another attack (`init`, default DDN,
  run with `steps` = init_steps, default 100) via `starting_points`, never from foolbox's
  blended-noise fallback (which fails with a bare AssertionError when its noise search fails);
  samples whose starting attack fails are BB failures. BB's first call in a process JIT-compiles
  numba jitclasses, separately for each of the four norms (30-40 s each on 2 CPU cores, not
  cacheable), so the demo and tiny recipes leave BB out. FMN may start the same way (param
  `init`, default None: from the image; samples whose start fails run from the image).
- Repeats: only attacks with randomness (PGD/Adam-PGD random start) are repeated; the others are
  deterministic given the input (DDN, FMN, CW, BB from a DDN start), so their repeats would
  reproduce the same adversarials and are run once (the paper ran every setting five times).
- Determinism: each run seeds torch's global generator (foolbox's random starts draw from it)
  inside `torch.random.fork_rng`, so the caller's RNG state is restored and a given seed gives the
  same result on the CPU.

L0 counts the elements of (C, H, W) (pixels for grayscale images) whose value changed by more than
L0_THRESHOLD = 1e-6: float32 values in [0, 1] have a resolution of 6e-8 near 1, so clipping and
round-off do not count as changes, while any deliberate change (foolbox's L0 attacks move a pixel
by far more) does.

Adam-PGD is in foolbox 3.3.4 (`LinfAdamProjectedGradientDescentAttack`,
`L2AdamProjectedGradientDescentAttack`): "adampgd-linf" and "adampgd-l2".
"""
from __future__ import annotations

import copy
import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .modes import eval_mode as _eval_mode
from .runtime import resolve_device, torch_threads

NORMS = ("l0", "l1", "l2", "linf")
L0_THRESHOLD = 1e-6
SEARCH_STEPS = 10                 # default binary-search steps of the fixed-epsilon attacks
SEARCH_KEYS = ("eps_hi", "search_steps")   # grid keys of "eps" attacks that set the search, not the attack
Array = Union[np.ndarray, torch.Tensor]


class AttackError(RuntimeError):
    """An attack cannot be run or returned something unusable (the message says why)."""


# ---------------------------------------------------------------------------------------------
# distances and re-check


def _np(a: Array) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def distances(x: Array, x_adv: Array) -> dict[str, np.ndarray]:
    """Per sample (first axis), the size of x_adv - x in L0, L1, L2 and Linf (float64 (N,) each).

    L0 counts elements whose change exceeds L0_THRESHOLD. Raises ValueError on shape mismatch or
    non-finite values (NaN distances are refused)."""
    a, b = _np(x).astype(np.float64), _np(x_adv).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images {a.shape} and adversarials {b.shape} differ in shape")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("distances: images or adversarials hold NaN or inf values")
    d = np.abs((b - a).reshape(len(a), -1))
    if d.shape[1] == 0:
        z = np.zeros(len(a))
        return {n: z.copy() for n in NORMS}
    return {"l0": (d > L0_THRESHOLD).sum(axis=1).astype(np.float64), "l1": d.sum(axis=1),
            "l2": np.sqrt((d * d).sum(axis=1)), "linf": d.max(axis=1)}


class _Logits(nn.Module):
    """The logits of a model whose forward may return a tuple (logits, ...)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def _model_device(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: Array, batch_size: int = 256) -> np.ndarray:
    """argmax of the logits (int64 (N,)), in eval mode, batched; the model's mode is restored."""
    net = model if isinstance(model, _Logits) else _Logits(model)
    dev = _model_device(net)
    x = torch.as_tensor(_np(images) if not isinstance(images, torch.Tensor) else images).float()
    out = []
    with _eval_mode(net):
        for i in range(0, len(x), batch_size):
            out.append(net(x[i:i + batch_size].to(dev)).argmax(dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def recheck(model: nn.Module, images: Array, labels: Array, adversarials: Array, success: Array) -> np.ndarray:
    """bool (N,): success AND the adversarial is finite, within [0, 1] and misclassified.

    `images` is unused beyond the shape check (kept so that callers pass what belongs together)."""
    adv = _np(adversarials)
    ok = _np(success).astype(bool).copy()
    y = _np(labels).astype(np.int64)
    if adv.shape != _np(images).shape or ok.shape != (len(adv),) or y.shape != (len(adv),):
        raise ValueError(f"recheck: shapes disagree: images {_np(images).shape}, adversarials {adv.shape}, "
                         f"labels {y.shape}, success {ok.shape}")
    flat = adv.reshape(len(adv), -1)
    ok &= np.isfinite(flat).all(axis=1)
    ok &= (np.nan_to_num(flat, nan=-1.0) >= 0).all(axis=1) & (np.nan_to_num(flat, nan=2.0) <= 1).all(axis=1)
    idx = np.flatnonzero(ok)
    if len(idx):
        pred = predict(model, torch.as_tensor(adv[idx], dtype=torch.float32))
        ok[idx] = pred != y[idx]
    return ok


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global generator(s) seeded; the caller's state restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) % (2 ** 63))
        yield


# ---------------------------------------------------------------------------------------------
# foolbox PGD with a per-sample epsilon


def _per_sample_pgd_classes():
    """Subclasses of foolbox's PGD / Adam-PGD (Linf, L2) whose `run(..., epsilon=E)` accepts an
    eagerpy tensor E of shape (N, 1, 1, 1): foolbox's step size (rel_stepsize * epsilon), Adam
    optimizer and loop work unchanged with it; the random start and the projection are rewritten
    to broadcast per sample. A float epsilon still works."""
    import eagerpy as ep
    from foolbox import attacks as fa
    from foolbox.attacks.gradient_descent_base import uniform_l2_n_balls
    from foolbox.devutils import atleast_kd, flatten

    class LinfMixin:
        def get_random_start(self, x0, epsilon):
            return x0 + epsilon * ep.uniform(x0, x0.shape, -1.0, 1.0)

        def project(self, x, x0, epsilon):
            if not isinstance(epsilon, ep.Tensor):
                return x0 + ep.clip(x - x0, -epsilon, epsilon)
            return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)

    class L2Mixin:
        def get_random_start(self, x0, epsilon):
            n, d = flatten(x0).shape
            return x0 + epsilon * uniform_l2_n_balls(x0, n, d).reshape(x0.shape)

        def project(self, x, x0, epsilon):
            delta = x - x0
            norms = ep.maximum(flatten(delta).norms.l2(axis=-1), 1e-12)
            eps = epsilon.reshape((len(x0),)) if isinstance(epsilon, ep.Tensor) else epsilon
            factor = ep.minimum(1, eps / norms)
            return x0 + delta * atleast_kd(factor, x0.ndim)

    class LinfPGD(LinfMixin, fa.LinfProjectedGradientDescentAttack):
        pass

    class L2PGD(L2Mixin, fa.L2ProjectedGradientDescentAttack):
        pass

    class LinfAdamPGD(LinfMixin, fa.LinfAdamProjectedGradientDescentAttack):
        pass

    class L2AdamPGD(L2Mixin, fa.L2AdamProjectedGradientDescentAttack):
        pass

    return {"pgd-linf": LinfPGD, "pgd-l2": L2PGD, "adampgd-linf": LinfAdamPGD, "adampgd-l2": L2AdamPGD}


_PGD_CLASSES: dict = {}


def _pgd_class(name: str):
    if not _PGD_CLASSES:
        _PGD_CLASSES.update(_per_sample_pgd_classes())
    return _PGD_CLASSES[name]


# ---------------------------------------------------------------------------------------------
# attack specs


@dataclass(frozen=True)
class AttackSpec:
    """One attack: its own norm, its kind ("min": minimization, one run per setting; "eps":
    fixed-epsilon, minimal epsilon by binary search), how to build the foolbox attack from a
    params dict, its defaults and default grid (dict of lists: the cartesian product)."""
    name: str
    norm: str
    kind: str
    foolbox_class: str                # the foolbox 3.3.4 class it runs ("" for compute/sparse_attacks.py)
    defaults: dict                    # constructor params (+ "eps_hi" for eps attacks, "init"/"init_steps" for BB, FMN)
    grid: dict                        # default hyperparameter grid: param -> list of values
    stochastic: bool                  # random start: repeats give different adversarials
    build_fn: Callable[[dict], Any] = field(repr=False, compare=False, default=None)
    # norms besides `norm` in which the smallest adversarial over runs is kept on its own (an L0/L1
    # attack: the fewest changed pixels and the smallest L1 may come from different runs)
    select: tuple = ()

    def params(self, overrides: Optional[dict] = None) -> dict:
        """defaults completed by overrides; unknown keys raise ValueError."""
        overrides = dict(overrides or {})
        known = set(self.defaults) | (set(SEARCH_KEYS) if self.kind == "eps" else set())
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"attack {self.name}: unknown params {unknown}; known: {sorted(known)}")
        out = {**self.defaults, **overrides}
        if self.kind == "eps":
            out.setdefault("search_steps", SEARCH_STEPS)
        return out

    def build(self, params: Optional[dict] = None):
        """The foolbox attack object for `params` (search / init keys are not passed to it)."""
        p = {k: v for k, v in self.params(params).items() if k not in SEARCH_KEYS + ("init", "init_steps")}
        return self.build_fn(p)


def _fb_builder(cls_name: str):
    def build(p):
        from foolbox import attacks as fa
        return getattr(fa, cls_name)(**p)
    return build


def _pgd_builder(name: str):
    return lambda p: _pgd_class(name)(**p)


def _specs() -> dict[str, AttackSpec]:
    s: dict[str, AttackSpec] = {}

    def add(name, norm, kind, cls, defaults, grid, stochastic=False, build=None, select=()):
        s[name] = AttackSpec(name, norm, kind, cls, defaults, grid, stochastic, build or _fb_builder(cls),
                             tuple(select))

    bb = dict(steps=1000, lr=1e-3, lr_decay=0.5, lr_num_decay=20, momentum=0.8, overshoot=1.1,
              binary_search_steps=10, init="ddn-l2", init_steps=100)
    for norm, cls in (("l0", "L0BrendelBethgeAttack"), ("l1", "L1BrendelBethgeAttack"),
                      ("l2", "L2BrendelBethgeAttack"), ("linf", "LinfinityBrendelBethgeAttack")):
        add(f"bb-{norm}", norm, "min", cls, dict(bb), {"lr": [1e-3, 1e-2]})
    add("cw-l2", "l2", "min", "L2CarliniWagnerAttack",
        dict(binary_search_steps=5, steps=200, stepsize=1e-2, confidence=0.0, initial_const=1e-2,
             abort_early=True),
        {"stepsize": [1e-2, 5e-2], "initial_const": [1e-2, 1.0]})
    add("ddn-l2", "l2", "min", "DDNAttack", dict(init_epsilon=1.0, steps=100, gamma=0.05),
        {"init_epsilon": [1.0, 0.1], "gamma": [0.05, 0.02]})
    # init: None (start from the image) or an attack whose adversarials start FMN (init_steps steps)
    fmn = dict(steps=100, max_stepsize=1.0, gamma=0.05, binary_search_steps=10, init=None, init_steps=100)
    for norm, cls in (("l0", "L0FMNAttack"), ("l1", "L1FMNAttack"), ("l2", "L2FMNAttack"),
                      ("linf", "LInfFMNAttack")):
        add(f"fmn-{norm}", norm, "min", cls, dict(fmn), {"max_stepsize": [1.0, 0.1], "gamma": [0.05, 0.2]})
    # abs_stepsize (None: rel_stepsize x epsilon) is foolbox's absolute step, the paper's PGD grid
    pgd_linf = dict(rel_stepsize=0.01 / 0.3, abs_stepsize=None, steps=40, random_start=True, eps_hi=0.3)
    pgd_l2 = dict(rel_stepsize=0.025, abs_stepsize=None, steps=50, random_start=True, eps_hi=6.0)
    adam = dict(adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8)
    add("pgd-linf", "linf", "eps", "LinfProjectedGradientDescentAttack", dict(pgd_linf),
        {"rel_stepsize": [0.01 / 0.3, 0.1]}, True, _pgd_builder("pgd-linf"))
    add("pgd-l2", "l2", "eps", "L2ProjectedGradientDescentAttack", dict(pgd_l2),
        {"rel_stepsize": [0.025, 0.1]}, True, _pgd_builder("pgd-l2"))
    add("adampgd-linf", "linf", "eps", "LinfAdamProjectedGradientDescentAttack", {**pgd_linf, **adam},
        {"rel_stepsize": [0.01 / 0.3, 0.1]}, True, _pgd_builder("adampgd-linf"))
    add("adampgd-l2", "l2", "eps", "L2AdamProjectedGradientDescentAttack", {**pgd_l2, **adam},
        {"rel_stepsize": [0.025, 0.1]}, True, _pgd_builder("adampgd-l2"))
    # written after their papers (compute/sparse_attacks.py): deterministic, early-stopping
    add("jsma-l0", "l0", "min", "", dict(theta=1.0, gamma=0.1, steps=100, targets=1, pool=64),
        {"theta": [1.0, 0.3]}, build=_sparse_builder("jsma"), select=("l1",))
    add("sparsefool-l1", "l1", "min", "", dict(lambda_=3.0, steps=20, df_steps=50, candidates=10),
        {"lambda_": [1.0, 3.0]}, build=_sparse_builder("sparsefool"), select=("l0",))
    return s


class _SparseAttack:
    """An attack of compute/sparse_attacks.py with its params: run(net, x, y) -> (adv, success, iterations)."""

    def __init__(self, fn_name: str, params: dict):
        self.fn_name, self.params = fn_name, dict(params)

    def run(self, net, x, y):
        from . import sparse_attacks
        return getattr(sparse_attacks, self.fn_name)(net, x, y, **self.params)


def _sparse_builder(fn_name: str):
    return lambda p: _SparseAttack(fn_name, p)


ATTACKS: dict[str, AttackSpec] = _specs()


def expand_grid(grid: Union[None, dict, Sequence[dict]]) -> list[dict]:
    """A grid as a list of params dicts: a dict of lists gives the cartesian product (a scalar
    value counts as a one-element list); a list of dicts is taken as is; None or {} gives [{}]."""
    if grid is None:
        return [{}]
    if isinstance(grid, dict):
        keys = sorted(grid)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in (grid[k] for k in keys)]
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)] or [{}]
    out = [dict(g) for g in grid]
    return out or [{}]


# ---------------------------------------------------------------------------------------------
# recipes

_ALL = list(ATTACKS)


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
    # compute/sparse_attacks.py), the paper's grids, 5 repeats of the randomized attacks, 1000 test
    # samples, the smallest adversarial per sample over settings and repeats; for a GPU (cost:
    # benchmarks/attacks.py and the README)
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
        "jsma-l0": {"theta": [1.0, 0.3, 0.1], "gamma": [0.2], "steps": [200], "targets": [3]},
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


# ---------------------------------------------------------------------------------------------
# the batched binary search


def minimal_epsilon_search(model: nn.Module, images: Array, labels: Array,
                           attack_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                           eps_hi: Union[float, Array], steps: int) -> tuple[np.ndarray, Array]:
    """Per sample, the smallest epsilon (up to eps_hi / 2**steps) at which `attack_fn` fools the
    model: a bisection on [0, eps_hi] run on all samples at once, each with its own epsilon.

    attack_fn(x, y, eps) -> adversarials, for x (n, ...) and y (n,) torch tensors on the model's
    device and eps a float32 (n,) tensor of per-sample epsilons (one call per bisection step for
    all samples still searched). A result counts when it passes `recheck` (finite, in [0, 1],
    misclassified). Samples misclassified without attack get 0 (adversarial = the image); samples
    not fooled at eps_hi get +inf (adversarial = the image). Returns (eps float64 (N,), the
    adversarial at each sample's final upper bound), the adversarials of the same kind (numpy or
    torch) as `images`."""
    as_numpy = not isinstance(images, torch.Tensor)
    net = _Logits(model) if not isinstance(model, _Logits) else model
    dev = _model_device(net)
    x = torch.as_tensor(_np(images) if as_numpy else images, dtype=torch.float32).to(dev)
    y = torch.as_tensor(_np(labels), dtype=torch.int64).to(dev)
    n = len(x)
    hi = np.broadcast_to(np.asarray(_np(eps_hi), np.float64), (n,)).copy()
    if not (np.isfinite(hi).all() and (hi > 0).all()):
        raise ValueError("eps_hi must be finite and > 0")
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    lo = np.zeros(n)
    eps = np.full(n, np.inf)
    best = x.clone()
    clean_wrong = predict(net, x) != _np(y)
    eps[clean_wrong] = 0.0

    def attempt(idx: np.ndarray, e: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(idx, device=dev)
        adv = attack_fn(x[t], y[t], torch.as_tensor(e, dtype=torch.float32, device=dev))
        adv = torch.as_tensor(adv).to(dev, torch.float32)
        ok = recheck(net, x[t], y[t], adv, np.ones(len(idx), bool))
        if ok.any():
            best[t[torch.as_tensor(ok, device=dev)]] = adv[torch.as_tensor(ok, device=dev)]
        return ok

    active = np.flatnonzero(~clean_wrong)
    if len(active):
        ok = attempt(active, hi[active])
        found = active[ok]
        eps[found] = hi[found]
        for _ in range(int(steps)):
            if not len(found):
                break
            mid = (lo[found] + hi[found]) / 2
            ok = attempt(found, mid)
            hi[found[ok]] = mid[ok]
            lo[found[~ok]] = mid[~ok]
        eps[found] = hi[found]
    return eps, (best.cpu().numpy() if as_numpy else best)


# ---------------------------------------------------------------------------------------------
# running one attack


@dataclass
class AttackOutcome:
    """The result of one attack (over its grid and repeats) on N samples."""
    name: str
    norm: str                          # the attack's own norm (which decides "best")
    kind: str                          # "min" | "eps"
    distances: dict                    # norm -> float64 (N,): the best adversarial's size; 0 / inf
    success: np.ndarray                # bool (N,): a re-checked adversarial (or clean-misclassified)
    clean_correct: np.ndarray          # bool (N,): correctly classified without attack
    params_tried: list                 # per run: {"params", "repeat", "seed", "successes", "rejected", "seconds"}
    seconds: float
    rejected: int = 0                  # claimed successes that failed the re-check, over all runs
    best_run: Optional[np.ndarray] = None   # int (N,): index into params_tried of the kept adversarial (-1: none)
    device: str = "cpu"
    budgets: list = field(default_factory=list)        # query budgets (iterations per run), ascending
    budget_distances: Optional[np.ndarray] = None      # (len(budgets), N, 4): the kept adversarial among the runs
                                                       # that used <= budget iterations (NORMS order; 0 / inf as above)

    def summary(self) -> dict:
        """median and mean per norm (inf when a failure dominates), success rate, counts."""
        out = {"n_samples": int(len(self.success)), "success_rate": float(np.mean(self.success)) if len(self.success) else 0.0,
               "clean_accuracy": float(np.mean(self.clean_correct)) if len(self.success) else 0.0,
               "rejected": int(self.rejected), "seconds": float(self.seconds)}
        for k in NORMS:
            d = self.distances[k]
            out[f"median_{k}"] = float(np.median(d)) if len(d) else float("nan")
            out[f"mean_{k}"] = float(np.mean(d)) if len(d) else float("nan")
        return out


def _run_seed(seed: int, k: int, repeat: int, batch: int) -> int:
    return (int(seed) * 1_000_003 + k * 10_007 + repeat * 101 + batch) % (2 ** 62)


def _attack_batch(spec: AttackSpec, params: dict, fmodel, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  seed: int, dev: torch.device) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(adversarials, claimed success, iterations used per sample) of one run of `spec` on one batch
    (all clean-correct). Iterations: the early-stopping attacks of compute/sparse_attacks.py report
    each sample's; every other attack counts its `steps` for every sample."""
    steps = np.full(len(x), int(params.get("steps", 0)), np.int64)
    if not spec.foolbox_class:
        with _seeded(seed, dev):
            adv, ok, its = spec.build(params).run(net, x, y)
        return adv, _np(ok).astype(bool), _np(its).astype(np.int64)
    adv, claimed = _foolbox_batch(spec, params, fmodel, net, x, y, seed, dev)
    return adv, claimed, steps


def _foolbox_batch(spec: AttackSpec, params: dict, fmodel, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   seed: int, dev: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """(adversarials, claimed success) of one run of a foolbox attack on one batch."""
    import eagerpy as ep
    import foolbox as fb
    crit = fb.Misclassification(y)
    with _seeded(seed, dev):
        if spec.kind == "eps":
            attack = spec.build(params)

            def attack_fn(xb, yb, eps):
                e = ep.astensor(eps.to(xb.dtype).reshape((-1,) + (1,) * (xb.ndim - 1)))
                return attack.run(fmodel, xb, fb.Misclassification(yb), epsilon=e)

            eps, adv = minimal_epsilon_search(net, x, y, attack_fn, float(params["eps_hi"]),
                                              int(params["search_steps"]))
            return adv, np.isfinite(eps)
        if spec.name.startswith("bb-") or (spec.name.startswith("fmn-") and params.get("init")):
            init = ATTACKS[params.get("init") or "ddn-l2"]
            if init.name.startswith(("bb-", "fmn-")) or not init.foolbox_class:
                raise ValueError(f"{spec.name}: init must be a foolbox attack other than Brendel-Bethge or FMN")
            init_params = init.params({"steps": int(params["init_steps"])} if "steps" in init.defaults else {})
            start, claimed = _foolbox_batch(init, init_params, fmodel, net, x, y, seed + 1, dev)
            ok = recheck(net, x, y, start, claimed)
            adv = x.clone()
            attack = spec.build(params)
            if ok.any():
                t = torch.as_tensor(np.flatnonzero(ok), device=dev)
                # an eagerpy tensor: FMN (unlike BB) does not convert raw starting points itself
                adv[t] = attack.run(fmodel, x[t], fb.Misclassification(y[t]),
                                    starting_points=ep.astensor(start[t].to(dev)))
            if spec.name.startswith("bb-") or ok.all():
                return adv, ok                 # BB: samples without a start are failures
            t = torch.as_tensor(np.flatnonzero(~ok), device=dev)    # FMN: the others from the image
            adv[t] = attack.run(fmodel, x[t], fb.Misclassification(y[t]))
            return adv, np.ones(len(x), bool)  # claims; run_attack's re-check decides
        attack = spec.build(params)
        _, clipped, success = attack(fmodel, x, crit, epsilons=None)
        return clipped, _np(success).astype(bool)


def run_attack(model: nn.Module, images: Array, labels: Array, name: str, *,
               grid: Union[None, dict, Sequence[dict]] = None, repeats: int = 1, seed: int = 0,
               batch_size: int = 128, device=None,
               progress: Optional[Callable[[str], None]] = None) -> AttackOutcome:
    """Attack `name` (a key of ATTACKS) on images (N, C, H, W) or (N, H, W) in [0, 1] with int labels
    (N,): every setting of `grid` (default: the attack's own grid; dict of lists or list of dicts,
    each completed by the attack's defaults) x `repeats` seeds (randomized attacks only), in batches
    of `batch_size`; per sample the re-checked adversarial smallest in the attack's own norm is kept.
    The model (ClassifierNet or any module returning logits or (logits, ...)) is moved to `device`
    (default: cuda if available) and evaluated in eval mode; its mode is restored afterwards."""
    import foolbox as fb
    t0 = time.perf_counter()
    say = progress or (lambda message: None)
    if name not in ATTACKS:
        raise KeyError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    spec = ATTACKS[name]
    settings = [spec.params(p) for p in expand_grid(grid if grid is not None else spec.grid)]
    n_rep = max(1, int(repeats)) if spec.stochastic else 1
    x_np = _np(images).astype(np.float32)
    if x_np.ndim == 3:
        x_np = x_np[:, None]
    y_np = _np(labels).astype(np.int64)
    if x_np.ndim != 4 or y_np.shape != (len(x_np),):
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W) with labels (N,); got {x_np.shape}, {y_np.shape}")
    if not np.isfinite(x_np).all() or (len(x_np) and (x_np.min() < 0 or x_np.max() > 1)):
        raise ValueError("images must be finite and within the bounds [0, 1]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    n = len(x_np)
    net = _Logits(model)
    original_device = _model_device(net)
    rejected = 0
    tried: list[dict] = []
    run_d: list[np.ndarray] = []       # per run: (n, 4) distances of its re-checked adversarials, inf elsewhere
    run_used: list[np.ndarray] = []    # per run: (n,) iterations each sample used
    with torch_threads(dev), _eval_mode(net):
        net.to(dev)
        try:
            fmodel = fb.PyTorchModel(net, bounds=(0, 1), device=dev)
            clean_correct = predict(net, x_np) == y_np
            targets = np.flatnonzero(clean_correct)
            say(f"{name}: {len(settings)} setting(s) x {n_rep} repeat(s) on {len(targets)} of {n} samples "
                f"({n - len(targets)} misclassified without attack) on {dev}")
            for k_set, params in enumerate(settings):
                for rep in range(n_rep):
                    t_run = time.perf_counter()
                    run_success = run_rejected = 0
                    d_run = np.full((n, len(NORMS)), np.inf)
                    used = np.zeros(n, np.int64)
                    for b, start in enumerate(range(0, len(targets), batch_size)):
                        idx = targets[start:start + batch_size]
                        xb = torch.as_tensor(x_np[idx], device=dev)
                        yb = torch.as_tensor(y_np[idx], device=dev)
                        adv, claimed, its = _attack_batch(spec, params, fmodel, net, xb, yb,
                                                          _run_seed(seed, k_set, rep, b), dev)
                        adv_np = _np(adv).astype(np.float32)
                        ok = recheck(net, x_np[idx], y_np[idx], adv_np, claimed)
                        run_rejected += int((claimed & ~ok).sum())
                        run_success += int(ok.sum())
                        used[idx] = its
                        if ok.any():
                            d = distances(x_np[idx][ok], adv_np[ok])
                            d_run[idx[ok]] = np.stack([d[k] for k in NORMS], axis=1)
                    rejected += run_rejected
                    run_d.append(d_run)
                    run_used.append(used)
                    tried.append({"params": dict(params), "repeat": rep, "seed": _run_seed(seed, k_set, rep, 0),
                                  "successes": run_success, "rejected": run_rejected,
                                  "iterations": int(used[targets].sum()),
                                  "seconds": time.perf_counter() - t_run})
                    say(f"{name} {params} repeat {rep + 1}/{n_rep}: {run_success}/{len(targets)} fooled"
                        + (f", {run_rejected} claims rejected by the re-check" if run_rejected else "")
                        + f" ({tried[-1]['seconds']:.1f} s)")
        finally:
            net.to(original_device)
    runs_d = np.stack(run_d) if run_d else np.full((0, n, len(NORMS)), np.inf)
    runs_used = np.stack(run_used) if run_used else np.zeros((0, n), np.int64)
    if np.isnan(runs_d).any():
        raise AttackError(f"{name}: NaN distances")
    select = (spec.norm,) + tuple(spec.select)
    final, best_run = reduce_runs(runs_d, runs_used, spec.norm, select)
    final[~clean_correct] = 0.0
    best = {k: final[:, i] for i, k in enumerate(NORMS)}
    steps_values = [int(p.get("steps", 0)) for p in settings]
    budgets = budget_points(steps_values)
    per_budget = np.stack([reduce_runs(runs_d, runs_used, spec.norm, select, budget=b)[0] for b in budgets]) \
        if budgets else np.zeros((0, n, len(NORMS)))
    per_budget[:, ~clean_correct] = 0.0
    success = np.isfinite(best[spec.norm])
    return AttackOutcome(name=name, norm=spec.norm, kind=spec.kind, distances=best, success=success,
                         clean_correct=clean_correct, params_tried=tried, seconds=time.perf_counter() - t0,
                         rejected=rejected, best_run=best_run, device=str(dev), budgets=budgets,
                         budget_distances=per_budget)


BUDGET_SERIES = (1, 2, 5)


def budget_points(steps_values: Sequence[int]) -> list[int]:
    """The query budgets (attack iterations per run) at which a run_attack outcome is recorded: the
    grid's `steps` values and the 1-2-5 series (1, 2, 5, 10, 20, ...) up to the largest of them."""
    top = max([int(v) for v in steps_values if int(v) > 0], default=0)
    points = {int(v) for v in steps_values if int(v) > 0}
    scale = 1
    while scale <= top:
        points.update(b * scale for b in BUDGET_SERIES if b * scale <= top)
        scale *= 10
    return sorted(points)


def reduce_runs(runs_d: np.ndarray, runs_used: np.ndarray, own: str, select: Sequence[str] = (),
                budget: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Per sample the kept adversarial over runs: runs_d (R, n, 4) distances in NORMS order (inf: the
    run found none), runs_used (R, n) iterations each run used per sample. Only runs that used at most
    `budget` iterations on a sample count for it (None: all). The adversarial smallest in the `own`
    norm gives every norm (first run on ties); in each norm of `select` the smallest over runs is
    kept on its own. Returns ((n, 4) float64, inf where none; best run index (n,), -1 where none)."""
    runs_d = np.asarray(runs_d, np.float64)
    r, n = runs_d.shape[:2]
    if r == 0:
        return np.full((n, len(NORMS)), np.inf), np.full(n, -1, np.int64)
    eligible = np.ones((r, n), bool) if budget is None else np.asarray(runs_used) <= int(budget)
    d = np.where(eligible[..., None], runs_d, np.inf)
    k_own = NORMS.index(own)
    best_run = np.argmin(d[..., k_own], axis=0)
    out = d[best_run, np.arange(n)].copy()
    found = np.isfinite(out[:, k_own])
    out[~found] = np.inf
    for norm in select:
        k = NORMS.index(norm)
        out[:, k] = d[..., k].min(axis=0)
    return out, np.where(found, best_run, -1).astype(np.int64)


def run_recipe(model: nn.Module, images: Array, labels: Array, name: str = "demo", *, seed: int = 0,
               device=None, attacks: Optional[Sequence[str]] = None,
               progress: Optional[Callable[[str], None]] = None) -> dict[str, AttackOutcome]:
    """Every attack of RECIPES[name] (or the subset `attacks`) with the recipe's grids, repeats and
    batch size, on the first n_samples images given. Returns {attack: AttackOutcome}."""
    r = recipe(name)
    n = min(len(images), r["n_samples"])
    out = {}
    for a in (attacks or r["attacks"]):
        out[a] = run_attack(model, _np(images)[:n], _np(labels)[:n], a, grid=r["grids"][a], repeats=r["repeats"],
                            seed=seed, batch_size=r["batch_size"], device=device, progress=progress)
    return out


def minimal_over_attacks(outcomes: Sequence[AttackOutcome]) -> dict[str, np.ndarray]:
    """Per norm and sample, the minimum over the outcomes' distances (every attack's best
    adversarial counts in every norm): float64 (N,) per norm. Raises ValueError for no outcomes,
    outcomes of different sample counts, or NaN distances."""
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("minimal_over_attacks: no outcomes")
    n = len(outcomes[0].success)
    result = {}
    for k in NORMS:
        stack = []
        for o in outcomes:
            d = np.asarray(o.distances[k], np.float64)
            if d.shape != (n,):
                raise ValueError(f"outcome {o.name}: {k} distances of shape {d.shape}, expected ({n},)")
            if np.isnan(d).any():
                raise ValueError(f"outcome {o.name}: NaN {k} distances")
            stack.append(d)
        result[k] = np.min(np.stack(stack), axis=0)
    return result


# ---------------------------------------------------------------------------------------------
# statistics of per-sample minimal distances (the robustness scores of Figs. 5 and 7)

ROBUSTBENCH_BUDGETS = {"linf": 8 / 255, "l2": 0.5}   # RobustBench's standard CIFAR-10 threat models


def distance_statistics(d: Array, clean_correct: Array) -> dict:
    """Scores of per-sample minimal distances d (float (n,), 0 = misclassified clean, inf = never
    fooled) with clean_correct (bool (n,)):

    median, mean, sem           over all n samples, clean errors counted as distance 0 (the paper's
                                scores: Fig. 5 the median, supplement Fig. 7 the mean)
    median_correct, mean_correct, sem_correct
                                over the clean-correct samples only (clean errors left out)
    sem = std(ddof=1) / sqrt(n) over samples; the mean and SEM are inf when any distance is inf, the
    median only when at least half are; nan for no samples (SEM: fewer than two). success_rate: the
    fraction of samples with a finite distance; n, n_correct: the counts."""
    d = np.asarray(_np(d), np.float64).ravel()
    ok = np.asarray(_np(clean_correct), bool).ravel()
    if d.shape != ok.shape:
        raise ValueError(f"distance_statistics: {d.shape} distances, {ok.shape} clean_correct")
    if np.isnan(d).any():
        raise ValueError("distance_statistics: NaN distances")

    def stats(v):
        if not len(v):
            return float("nan"), float("nan"), float("nan")
        finite = np.isfinite(v).all()
        mean = float(v.mean()) if finite else float("inf")
        sem = (float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")) if finite else float("inf")
        return float(np.median(v)), mean, sem

    out = dict(zip(("median", "mean", "sem"), stats(d)))
    out.update(zip(("median_correct", "mean_correct", "sem_correct"), stats(d[ok])))
    out.update(success_rate=float(np.isfinite(d).mean()) if len(d) else float("nan"), n=int(len(d)),
               n_correct=int(ok.sum()))
    return out


def robust_accuracy(d: Array, epsilon: float) -> float:
    """The fraction of samples no attack fooled at or below epsilon: mean(d > epsilon) over all samples
    of per-sample minimal distances d (clean errors, distance 0, are never robust; never fooled, inf,
    always). nan for no samples."""
    d = np.asarray(_np(d), np.float64).ravel()
    if np.isnan(d).any():
        raise ValueError("robust_accuracy: NaN distances")
    return float((d > float(epsilon)).mean()) if len(d) else float("nan")


def budget_curve(per_attack: Sequence[tuple[Sequence[int], Array]]) -> tuple[list[int], np.ndarray]:
    """The minimal perturbation as a function of the query budget, over attacks: per_attack holds, per
    attack, (its budgets ascending, distances (len(budgets), n, ...) at them). At budget B an attack
    contributes its distances at its largest budget <= B (none below its smallest: inf). Returns (the
    union of the budgets, (len(union), n, ...) the per-sample minimum over attacks at each)."""
    per_attack = [(list(map(int, b)), np.asarray(_np(d), np.float64)) for b, d in per_attack]
    if not per_attack:
        raise ValueError("budget_curve: no attacks")
    shape = next((d.shape[1:] for _, d in per_attack if d.ndim >= 2), None)
    for b, d in per_attack:
        if len(b) != len(d) or list(b) != sorted(b) or (len(b) and d.shape[1:] != shape):
            raise ValueError("budget_curve: budgets must be ascending, one distance array per budget, same samples")
        if np.isnan(d).any():
            raise ValueError("budget_curve: NaN distances")
    union = sorted({x for b, _ in per_attack for x in b})
    if shape is None:
        return union, np.zeros((0,))
    out = np.full((len(union),) + tuple(shape), np.inf)
    for b, d in per_attack:
        for i, budget in enumerate(union):
            j = np.searchsorted(b, budget, side="right") - 1
            if j >= 0:
                out[i] = np.minimum(out[i], d[j])
    return union, out
