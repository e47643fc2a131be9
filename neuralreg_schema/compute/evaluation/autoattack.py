"""AutoAttack (Croce & Hein, ICML 2020) robust accuracy at a ladder of budgets of one norm, with the
`pyautoattack` package (PyPI, MIT: the reference implementation github.com/fra31/auto-attack with its
attack files unchanged, docs/robustness.md). Pure numpy/PyTorch: arrays and a model in, per-sample
results out; never imports datajoint.

    RECIPES            named settings (budgets per norm, samples, batch size) the plans use
    run_autoattack     robust accuracy of a model at each budget of one norm (resumable)
    AutoAttackOutcome  what it returns

Protocol
--------
- The model runs in eval mode on images (N, C, H, W) (or (N, H, W)) in [0, 1], the same tensors the
  other attacks get (grayscale: one channel); a forward returning (logits, ...) is reduced to the
  logits. AutoAttack's 'standard' version: APGD-CE, APGD-T (9 target classes), FAB-T (9 target
  classes) and Square (5000 queries), Linf or L2. With fewer than 10 classes the targeted attacks
  use every other class (n_classes - 1 targets).
- Samples the model misclassifies without attack are not robust at any budget (not attacked).
- Nested budgets: the budgets of one norm are run in ascending order. A sample fooled at a smaller
  epsilon is fooled at every larger one, because its adversarial lies inside every larger ball and is
  misclassified; so each budget attacks only the samples still robust at the budget below it, and
  a sample fooled earlier is carried forward after checking its adversarial's distance is within
  the larger epsilon (it is, by construction: the check guards the bookkeeping). The robust
  accuracy is the same as attacking every sample at every budget, up to AutoAttack's own randomness
  (it may miss at a larger budget an adversarial it found at a smaller one; carrying it forward
  only makes the estimate tighter).
- Every adversarial AutoAttack returns for a sample it reports fooled is re-checked: finite, within
  [0, 1], within the budget (norm <= eps + EPS_TOLERANCE, float32 round-off) and misclassified by the
  model. A claim that fails the re-check counts as robust and is counted in `rejected`.
- Determinism: each chunk of `batch_size` samples at each budget runs AutoAttack with the seed
  (seed, budget index, chunk index) inside torch.random.fork_rng, so the caller's RNG is restored
  and no chunk depends on the ones before it.

Resuming
--------
With a `checkpoint` (compute/common/training.Checkpoint) the progress (robust flags, distances, the
budget and chunk reached, counters, seconds) is saved after finished chunks, at most every
`checkpoint_interval` seconds (numpy's npz format, no pickle); run again with the same settings and
images, it continues after the last saved chunk and gives the result of an uninterrupted run. A
checkpoint of another run is ignored, and said so. The caller removes it once the result is stored.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .attacks import Logits, model_device, seeded_generators, predict
from .scores import as_numpy, distances
from ..common.modes import eval_mode
from ..common.runtime import resolve_device, torch_threads
from ..common.training import Checkpoint, read_checkpoint

NORMS = ("linf", "l2")
AA_NORM = {"linf": "Linf", "l2": "L2"}                     # pyautoattack's names
# the budgets (RobustBench's CIFAR-10 threat models are Linf 8/255 and L2 0.5)
EPSILONS = {"linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255), "l2": (0.1, 0.25, 0.5)}
EPS_TOLERANCE = 1e-6          # (pixels in [0, 1]) float32 round-off allowed beyond the budget in the re-check
VERSIONS = ("standard",)

# named settings: samples attacked (the first n of the same seeded permutation the attack suites use, so
# a suite's samples are among them when n is at least the suite's) and samples per AutoAttack call
RECIPES = {
    "paper": {"n_samples": 1000, "batch_size": 250, "note": "the paper suite's 1000 samples"},
    "demo": {"n_samples": 200, "batch_size": 100, "note": "200 samples: CPU-sized, covers the demo suite's 64"},
    "tiny": {"n_samples": 8, "batch_size": 8, "note": "tests: the tiny suite's 8 samples"},
}


def recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown AutoAttack recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def check_settings(norm: str, epsilons: Sequence[float], version: str = "standard") -> list[float]:
    """The budgets as floats, ascending and > 0, for a known norm and version; else ValueError."""
    if norm not in NORMS:
        raise ValueError(f"AutoAttack norm {norm!r}: choose one of {', '.join(NORMS)}")
    if version not in VERSIONS:
        raise ValueError(f"AutoAttack version {version!r}: only {', '.join(VERSIONS)} is supported")
    eps = [float(e) for e in epsilons]
    if not eps or any(not np.isfinite(e) or e <= 0 for e in eps) or eps != sorted(set(eps)):
        raise ValueError(f"AutoAttack budgets {list(epsilons)!r}: finite, > 0, strictly ascending")
    return eps


@dataclass
class AutoAttackOutcome:
    norm: str
    epsilons: list
    clean_correct: np.ndarray          # bool (n,)
    robust: np.ndarray                 # bool (n_eps, n): not fooled at that budget (clean errors: False)
    distance: np.ndarray               # float64 (n,): own-norm size of the adversarial kept; 0 clean error, inf never fooled
    attacked: list                     # per budget, samples AutoAttack was run on (the rest: clean errors or carried)
    rejected: int                      # claimed adversarials that failed the re-check
    seconds: float                     # summed over resumed runs
    resumed_chunks: int = 0            # chunks taken from a checkpoint

    @property
    def robust_accuracy(self) -> np.ndarray:
        return self.robust.mean(axis=1) if self.robust.shape[1] else np.zeros(len(self.epsilons))


@dataclass
class _Progress:
    identity: str
    robust: np.ndarray
    distance: np.ndarray
    attacked: np.ndarray               # int64 (n_eps,)
    level: int                         # the budget being run
    next_chunk: int                    # its next chunk
    rejected: int
    seconds: float
    chunks: int = 0

    SCALARS = ("level", "next_chunk", "rejected", "seconds", "chunks")

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = {"identity": self.identity, **{k: getattr(self, k) for k in self.SCALARS}}
        np.savez(buffer, meta=np.array(json.dumps(meta)), robust=self.robust, distance=self.distance,
                 attacked=self.attacked)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "_Progress":
        with np.load(io.BytesIO(blob), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in ("robust", "distance", "attacked")}
        return cls(identity=meta["identity"], **arrays, **{k: meta[k] for k in cls.SCALARS})


def _identity(norm, eps, version, seed, batch_size, x, y) -> str:
    return json.dumps({"norm": norm, "epsilons": eps, "version": version, "seed": int(seed),
                       "batch_size": int(batch_size),
                       "images": hashlib.md5(np.ascontiguousarray(x).tobytes()).hexdigest(),
                       "labels": hashlib.md5(np.ascontiguousarray(y).tobytes()).hexdigest()}, sort_keys=True)


def _chunk_seed(seed: int, level: int, chunk: int) -> int:
    return int(hashlib.md5(f"autoattack:{seed}:{level}:{chunk}".encode()).hexdigest()[:8], 16)


def _autoattack(net, norm: str, eps: float, version: str, seed: int, n_classes: int, device):
    from pyautoattack import AutoAttack
    aa = AutoAttack(net, norm=AA_NORM[norm], eps=float(eps), version=version, seed=int(seed), device=device)
    if n_classes < 10:                 # the standard version targets the 9 most likely other classes
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = max(1, n_classes - 1)
    return aa


def run_autoattack(model: torch.nn.Module, images, labels, norm: str, epsilons: Sequence[float] | None = None, *,
                   version: str = "standard", seed: int = 0, batch_size: int = 250, device=None,
                   progress: Optional[Callable[[str], None]] = None, checkpoint: Optional[Checkpoint] = None,
                   checkpoint_interval: float = 60.0) -> AutoAttackOutcome:
    """AutoAttack `version` in `norm` ('linf' or 'l2') at each of `epsilons` (default EPSILONS[norm]) on
    images (N, C, H, W) or (N, H, W) in [0, 1] with int labels (N,), the nested budgets attacking only
    the samples still robust (module docstring). Resumable with a `checkpoint`."""
    t0 = time.perf_counter()
    say = progress or (lambda message: None)
    eps = check_settings(norm, EPSILONS.get(norm, ()) if epsilons is None else epsilons, version)
    x_np = as_numpy(images).astype(np.float32)
    if x_np.ndim == 3:
        x_np = x_np[:, None]
    y_np = as_numpy(labels).astype(np.int64)
    if x_np.ndim != 4 or y_np.shape != (len(x_np),):
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W) with labels (N,); got {x_np.shape}, {y_np.shape}")
    if not np.isfinite(x_np).all() or (len(x_np) and (x_np.min() < 0 or x_np.max() > 1)):
        raise ValueError("images must be finite and within [0, 1]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    n = len(x_np)
    identity = _identity(norm, eps, version, seed, batch_size, x_np, y_np)
    state = read_checkpoint(checkpoint, _Progress.from_bytes, say, "attacking from the start")
    if state is not None and (state.identity != identity or state.robust.shape != (len(eps), n)):
        say("ignoring an AutoAttack checkpoint of another run (settings or samples); starting over")
        state = None
    resumed = state.chunks if state is not None else 0
    net = Logits(model)
    original_device = model_device(net)
    with torch_threads(dev), eval_mode(net):
        net.to(dev)
        try:
            clean_correct = predict(net, x_np) == y_np
            n_classes = int(net(torch.as_tensor(x_np[:1], device=dev)).shape[1]) if n else 10
            if state is None:
                state = _Progress(identity, np.zeros((len(eps), n), bool), np.where(clean_correct, np.inf, 0.0),
                                  np.zeros(len(eps), np.int64), 0, 0, 0, 0.0)
            else:
                say(f"AutoAttack {norm}: resuming at budget {state.level + 1}/{len(eps)}, chunk {state.next_chunk}")
            before = state.seconds
            last_save = time.perf_counter()
            for level in range(state.level, len(eps)):
                e = eps[level]
                below = clean_correct if level == 0 else state.robust[level - 1]
                if state.next_chunk == 0:
                    # carried forward: fooled below, with an adversarial inside this (larger) ball
                    fooled_before = clean_correct & ~below
                    if (state.distance[fooled_before] > e + EPS_TOLERANCE).any():
                        raise RuntimeError("AutoAttack: an adversarial carried forward lies outside the larger budget")
                    state.robust[level] = below
                targets = np.flatnonzero(below)
                starts = list(range(0, len(targets), batch_size))
                for c in range(state.next_chunk, len(starts)):
                    idx = targets[starts[c]:starts[c] + batch_size]
                    xb = torch.as_tensor(x_np[idx], device=dev)
                    yb = torch.as_tensor(y_np[idx], device=dev)
                    with seeded_generators(_chunk_seed(seed, level, c), dev):
                        aa = _autoattack(net, norm, e, version, _chunk_seed(seed, level, c), n_classes, dev)
                        adv, y_adv = aa.run_standard_evaluation(xb, yb, batch_size=len(idx))
                    adv_np = as_numpy(adv).astype(np.float32)
                    claimed = as_numpy(y_adv) != y_np[idx]
                    ok = claimed & np.isfinite(adv_np.reshape(len(idx), -1)).all(axis=1)
                    flat = np.nan_to_num(adv_np.reshape(len(idx), -1), nan=-1.0)
                    ok &= (flat >= 0).all(axis=1) & (flat <= 1).all(axis=1)
                    size = np.full(len(idx), np.inf)
                    if ok.any():
                        size[ok] = distances(x_np[idx][ok], adv_np[ok])[norm]
                    ok &= size <= e + EPS_TOLERANCE
                    if ok.any():
                        ok[ok] = predict(net, adv_np[ok]) != y_np[idx][ok]
                    state.rejected += int((claimed & ~ok).sum())
                    state.robust[level, idx[ok]] = False
                    state.distance[idx[ok]] = size[ok]
                    state.attacked[level] += len(idx)
                    state.next_chunk, state.chunks = c + 1, state.chunks + 1
                    if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_interval:
                        state.seconds = before + time.perf_counter() - t0
                        checkpoint.save(state.to_bytes())
                        last_save = time.perf_counter()
                say(f"AutoAttack {norm} eps {e:.5g}: robust {int(state.robust[level].sum())}/{n} "
                    f"({int(state.attacked[level])} attacked, {time.perf_counter() - t0:.1f} s)")
                state.level, state.next_chunk = level + 1, 0
        finally:
            net.to(original_device)
    return AutoAttackOutcome(norm=norm, epsilons=eps, clean_correct=clean_correct, robust=state.robust.copy(),
                             distance=state.distance.copy(), attacked=[int(a) for a in state.attacked],
                             rejected=int(state.rejected), seconds=before + time.perf_counter() - t0,
                             resumed_chunks=resumed)


def missed_by_minimal(fooled_at: np.ndarray, epsilons: Sequence[float], minimal: np.ndarray,
                      clean_correct: np.ndarray) -> int:
    """The cross-check: samples (clean-correct) AutoAttack fooled at some budget although their stored
    minimal adversarial distance (same norm) is larger than that budget (each one shows the
    minimal-perturbation search missed an adversarial; larger by more than EPS_TOLERANCE, the re-check's
    round-off allowance). fooled_at: per sample the index of the smallest budget that fooled it (-1: never)."""
    fooled_at = np.asarray(fooled_at, np.int64)
    eps = np.asarray(list(epsilons), np.float64)
    hit = (fooled_at >= 0) & np.asarray(clean_correct, bool)
    return int((np.asarray(minimal, np.float64)[hit] > eps[fooled_at[hit]] + EPS_TOLERANCE).sum())


def fooled_at(robust: np.ndarray, clean_correct: np.ndarray) -> np.ndarray:
    """Per sample the index of the smallest budget that fooled it (-1: never fooled, or a clean error)."""
    robust = np.asarray(robust, bool)
    fooled = ~robust & np.asarray(clean_correct, bool)[None]
    return np.where(fooled.any(axis=0), fooled.argmax(axis=0), -1)


__all__ = ["AA_NORM", "EPSILONS", "EPS_TOLERANCE", "NORMS", "RECIPES", "AutoAttackOutcome", "check_settings",
           "fooled_at", "missed_by_minimal", "recipe", "run_autoattack"]
