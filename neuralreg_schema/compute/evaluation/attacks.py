"""Minimal adversarial perturbations of a trained classifier (Li et al. 2019, supplement "More
extensive tests on adversarial robustness"; the evaluation scheme of Schott et al. 2019) with
foolbox 3: running one attack. Pure numpy/PyTorch/foolbox: arrays and a model in, per-sample
distances out; never imports datajoint.

Beside it: compute/evaluation/specs.py (the typed attack specs and options, ATTACKS, the parser of a
stored config), compute/evaluation/recipes.py (RECIPES: the suites), compute/evaluation/foolbox_pgd.py (foolbox's
PGD with a per-sample epsilon), compute/evaluation/scores.py (distances in the four norms and the
robustness scores) and compute/evaluation/sparse_attacks.py (JSMA, SparseFool).

Protocol
--------
For one classifier, a fixed subset of test images (the same for every model) and one attack:
every hyperparameter setting of the attack's grid is run `repeats` times (different seeds) on every
sample, and per sample the adversarial with the smallest perturbation in the attack's own norm is
kept (`run_attack`). Its size is recorded in all four norms (attack_scores.distances). The
robustness score of the paper (Figs. 5 and 7) is, per norm and sample, the minimum over all attacks
(attack_scores.minimal_over_attacks) and its median (Fig. 5) and mean (supplement Fig. 7).

Query budget (Fig. 5's curve): every run records, per sample, the iterations it used (its `steps`;
the early-stopping sparse attacks report each sample's own count). `AttackOutcome.budget_distances`
holds, at each budget of attack_scores.budget_points (the grid's `steps` values and 1, 2, 5, 10,
20, ... up to the largest), the adversarial kept among the runs that used at most that many
iterations (attack_scores.reduce_runs); attack_scores.budget_curve takes the minimum over attacks at
every budget. At the largest budget it equals the final result. JSMA and SparseFool keep, per
sample, the smallest adversarial over runs in L0 and in L1 separately (`AttackSpec.select`), and go
through the same re-check.

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
  is `AttackOutcome.rejected`. An adversarial holding NaN/inf fails the re-check, and NaN distances
  are refused, so a NaN can never become a robustness score.
- Minimization attacks (options kind "min": DDN, FMN, Carlini-Wagner, Brendel-Bethge, JSMA,
  SparseFool) run once per setting (the foolbox ones with `epsilons=None`). Fixed-epsilon attacks (kind "eps": PGD and
  Adam-PGD, Linf and L2) get each sample's minimal epsilon by a batched binary search
  (`minimal_epsilon_search`): all samples at once, each with its own epsilon (foolbox_pgd.py).
- Brendel-Bethge starts from the re-checked adversarials of another attack (option `init`, default
  DDN, run with `steps` = init_steps, default 100) via `starting_points`, never from foolbox's
  blended-noise fallback (which fails with a bare AssertionError when its noise search fails);
  samples whose starting attack fails are BB failures. BB's first call in a process JIT-compiles
  numba jitclasses, separately for each of the four norms (30-40 s each on 2 CPU cores, not
  cacheable), so the demo and tiny recipes leave BB out. FMN may start the same way (option
  `init`, default None: from the image; samples whose start fails run from the image).
- Repeats: only attacks with randomness (PGD/Adam-PGD random start) are repeated; the others are
  deterministic given the input, so their repeats would reproduce the same adversarials and are run
  once (the paper ran every setting five times).
- Determinism: each batch of each run seeds torch's global generator (foolbox's random starts draw
  from it) inside `torch.random.fork_rng` with a seed of (seed, setting, repeat, batch), so the
  caller's RNG state is restored, a given seed gives the same result on the CPU, and no batch
  depends on the batches before it.

Resuming
--------
With a `checkpoint` (training.Checkpoint: load / save bytes; the AttackResult table passes
checkpoints.StoreCheckpoint, next to the classifiers' training checkpoints) `run_attack` saves its
progress after a finished batch, at most every `checkpoint_interval` seconds: the finished runs'
distances and iterations, the current run's so far, the counters and the elapsed time
(`AttackProgress`, numpy's npz format, no pickle). Run again after a crash with the same attack,
settings, seed, batch size and images, it continues after the last saved batch; since every batch
is seeded on its own, the outcome is the one an uninterrupted run gives (`seconds` is the sum over
the attempts; `resumed_batches` counts the batches taken from the checkpoint). A checkpoint of
another run is ignored, and said so. The caller removes the checkpoint once the result is stored.
"""
from __future__ import annotations

