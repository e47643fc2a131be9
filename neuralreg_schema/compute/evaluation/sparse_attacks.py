"""Sparse (L0 / L1) minimal-perturbation attacks that foolbox 3.3.4 lacks, written after their papers
in batched PyTorch: JSMA (Papernot et al. 2016, "The Limitations of Deep Learning in Adversarial
Settings", Algorithms 1 and 3) and SparseFool (Modas et al. 2019, "SparseFool: a few pixels make a
big difference", Algorithms 1 and 2). Both are in the supplement's attack list; the authors ran the
foolbox 2 versions, which foolbox 3 dropped.

Why here and not from a library (checked 2026-12 against torch 2.13 CPU, numpy 2.4): torchattacks
3.5.1 has both but requires torchvision and pins requests~=2.25.1 (a downgrade); advertorch 0.2.3
(last release 2020) has only a targeted JSMA and imports torchvision; adversarial-robustness-toolbox
1.20.1 installs cleanly (only six is added) but has no SparseFool, and its JSMA perturbs single
features in one direction only towards a random target, in numpy, one gradient call per sample.

Interface: `jsma(model, x, y, ...)` and `sparsefool(model, x, y, ...)` take a module returning logits,
images x (n, C, H, W) in [0, 1] on the model's device and labels y (n,), and return
(adversarials (n, C, H, W) within [0, 1], success bool (n,), iterations int64 (n,)). `iterations`
is the number of attack iterations a sample used (up to its success, or all of them): the query
budget at which its adversarial was found (JSMA: in the run towards the target whose adversarial
is kept; each target is a run from the clean image). Nothing here is trusted: compute/evaluation/attacks.run_attack
re-checks every adversarial (finite, in bounds, misclassified) like those of the foolbox attacks.
The model must be in eval mode (run_attack ensures it); samples are independent, so gradients of
batch sums are per-sample gradients.

JSMA. The paper's setting (Papernot et al. 2016, Sec. IV-V, on MNIST): the saliency map of
Algorithm 3 (pairs of features, alpha = dZ_t/dx > 0 and beta < 0, maximise -alpha beta) on the
forward derivative of the last layer before the softmax, theta = +1 (features increased to the
maximum; the paper also ran theta = -1, features decreased), maximum distortion gamma = 14.5 % of
the features, all pairs searched, targeted at each of the other classes. `direction='increase'`
('decrease'), theta 1, gamma 0.145, pool 0 and targets = classes - 1 is that setting made untargeted
(the smallest adversarial over the targets is kept): the `paper` recipe runs it
(compute/evaluation/recipes.py). Samples it never fools within gamma are failures (+inf); the
report gives their fraction and the mean over the fooled samples (docs/robustness.md).

The default (direction 'both') is untargeted and two-sided (deviations from the paper's targeted,
increase-only Algorithm 1):
- targets: the `targets` most likely wrong classes at the clean image, each attacked from the clean
  image; a sample stops as soon as it is misclassified as any class (the re-check's criterion), and
  per sample the adversarial with the fewest changed features (then the smallest L1) is kept.
- the forward derivative is that of the logits (the paper's F before the softmax; the softmax's
  derivatives sum to zero over classes, which makes beta = -alpha). alpha = dZ_t/dx,
  beta = sum_{j != t} dZ_j/dx (Algorithm 3).
- every feature may move up or down: each feature i offers two candidates (i, +1) and (i, -1) with
  alpha and beta multiplied by the sign; a pair of candidates on two different features is chosen by
  the paper's rule (alpha_p + alpha_q > 0, beta_p + beta_q < 0, maximise -(alpha sum)(beta sum)).
  When no pair satisfies both conditions, the pair with the largest (alpha sum - beta sum) is taken
  (the first-order increase of Z_t - sum_{j != t} Z_j), where the paper would stop.
- each chosen feature moves by theta (fraction of the [0, 1] range; the paper's theta = 1 saturates
  it), clipped to the bounds; once moved, its direction is fixed, and it leaves the search domain at
  its bound. At most ceil(gamma * D) distinct features may change (the paper's maximum distortion).
- `steps`: the maximum number of iterations (each changes two features).
- `pool`: the paper searches all pairs (4 D^2 with both directions: 4.2 million for a 32x32 image,
  about a second per sample-iteration on this CPU). With pool = k > 0 (default 64) the pairs are
  searched among at most 3k candidates per sample: the k with the largest alpha, the k with the most
  negative beta and the k with the largest alpha - beta; a pair scoring high by the paper's product
  needs a large alpha sum and a large negative beta sum, so it rarely lies outside. pool = 0: all
  pairs, as the paper.

SparseFool (as the authors' code): per iteration, DeepFool (L2, over the `candidates` most likely
classes, at most `df_steps` steps, overshoot 0.02 for its stopping check) from the current iterate
x_i gives r; the boundary point is x_B = x_i + lambda * r and the boundary normal the gradient of
Z_k - Z_y at x_i + r (k the class DeepFool reached; the closest class when it did not get there),
normalised. The L1 linear solver (Algorithm 1) then moves the coordinates of x_i in order of
decreasing |normal|, each to its bound or, for the last one, onto the hyperplane (+ 1e-3, and at
least 1e-4), towards the plane, until the point crosses it; the candidate adversarial is
x_0 + 1.02 (x_i - x_0), clipped. The loop ends when that is misclassified or after `steps`
iterations. The solver is batched in closed form: a sort, a cumulative sum of the coordinates'
capacities and one partial step reproduce the authors' coordinate-by-coordinate loop. Deviation: the
direction is towards the plane whatever the sign of the start (the authors' code moves along
sign(normal), the same when the start lies on the negative side, as it does after DeepFool).
"""
from __future__ import annotations

