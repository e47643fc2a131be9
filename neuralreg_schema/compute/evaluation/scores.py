"""Sizes of adversarial perturbations and the robustness scores made of them (Li et al. 2019, Figs. 5
and 7; RobustBench's budgets). numpy only (a torch tensor is accepted where an array is): never
imports torch or datajoint, so the schema modules and the report use it cheaply.

    distances               per sample, the size of x_adv - x in L0, L1, L2 and Linf (NORMS order)
    reduce_runs             per sample, the adversarial kept over an attack's runs (own norm, `select`
                            norms on their own), optionally within a query budget
    budget_points           the query budgets at which an attack's outcome is recorded
    minimal_over_attacks    per norm and sample, the minimum over attacks (the paper's score)
    budget_curve            the same at every query budget (Fig. 5's curve)
    distance_statistics     median, mean and SEM, with the clean errors as 0 and without them
    robust_accuracy         the fraction of samples not fooled within a budget

L0 counts the elements of (C, H, W) (pixels for grayscale images) whose value changed by more than
L0_THRESHOLD = 1e-6: float32 values in [0, 1] have a resolution of 6e-8 near 1, so clipping and
round-off do not count as changes, while any deliberate change (foolbox's L0 attacks move a pixel
by far more) does. Distances are 0 for a sample misclassified without attack and +inf for one no
attack fooled; a NaN distance is refused everywhere, so it can never become a robustness score.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

NORMS = ("l0", "l1", "l2", "linf")
L0_THRESHOLD = 1e-6
Array = Any                       # a numpy array or a torch tensor


def as_numpy(a: Array) -> np.ndarray:
    """A numpy array of `a` (a torch tensor is detached and copied to the CPU)."""
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def distances(x: Array, x_adv: Array) -> dict[str, np.ndarray]:
    """Per sample (first axis), the size of x_adv - x in L0, L1, L2 and Linf (float64 (N,) each).

    L0 counts elements whose change exceeds L0_THRESHOLD. Raises ValueError on shape mismatch or
    non-finite values (NaN distances are refused)."""
    a, b = as_numpy(x).astype(np.float64), as_numpy(x_adv).astype(np.float64)
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


def minimal_over_attacks(outcomes: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per norm and sample, the minimum over the outcomes' distances (every attack's best adversarial
    counts in every norm): float64 (N,) per norm. An outcome is an attacks.AttackOutcome or any object
    with `name`, `success` and `distances`. Raises ValueError for no outcomes,
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
    d = np.asarray(as_numpy(d), np.float64).ravel()
    ok = np.asarray(as_numpy(clean_correct), bool).ravel()
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
    d = np.asarray(as_numpy(d), np.float64).ravel()
    if np.isnan(d).any():
        raise ValueError("robust_accuracy: NaN distances")
    return float((d > float(epsilon)).mean()) if len(d) else float("nan")


def budget_curve(per_attack: Sequence[tuple[Sequence[int], Array]]) -> tuple[list[int], np.ndarray]:
    """The minimal perturbation as a function of the query budget, over attacks: per_attack holds, per
    attack, (its budgets ascending, distances (len(budgets), n, ...) at them). At budget B an attack
    contributes its distances at its largest budget <= B (none below its smallest: inf). Returns (the
    union of the budgets, (len(union), n, ...) the per-sample minimum over attacks at each)."""
    per_attack = [(list(map(int, b)), np.asarray(as_numpy(d), np.float64)) for b, d in per_attack]
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


def run_queries(run: dict, budget: Optional[int] = None) -> float:
    """Model queries per attacked sample (forward rows + gradient rows, compute/evaluation/queries.py)
    of one run, or of the same run limited to `budget` iterations. `run`: steps (nominal iterations),
    early_stopping (bool), attacked (samples), forward_rows, gradient_rows, used (iterations per
    attacked sample). A fixed-step run (every sample ran `steps`) costs its measured queries at a
    budget >= steps and nothing below (it is not run: reduce_runs leaves it out). An early-stopping run
    (JSMA, SparseFool) limited to B iterations is costed by the proportional model: its measured
    queries x sum_i min(used_i, B) / sum_i used_i, i.e. a constant cost per sample-iteration (exact
    at B >= max used; an approximation below, named so in docs/robustness.md)."""
    attacked = int(run["attacked"])
    if attacked <= 0:
        return 0.0
    total = (int(run["forward_rows"]) + int(run["gradient_rows"])) / attacked
    if budget is None:
        return float(total)
    if not run["early_stopping"]:
        return float(total) if int(run["steps"]) <= int(budget) else 0.0
    used = np.asarray(run["used"], np.float64)
    if not len(used) or used.sum() <= 0:
        return float(total)
    return float(total * np.minimum(used, int(budget)).sum() / used.sum())


def budget_queries(per_attack: Sequence[tuple[Sequence[int], Sequence[dict]]], union: Sequence[int]) -> np.ndarray:
    """Model queries per sample of a whole suite at each budget of `union` (budget_curve's): per
    attack (its budgets ascending, its runs as run_queries takes them), the queries of its runs limited
    to its largest budget <= B (the budget whose distances budget_curve uses at B; none below its
    smallest), summed over attacks. float64 (len(union),)."""
    out = np.zeros(len(union))
    for budgets, runs in per_attack:
        budgets = [int(b) for b in budgets]
        for i, b in enumerate(union):
            j = np.searchsorted(budgets, int(b), side="right") - 1
            if j >= 0:
                out[i] += sum(run_queries(r, budgets[j]) for r in runs)
    return out


__all__ = ["BUDGET_SERIES", "L0_THRESHOLD", "NORMS", "ROBUSTBENCH_BUDGETS", "as_numpy", "budget_curve",
           "budget_points", "budget_queries", "run_queries", "distance_statistics", "distances", "minimal_over_attacks", "reduce_runs",
           "robust_accuracy"]