import hashlib
import io
import json
import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .queries import QueryCounter
from .recipes import recipe
from .scores import NORMS, as_numpy, budget_points, distances, reduce_runs
from .specs import ATTACKS, PGD, STARTED_FAMILIES, SPARSE_FAMILIES, AttackOptions, AttackSpec, parse_grid
from ..common.modes import eval_mode
from ..common.runtime import resolve_device, torch_threads
from ..common.serialization import jsonable
from ..common.training import Checkpoint, read_checkpoint

Array = Union[np.ndarray, torch.Tensor]


class AttackError(RuntimeError):
    """An attack cannot be run or returned something unusable (the message says why)."""


# ---------------------------------------------------------------------------------------------
# the model and the re-check


class Logits(nn.Module):
    """The logits of a model whose forward may return a tuple (logits, ...)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def model_device(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: Array, batch_size: int = 256) -> np.ndarray:
    """argmax of the logits (int64 (N,)), in eval mode, batched; the model's mode is restored."""
    net = model if isinstance(model, Logits) else Logits(model)
    dev = model_device(net)
    x = torch.as_tensor(as_numpy(images) if not isinstance(images, torch.Tensor) else images).float()
    out = []
    with eval_mode(net):
        for i in range(0, len(x), batch_size):
            out.append(net(x[i:i + batch_size].to(dev)).argmax(dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def recheck(model: nn.Module, images: Array, labels: Array, adversarials: Array, success: Array) -> np.ndarray:
    """bool (N,): success AND the adversarial is finite, within [0, 1] and misclassified.

    `images` is unused beyond the shape check (kept so that callers pass what belongs together)."""
    adv = as_numpy(adversarials)
    ok = as_numpy(success).astype(bool).copy()
    y = as_numpy(labels).astype(np.int64)
    if adv.shape != as_numpy(images).shape or ok.shape != (len(adv),) or y.shape != (len(adv),):
        raise ValueError(f"recheck: shapes disagree: images {as_numpy(images).shape}, adversarials {adv.shape}, "
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
def seeded_generators(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global generator(s) seeded; the caller's state restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) % (2 ** 63))
        yield


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
    numpy_in = not isinstance(images, torch.Tensor)
    net = Logits(model) if not isinstance(model, Logits) else model
    dev = model_device(net)
    x = torch.as_tensor(as_numpy(images) if numpy_in else images, dtype=torch.float32).to(dev)
    y = torch.as_tensor(as_numpy(labels), dtype=torch.int64).to(dev)
    n = len(x)
    hi = np.broadcast_to(np.asarray(as_numpy(eps_hi), np.float64), (n,)).copy()
    if not (np.isfinite(hi).all() and (hi > 0).all()):
        raise ValueError("eps_hi must be finite and > 0")
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    lo = np.zeros(n)
    eps = np.full(n, np.inf)
    best = x.clone()
    clean_wrong = predict(net, x) != as_numpy(y)
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
    return eps, (best.cpu().numpy() if numpy_in else best)


# ---------------------------------------------------------------------------------------------
# running one attack


@dataclass
class AttackOutcome:
    """The result of one attack (over its grid and repeats) on N samples."""
    name: str
    norm: str                          # the attack's own norm (which decides "best")
    kind: str                          # "min" | "eps" (attack_specs.AttackOptions.kind)
    distances: dict                    # norm -> float64 (N,): the best adversarial's size; 0 / inf
    success: np.ndarray                # bool (N,): a re-checked adversarial (or clean-misclassified)
    clean_correct: np.ndarray          # bool (N,): correctly classified without attack
    params_tried: list                 # per run: {"params", "repeat", "seed", "successes", "rejected", "iterations", "seconds"}
    seconds: float                     # wall time, summed over resumed attempts
    rejected: int = 0                  # claimed successes that failed the re-check, over all runs
    best_run: Optional[np.ndarray] = None   # int (N,): index into params_tried of the kept adversarial (-1: none)
    device: str = "cpu"
    budgets: list = field(default_factory=list)        # query budgets (iterations per run), ascending
    budget_distances: Optional[np.ndarray] = None      # (len(budgets), N, 4): the kept adversarial among the runs
                                                       # that used <= budget iterations (NORMS order; 0 / inf as above)
    resumed_batches: int = 0                           # batches taken from a checkpoint, not attacked in this call
    runs_used: Optional[np.ndarray] = None             # int64 (R, N): iterations each sample used in each run
                                                       # (params_tried order; its records hold the run's query counts)

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


def _attack_batch(spec: AttackSpec, options: AttackOptions, fmodel, net: nn.Module, x: torch.Tensor,
                  y: torch.Tensor, seed: int, dev: torch.device) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(adversarials, claimed success, iterations used per sample) of one run of `spec` on one batch
    (all clean-correct). Iterations: the early-stopping attacks of compute/evaluation/sparse_attacks.py report
    each sample's; every other attack counts its `steps` for every sample."""
    steps = np.full(len(x), int(options.steps), np.int64)
    if isinstance(options, SPARSE_FAMILIES):
        with seeded_generators(seed, dev):
            adv, ok, its = spec.build(options).run(net, x, y)
        return adv, as_numpy(ok).astype(bool), as_numpy(its).astype(np.int64)
    adv, claimed = _foolbox_batch(spec, options, fmodel, net, x, y, seed, dev)
    return adv, claimed, steps


def _foolbox_batch(spec: AttackSpec, options: AttackOptions, fmodel, net: nn.Module, x: torch.Tensor,
                   y: torch.Tensor, seed: int, dev: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """(adversarials, claimed success) of one run of a foolbox attack on one batch."""
    import eagerpy as ep
    import foolbox as fb
    crit = fb.Misclassification(y)
    with seeded_generators(seed, dev):
        if isinstance(options, PGD):
            attack = spec.build(options)

            def attack_fn(xb, yb, eps):
                e = ep.astensor(eps.to(xb.dtype).reshape((-1,) + (1,) * (xb.ndim - 1)))
                return attack.run(fmodel, xb, fb.Misclassification(yb), epsilon=e)

            eps, adv = minimal_epsilon_search(net, x, y, attack_fn, float(options.eps_hi), int(options.search_steps))
            return adv, np.isfinite(eps)
        if isinstance(options, STARTED_FAMILIES) and (options.requires_start or options.init):
            init = ATTACKS[options.init or "ddn-l2"]         # the parser admits foolbox attacks only
            start, claimed = _foolbox_batch(init, init.options({"steps": int(options.init_steps)}), fmodel, net,
                                            x, y, seed + 1, dev)
            ok = recheck(net, x, y, start, claimed)
            adv = x.clone()
            attack = spec.build(options)
            if ok.any():
                t = torch.as_tensor(np.flatnonzero(ok), device=dev)
                # an eagerpy tensor: FMN (unlike BB) does not convert raw starting points itself
                adv[t] = attack.run(fmodel, x[t], fb.Misclassification(y[t]),
                                    starting_points=ep.astensor(start[t].to(dev)))
            if options.requires_start or ok.all():
                return adv, ok                 # BB: samples without a start are failures
            t = torch.as_tensor(np.flatnonzero(~ok), device=dev)    # FMN: the others from the image
            adv[t] = attack.run(fmodel, x[t], fb.Misclassification(y[t]))
            return adv, np.ones(len(x), bool)  # claims; run_attack's re-check decides
        attack = spec.build(options)
        _, clipped, success = attack(fmodel, x, crit, epsilons=None)
        return clipped, as_numpy(success).astype(bool)


# ---------------------------------------------------------------------------------------------
# resumable progress


@dataclass
class AttackProgress:
    """What `run_attack` has done so far (see the module docstring, "Resuming"): `runs_d` (R, n, 4)
    and `runs_used` (R, n) of the R finished runs, `tried` their records; the current run (index R)
    up to batch `next_batch` (its distances `d_run` (n, 4), iterations `used` (n,), counters and
    seconds so far); the rejected claims and seconds over all runs; `identity` the run it belongs to."""
    identity: str
    runs_d: np.ndarray
    runs_used: np.ndarray
    tried: list
    next_batch: int
    d_run: np.ndarray
    used: np.ndarray
    run_success: int
    run_rejected: int
    run_seconds: float
    rejected: int
    seconds: float
    batches: int = 0                   # batches attacked so far (over all runs)
    run_forward: int = 0               # model queries of the current run so far: forward rows
    run_gradient: int = 0              # ... and gradient rows (compute/evaluation/queries.py)

    SCALARS = ("next_batch", "run_success", "run_rejected", "run_seconds", "rejected", "seconds", "batches",
               "run_forward", "run_gradient")

    def to_bytes(self) -> bytes:
        meta = {"identity": self.identity, "tried": jsonable(self.tried),
                **{k: getattr(self, k) for k in self.SCALARS}}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), runs_d=self.runs_d, runs_used=self.runs_used,
                 d_run=self.d_run, used=self.used)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "AttackProgress":
        with np.load(io.BytesIO(blob), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in ("runs_d", "runs_used", "d_run", "used")}
        return cls(identity=meta["identity"], tried=meta["tried"], **arrays,
                   **{k: meta[k] for k in cls.SCALARS if k in meta})      # older checkpoints: no query counts


def _identity(name: str, options: list, n_rep: int, seed: int, batch_size: int, x: np.ndarray,
              y: np.ndarray) -> str:
    """What a saved progress must match to be resumed: attack, settings, repeats, seed, batch size,
    and the images and labels (md5)."""
    return json.dumps(jsonable({"attack": name, "settings": [o.as_dict() for o in options], "repeats": n_rep,
                                "seed": int(seed), "batch_size": int(batch_size),
                                "images": hashlib.md5(np.ascontiguousarray(x).tobytes()).hexdigest(),
                                "labels": hashlib.md5(np.ascontiguousarray(y).tobytes()).hexdigest()}),
                      sort_keys=True)


def _resume(checkpoint: Optional[Checkpoint], identity: str, n: int,
            say: Callable[[str], None]) -> Optional[AttackProgress]:
    progress = read_checkpoint(checkpoint, AttackProgress.from_bytes, say, "attacking from the start")
    if progress is None:
        return None
    if progress.identity != identity or progress.d_run.shape != (n, len(NORMS)):
        say("ignoring an attack checkpoint of another attack, setting, seed or sample set; starting over")
        return None
    return progress


# ---------------------------------------------------------------------------------------------
# running one attack


def run_attack(model: nn.Module, images: Array, labels: Array, name: str, *,
               grid: Union[None, dict, Sequence[dict]] = None, repeats: int = 1, seed: int = 0,
               batch_size: int = 128, device=None, progress: Optional[Callable[[str], None]] = None,
               checkpoint: Optional[Checkpoint] = None, checkpoint_interval: float = 60.0) -> AttackOutcome:
    """Attack `name` (a key of ATTACKS) on images (N, C, H, W) or (N, H, W) in [0, 1] with int labels
    (N,): every setting of `grid` (default: the attack's own grid; dict of lists or list of dicts,
    each completed by the attack's defaults, parsed by attack_specs.parse_grid) x `repeats` seeds
    (randomized attacks only), in batches of `batch_size`; per sample the re-checked adversarial
    smallest in the attack's own norm is kept. The model (ClassifierNet or any module returning
    logits or (logits, ...)) is moved to `device` (default: cuda if available) and evaluated in eval
    mode; its mode is restored afterwards. With a `checkpoint`, progress is saved after finished
    batches (at most every `checkpoint_interval` s) and a saved progress of the same run is resumed
    (module docstring, "Resuming")."""
    import foolbox as fb
    t0 = time.perf_counter()
    say = progress or (lambda message: None)
    spec, settings = parse_grid(name, grid)
    n_rep = max(1, int(repeats)) if spec.stochastic else 1
    x_np = as_numpy(images).astype(np.float32)
    if x_np.ndim == 3:
        x_np = x_np[:, None]
    y_np = as_numpy(labels).astype(np.int64)
    if x_np.ndim != 4 or y_np.shape != (len(x_np),):
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W) with labels (N,); got {x_np.shape}, {y_np.shape}")
    if not np.isfinite(x_np).all() or (len(x_np) and (x_np.min() < 0 or x_np.max() > 1)):
        raise ValueError("images must be finite and within the bounds [0, 1]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    n = len(x_np)
    net = Logits(model)
    original_device = model_device(net)
    runs = [(k_set, rep) for k_set in range(len(settings)) for rep in range(n_rep)]
    identity = _identity(name, settings, n_rep, seed, batch_size, x_np, y_np)
    state = _resume(checkpoint, identity, n, say)
    resumed_batches = state.batches if state is not None else 0
    if state is None:
        state = AttackProgress(identity, np.full((0, n, len(NORMS)), np.inf), np.zeros((0, n), np.int64), [], 0,
                               np.full((n, len(NORMS)), np.inf), np.zeros(n, np.int64), 0, 0, 0.0, 0, 0.0)
    else:
        say(f"{name}: resuming after {len(state.tried)} of {len(runs)} run(s) and {state.next_batch} batch(es) "
            f"of the next, from the checkpoint")
    elapsed_before = state.seconds
    last_save = time.perf_counter()
    with torch_threads(dev), eval_mode(net):
        net.to(dev)
        try:
            # the attack's own calls go through the counter (every row of a forward pass and of a gradient
            # to the input: compute/evaluation/queries.py); the clean predictions and the re-check do not
            counted = QueryCounter(net).eval()           # net is in eval mode already (eval_mode)
            fmodel = fb.PyTorchModel(counted, bounds=(0, 1), device=dev)
            clean_correct = predict(net, x_np) == y_np
            targets = np.flatnonzero(clean_correct)
            starts = list(range(0, len(targets), batch_size))
            say(f"{name}: {len(settings)} setting(s) x {n_rep} repeat(s) on {len(targets)} of {n} samples "
                f"({n - len(targets)} misclassified without attack) on {dev}")
            for r in range(len(state.tried), len(runs)):
                k_set, rep = runs[r]
                options = settings[k_set]
                t_run = time.perf_counter() - state.run_seconds
                for b in range(state.next_batch, len(starts)):
                    idx = targets[starts[b]:starts[b] + batch_size]
                    xb = torch.as_tensor(x_np[idx], device=dev)
                    yb = torch.as_tensor(y_np[idx], device=dev)
                    counted.reset()
                    adv, claimed, its = _attack_batch(spec, options, fmodel, counted, xb, yb,
                                                      _run_seed(seed, k_set, rep, b), dev)
                    state.run_forward += counted.forward_rows
                    state.run_gradient += counted.gradient_rows
                    adv_np = as_numpy(adv).astype(np.float32)
                    ok = recheck(net, x_np[idx], y_np[idx], adv_np, claimed)
                    state.run_rejected += int((claimed & ~ok).sum())
                    state.run_success += int(ok.sum())
                    state.used[idx] = its
                    if ok.any():
                        d = distances(x_np[idx][ok], adv_np[ok])
                        state.d_run[idx[ok]] = np.stack([d[k] for k in NORMS], axis=1)
                    state.next_batch, state.batches = b + 1, state.batches + 1
                    if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_interval:
                        now = time.perf_counter()
                        state.run_seconds, state.seconds = now - t_run, elapsed_before + now - t0
                        checkpoint.save(state.to_bytes())
                        last_save = time.perf_counter()
                run_seconds = time.perf_counter() - t_run
                state.rejected += state.run_rejected
                state.runs_d = np.concatenate([state.runs_d, state.d_run[None]])
                state.runs_used = np.concatenate([state.runs_used, state.used[None]])
                state.tried.append({"params": options.as_dict(), "repeat": rep, "seed": _run_seed(seed, k_set, rep, 0),
                                    "successes": state.run_success, "rejected": state.run_rejected,
                                    "iterations": int(state.used[targets].sum()), "seconds": run_seconds,
                                    "steps": int(options.steps), "attacked": int(len(targets)),
                                    "forward_rows": int(state.run_forward), "gradient_rows": int(state.run_gradient)})
                say(f"{name} {options.as_dict()} repeat {rep + 1}/{n_rep}: {state.run_success}/{len(targets)} fooled"
                    + (f", {state.run_rejected} claims rejected by the re-check" if state.run_rejected else "")
                    + f" ({run_seconds:.1f} s)")
                state.next_batch, state.run_success, state.run_rejected, state.run_seconds = 0, 0, 0, 0.0
                state.run_forward = state.run_gradient = 0
                state.d_run = np.full((n, len(NORMS)), np.inf)
                state.used = np.zeros(n, np.int64)
        finally:
            net.to(original_device)
    runs_d, runs_used = state.runs_d, state.runs_used
    if np.isnan(runs_d).any():
        raise AttackError(f"{name}: NaN distances")
    select = (spec.norm,) + tuple(spec.select)
    final, best_run = reduce_runs(runs_d, runs_used, spec.norm, select)
    final[~clean_correct] = 0.0
    best = {k: final[:, i] for i, k in enumerate(NORMS)}
    budgets = budget_points([int(o.steps) for o in settings])
    per_budget = np.stack([reduce_runs(runs_d, runs_used, spec.norm, select, budget=b)[0] for b in budgets]) \
        if budgets else np.zeros((0, n, len(NORMS)))
    per_budget[:, ~clean_correct] = 0.0
    success = np.isfinite(best[spec.norm])
    return AttackOutcome(name=name, norm=spec.norm, kind=spec.kind, distances=best, success=success,
                         clean_correct=clean_correct, params_tried=state.tried,
                         seconds=elapsed_before + time.perf_counter() - t0, rejected=state.rejected,
                         best_run=best_run, device=str(dev), budgets=budgets, budget_distances=per_budget,
                         resumed_batches=resumed_batches, runs_used=np.asarray(runs_used, np.int64))


def run_recipe(model: nn.Module, images: Array, labels: Array, name: str = "demo", *, seed: int = 0,
               device=None, attacks: Optional[Sequence[str]] = None,
               progress: Optional[Callable[[str], None]] = None) -> dict[str, AttackOutcome]:
    """Every attack of attack_recipes.RECIPES[name] (or the subset `attacks`) with the recipe's grids,
    repeats and batch size, on the first n_samples images given. Returns {attack: AttackOutcome}."""
    r = recipe(name)
    n = min(len(images), r["n_samples"])
    out = {}
    for a in (attacks or r["attacks"]):
        out[a] = run_attack(model, as_numpy(images)[:n], as_numpy(labels)[:n], a, grid=r["grids"][a], repeats=r["repeats"],
                            seed=seed, batch_size=r["batch_size"], device=device, progress=progress)
    return out


__all__ = ["ATTACKS", "AttackError", "AttackOutcome", "AttackProgress", "minimal_epsilon_search", "predict",
           "recheck", "recipe", "run_attack", "run_recipe"]