import math

import torch
from torch import nn

L1_BIAS = 1e-3          # SparseFool's linear solver: overshoot of the plane (its 'beta')
L1_MIN_STEP = 1e-4      # SparseFool's linear solver / DeepFool: smallest step
OVERSHOOT = 0.02        # SparseFool: x_0 + (1 + OVERSHOOT) (x_i - x_0); DeepFool's stopping check


def _logits_and_predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _grads(model: nn.Module, x: torch.Tensor, picks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """logits at x and, for each (n, K) tensor of class weights in `picks`, the gradient of
    sum_n (logits * weights).sum() w.r.t. x (per-sample gradients: samples are independent)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(xg)
        out = []
        for i, w in enumerate(picks):
            g, = torch.autograd.grad((z * w).sum(), xg, retain_graph=i < len(picks) - 1)
            out.append(g.detach())
    return z.detach(), out


# ---------------------------------------------------------------------------------------------
# JSMA


def _jsma_pairs(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor, d: int, pool: int = 0,
                chunk_elems: int = 1 << 24):
    """Per sample the best pair of candidates (indices into the 2D candidates: feature = c % d,
    sign = + for c < d). a, b, valid: (n, 2D). pool > 0: the pairs are searched among the pool
    candidates with the largest alpha, the pool with the most negative beta and the pool with the
    largest alpha - beta (per sample; 0: among all). Returns (c1, c2) int64 (n,) and ok bool (n,)
    (False: no valid pair of distinct features)."""
    n, m = a.shape
    if pool and 3 * int(pool) < m:
        k = int(pool)
        neg_inf = torch.tensor(float("-inf"), device=a.device, dtype=a.dtype)
        idx = torch.cat([torch.where(valid, crit, neg_inf).topk(k, dim=1).indices for crit in (a, -b, a - b)], 1)
        c1, c2, ok = _pair_search(a.gather(1, idx), b.gather(1, idx), valid.gather(1, idx), idx % d, chunk_elems)
        return idx.gather(1, c1[:, None])[:, 0], idx.gather(1, c2[:, None])[:, 0], ok
    feat = (torch.arange(m, device=a.device) % d).expand(n, m)
    return _pair_search(a, b, valid, feat, chunk_elems)


def _pair_search(a, b, valid, feat, chunk_elems):
    """The paper's pair rule (with the fallback) over all pairs of the given candidates; feat (n, m):
    each candidate's feature (pairs of one feature are excluded)."""
    n, m = a.shape
    c1 = torch.zeros(n, dtype=torch.long, device=a.device)
    c2 = torch.zeros_like(c1)
    ok = torch.zeros(n, dtype=torch.bool, device=a.device)
    per = max(1, chunk_elems // (m * m))
    neg_inf = torch.tensor(float("-inf"), device=a.device)
    for s in range(0, n, per):
        sl = slice(s, s + per)
        A = a[sl, :, None] + a[sl, None, :]
        B = b[sl, :, None] + b[sl, None, :]
        V = valid[sl, :, None] & valid[sl, None, :] & (feat[sl, :, None] != feat[sl, None, :])
        paper = V & (A > 0) & (B < 0)
        score = torch.where(paper, -A * B, neg_inf)
        fallback = torch.where(V, A - B, neg_inf)
        has_paper = paper.flatten(1).any(1)
        score = torch.where(has_paper[:, None, None], score, fallback)
        best = score.flatten(1).argmax(1)
        c1[sl], c2[sl] = best // m, best % m
        ok[sl] = V.flatten(1).any(1)
    return c1, c2, ok


DIRECTIONS = ("both", "increase", "decrease")


def _jsma_target(model, x, y, target, theta, max_changed, steps, d, pool, direction="both"):
    """One target for every sample: (adversarials, success, iterations)."""
    n = len(x)
    flat0 = x.reshape(n, d)
    xa = flat0.clone()
    up = xa < 1                        # candidate (i, +1) still open
    down = xa > 0                      # candidate (i, -1) still open
    changed = torch.zeros(n, d, dtype=torch.bool, device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    stopped = torch.zeros_like(success)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    for it in range(int(steps) + 1):
        active = torch.nonzero(~success & ~stopped).flatten()
        if not len(active):
            break
        xb = xa[active].reshape((len(active),) + x.shape[1:])
        with torch.no_grad():
            z = model(xb)
        ncls = z.shape[1]
        fooled = z.argmax(1) != y[active]
        success[active[fooled]] = True
        iterations[active[fooled]] = it
        if it == int(steps):
            break
        active = active[~fooled]
        if not len(active):
            break
        k = len(active)
        xb = xa[active].reshape((k,) + x.shape[1:])
        wt = nn.functional.one_hot(target[active], ncls).to(x.dtype)
        _, (g_t, g_all) = _grads(model, xb, [wt, torch.ones_like(wt)])
        alpha = g_t.reshape(k, d)
        beta = g_all.reshape(k, d) - alpha
        room = changed[active] | (changed[active].sum(1, keepdim=True) < max_changed)
        if direction == "both":
            a = torch.cat([alpha, -alpha], 1)
            b = torch.cat([beta, -beta], 1)
            valid = torch.cat([up[active] & room, down[active] & room], 1)
        elif direction == "increase":            # the paper's theta = +1: candidates (i, +1) only
            a, b, valid = alpha, beta, up[active] & room
        else:                                    # theta = -1: candidates (i, -1) only
            a, b, valid = -alpha, -beta, down[active] & room
        c1, c2, ok = _jsma_pairs(a, b, valid, d, pool)
        if direction == "decrease":              # candidate indices as in the two-sided layout
            c1, c2 = c1 + d, c2 + d
        stopped[active[~ok]] = True
        iterations[active[~ok]] = it
        act, c1, c2 = active[ok], c1[ok], c2[ok]
        for c in (c1, c2):
            f = c % d
            sign = torch.where(c < d, 1.0, -1.0).to(x.dtype)
            new = (xa[act, f] + sign * theta).clamp(0, 1)
            xa[act, f] = new
            changed[act, f] = True
            # the direction is fixed once moved; the feature leaves at its bound
            up[act, f] = (sign > 0) & (new < 1)
            down[act, f] = (sign < 0) & (new > 0)
    iterations[~success & ~stopped] = int(steps)
    return xa.reshape(x.shape), success, iterations


def jsma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, theta: float = 1.0, gamma: float = 0.1,
         steps: int = 100, targets: int = 1, pool: int = 64,
         direction: str = "both") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Untargeted JSMA (see the module docstring): (adversarials, success, iterations). direction:
    'both' (two-sided), 'increase' or 'decrease' (the paper's one-sided theta = +1 / -1)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"jsma: direction must be one of {DIRECTIONS}, got {direction!r}")
    if not 0 < float(theta) <= 1:
        raise ValueError(f"jsma: theta must be in (0, 1], got {theta}")
    if not 0 < float(gamma) <= 1:
        raise ValueError(f"jsma: gamma must be in (0, 1], got {gamma}")
    if int(steps) < 0 or int(targets) < 1 or int(pool) < 0:
        raise ValueError(f"jsma: steps, pool must be >= 0 and targets >= 1, got {steps}, {pool}, {targets}")
    n = len(x)
    d = int(x[0].numel()) if n else 0
    best = x.clone()
    best_l0 = torch.full((n,), float("inf"), device=x.device)
    best_l1 = torch.full((n,), float("inf"), device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    iterations = torch.full((n,), int(steps), dtype=torch.long, device=x.device)
    if not n:
        return best, success, iterations
    z = _logits_and_predictions(model, x)
    order = z.masked_fill(nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf")).argsort(1, descending=True)
    max_changed = max(1, math.ceil(float(gamma) * d))
    for t in range(min(int(targets), z.shape[1] - 1)):
        adv, ok, its = _jsma_target(model, x, y, order[:, t], float(theta), max_changed, int(steps), d, int(pool),
                                    direction)
        diff = (adv - x).reshape(n, -1).abs()
        l0 = (diff > 1e-6).sum(1).to(best_l0.dtype)
        l1 = diff.sum(1).to(best_l1.dtype)
        better = ok & ((l0 < best_l0) | ((l0 == best_l0) & (l1 < best_l1)))
        best[better], best_l0[better], best_l1[better] = adv[better], l0[better], l1[better]
        iterations[better] = its[better]
        success |= ok
    return best, success, iterations


# ---------------------------------------------------------------------------------------------
# SparseFool


def _deepfool(model, x, y, candidates: int, steps: int):
    """Batched L2 DeepFool from x towards the closest of the `candidates` most likely other classes.
    Returns r_tot (the perturbation, without overshoot) and the unit normal of the boundary at x + r_tot
    (gradient of Z_k - Z_y, k the class reached, or the closest class where none was reached)."""
    n = len(x)
    z = _logits_and_predictions(model, x)
    ncls = z.shape[1]
    k_top = ncls if not candidates else min(int(candidates), ncls)
    others = z.masked_fill(nn.functional.one_hot(y, ncls).bool(), float("-inf")).argsort(1, descending=True)[:, :k_top - 1]
    r_tot = torch.zeros_like(x)
    closest = others[:, 0].clone()
    reached = torch.full((n,), -1, dtype=torch.long, device=x.device)
    onehot_y = nn.functional.one_hot(y, ncls).to(x.dtype)
    for _ in range(int(steps)):
        active = torch.nonzero(reached < 0).flatten()
        if not len(active):
            break
        xa = x[active] + r_tot[active]
        ya = onehot_y[active]
        picks = [nn.functional.one_hot(others[active, j], ncls).to(x.dtype) - ya for j in range(others.shape[1])]
        zc, grads = _grads(model, xa, picks)              # logits at x + r_tot, grads of Z_k - Z_y
        f = torch.stack([(zc * p).sum(1) for p in picks], 1)                    # Z_k - Z_y  (< 0)
        w = torch.stack([g.flatten(1) for g in grads], 1)                        # (k, K-1, D)
        wn = w.norm(dim=2)
        pert = f.abs() / (wn + 1e-8)
        j = pert.argmin(1)
        rows = torch.arange(len(active), device=x.device)
        closest[active] = others[active, j]
        step = pert[rows, j].clamp(min=L1_MIN_STEP)[:, None] * w[rows, j] / (wn[rows, j][:, None] + 1e-8)
        r_tot[active] = r_tot[active] + step.reshape(xa.shape)
        check = _logits_and_predictions(model, x[active] + (1 + OVERSHOOT) * r_tot[active]).argmax(1)
        hit = check != y[active]
        reached[active[hit]] = check[hit]
    k = torch.where(reached >= 0, reached, closest)
    pick = nn.functional.one_hot(k, ncls).to(x.dtype) - onehot_y
    _, (g,) = _grads(model, x + r_tot, [pick])
    g = g.flatten(1)
    normal = g / (g.norm(dim=1, keepdim=True) + 1e-12)
    return r_tot, normal.reshape(x.shape)


def l1_linear_solver(x: torch.Tensor, normal: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
    """SparseFool's Algorithm 1 in closed form, batched: per sample, coordinates in order of
    decreasing |normal| move towards the hyperplane {v: normal . (v - boundary) = 0}, each to its
    bound in [0, 1], the last one just across the plane (+ L1_BIAS in plane units, at least
    L1_MIN_STEP), until the plane is crossed or no coordinate with normal != 0 is left. Returns the
    new point (n, ...)."""
    n = len(x)
    xf, w = x.reshape(n, -1), normal.reshape(n, -1)
    f0 = ((xf - boundary.reshape(n, -1)) * w).sum(1)                          # signed, plane units
    towards = torch.where(f0 <= 0, 1.0, -1.0).to(x.dtype)[:, None] * torch.sign(w)   # +1: up, -1: down
    room = torch.where(towards > 0, 1 - xf, torch.where(towards < 0, xf, torch.zeros_like(xf)))
    mag = w.abs()
    order = torch.sort(mag, dim=1, descending=True, stable=True).indices
    m_s, room_s, dir_s = mag.gather(1, order), room.gather(1, order), towards.gather(1, order)
    cap = m_s * room_s                                                         # how far each can close the gap
    gap = f0.abs()
    cum = cap.cumsum(1)
    before = cum - cap
    crosses = (cum >= gap[:, None]) & (m_s > 0)
    has = crosses.any(1)
    last = torch.where(has, crosses.float().argmax(1), torch.full_like(gap, m_s.shape[1], dtype=torch.long))
    pos = torch.arange(m_s.shape[1], device=x.device)[None, :]
    move = torch.where((pos < last[:, None]) & (m_s > 0), room_s, torch.zeros_like(room_s))
    rows = torch.nonzero(has).flatten()
    if len(rows):
        j = last[rows]
        need = ((gap[rows] - before[rows, j] + L1_BIAS) / m_s[rows, j]).clamp(min=L1_MIN_STEP)
        move[rows, j] = torch.minimum(need, room_s[rows, j])
    delta = torch.zeros_like(xf)
    delta.scatter_(1, order, move * dir_s)
    return (xf + delta).clamp(0, 1).reshape(x.shape)


def sparsefool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lambda_: float = 3.0, steps: int = 20,
               df_steps: int = 50, candidates: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SparseFool (see the module docstring): (adversarials, success, iterations)."""
    if float(lambda_) < 1:
        raise ValueError(f"sparsefool: lambda_ must be >= 1, got {lambda_}")
    if int(steps) < 0 or int(df_steps) < 1 or int(candidates) == 1 or int(candidates) < 0:
        raise ValueError(f"sparsefool: steps must be >= 0, df_steps >= 1 and candidates 0 (all) or >= 2, "
                         f"got {steps}, {df_steps}, {candidates}")
    n = len(x)
    xi = x.clone()
    adv = x.clone()
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    iterations = torch.full((n,), int(steps), dtype=torch.long, device=x.device)
    for it in range(int(steps)):
        active = torch.nonzero(~success).flatten()
        if not len(active):
            break
        r, normal = _deepfool(model, xi[active], y[active], int(candidates), int(df_steps))
        xi[active] = l1_linear_solver(xi[active], normal, xi[active] + float(lambda_) * r)
        cand = (x[active] + (1 + OVERSHOOT) * (xi[active] - x[active])).clamp(0, 1)
        fooled = _logits_and_predictions(model, cand).argmax(1) != y[active]
        adv[active] = cand
        success[active[fooled]] = True
        iterations[active[fooled]] = it + 1
    return adv, success, iterations
