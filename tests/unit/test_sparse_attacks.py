"""compute/evaluation/sparse_attacks.py (JSMA, SparseFool) on linear models whose answers are known, the L1
linear solver against the authors' coordinate-by-coordinate loop, and the statistics of
compute/evaluation/scores.py (budgets, per-norm selection, median / mean / SEM, robust accuracy) against numpy."""
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from neuralreg_schema.compute.evaluation import scores as SC
from neuralreg_schema.compute.evaluation import attacks as A
from neuralreg_schema.compute.evaluation import sparse_attacks as S


class Linear2(nn.Module):
    """Two classes, logits (-s/2, s/2) with s = w.x + b: class 1 iff s > 0; grad of Z_1 - Z_0 is w."""

    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32).flatten().clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([-s / 2, s / 2], dim=1)


def _case(w, x, margin):
    """A Linear2 model for which every image in x has class-1 score `margin` (labels 1)."""
    w = torch.as_tensor(w, dtype=torch.float32)
    x = torch.as_tensor(x, dtype=torch.float32)
    s0 = (x.flatten(1) @ w)
    assert torch.allclose(s0, s0[0])
    model = Linear2(w, float(margin) - float(s0[0])).eval()
    y = torch.ones(len(x), dtype=torch.long)
    return model, x, y


def _weights(d=16):
    w = torch.linspace(-0.1, 0.1, d)
    w[3], w[7], w[10] = 5.0, -4.0, 0.5
    return w


def test_jsma_changes_the_two_strongest_features_to_their_bounds():
    w = _weights()
    model, x, y = _case(w, torch.full((3, 1, 4, 4), 0.5), margin=3.0)   # one feature (2.5) is not enough
    adv, ok, its = S.jsma(model, x, y, theta=1.0, gamma=0.5, steps=20)
    assert ok.all() and (its == 1).all()
    diff = (adv - x).flatten(1)
    for row in diff:
        assert row.nonzero().flatten().tolist() == [3, 7]
    assert (adv.flatten(1)[:, 3] == 0).all() and (adv.flatten(1)[:, 7] == 1).all()
    assert A.recheck(model, x, y, adv, ok.numpy()).all()


def test_jsma_l0_matches_brute_force_on_random_linear_models():
    """With every feature at 0.5 (room 0.5 both ways) the fewest saturated features that flip a linear
    model is the smallest k with 0.5 * (sum of the k largest |w|) > margin; JSMA changes features in
    pairs, so it needs k rounded up to even."""
    rng = np.random.default_rng(0)
    for trial in range(6):
        d = 8
        w = rng.normal(0, 1, d)
        margin = rng.uniform(0.3, 0.45) * np.abs(w).sum()
        model, x, y = _case(w, np.full((1, 1, 2, 4), 0.5), margin)
        best = min(len(c) for k in range(1, d + 1) for c in itertools.combinations(range(d), k)
                   if 0.5 * np.abs(w[list(c)]).sum() > margin)
        adv, ok, _ = S.jsma(model, x, y, theta=1.0, gamma=1.0, steps=d)
        assert ok.all()
        l0 = int(((adv - x).abs() > 1e-6).sum())
        assert l0 == best + (best % 2), (trial, l0, best)


def test_jsma_respects_bounds_and_the_distortion_limit():
    w = _weights()
    x = torch.full((2, 1, 4, 4), 0.5)
    x[:, 0, 0, 3] = 0.0                       # feature 3 (w = 5) cannot decrease any further
    model, x, y = _case(w, x, margin=2.3)     # features 7 and 10 give 2.25: a third is needed
    adv, ok, _ = S.jsma(model, x, y, theta=0.3, gamma=1.0, steps=40)
    assert ok.all() and adv.min() >= 0 and adv.max() <= 1
    flat = adv.flatten(1)
    assert (flat[:, 3] == 0).all()            # untouched: its only useful direction is closed
    assert A.recheck(model, x, y, adv, ok.numpy()).all()
    # at most ceil(gamma * 16) = 2 features may change: not enough for this margin
    adv2, ok2, _ = S.jsma(model, x, y, theta=1.0, gamma=2 / 16, steps=40)
    assert not ok2.any() and int(((adv2 - x).flatten(1).abs() > 0).sum(1).max()) <= 2


def test_sparsefool_puts_the_l1_perturbation_on_the_largest_weight():
    """A linear model's L1-minimal perturbation moves only the largest-|w| coordinate, by margin / |w|max.
    SparseFool (lambda 1) finds it up to its 2% overshoot and 1e-3 plane bias:
    1.02 (lambda margin + 1e-3 ||w||) / |w|max."""
    w = _weights()
    model, x, y = _case(w, torch.full((2, 1, 4, 4), 0.5), margin=0.7)
    for lam in (1.0, 3.0):
        adv, ok, its = S.sparsefool(model, x, y, lambda_=lam, steps=10)
        assert ok.all() and (its == 1).all()
        diff = (adv - x).flatten(1).double()
        for row in diff:
            assert row.nonzero().flatten().tolist() == [3]
        expected = 1.02 * (lam * 0.7 + 1e-3 * float(w.norm())) / 5.0
        np.testing.assert_allclose(diff.abs().sum(1).numpy(), expected, rtol=1e-4)
    assert expected > 0.7 / 5.0


def test_sparsefool_moves_on_when_the_best_coordinate_hits_its_bound():
    w = _weights()
    x = torch.full((1, 1, 4, 4), 0.5)
    x[0, 0, 0, 3] = 0.05                      # feature 3 can decrease by 0.05 only (0.25 of the margin)
    model, x, y = _case(w, x, margin=1.0)
    adv, ok, _ = S.sparsefool(model, x, y, lambda_=1.0, steps=10)
    assert ok.all() and adv.min() >= 0 and adv.max() <= 1
    flat = adv.flatten(1)[0]
    changed = ((adv - x).flatten(1)[0].abs() > 1e-6).nonzero().flatten().tolist()
    assert changed == [3, 7] and flat[3] == 0.0
    assert A.recheck(model, x, y, adv, ok.numpy()).all()


def _solver_loop(x0, normal, boundary):
    """The authors' linear_solver, coordinate by coordinate (one sample, numpy float64)."""
    coords = normal.copy().ravel()
    plane, point, xi = normal.ravel(), boundary.ravel(), x0.ravel().copy()
    f = plane @ (xi - point)
    sign_true = np.sign(f)
    current = sign_true
    while current == sign_true and np.count_nonzero(coords) > 0:
        f = plane @ (xi - point) + 1e-3 * sign_true
        j = np.argmax(np.abs(coords))
        step = max(abs(f) / abs(coords[j]), 1e-4) * np.sign(coords[j])
        xi[j] = np.clip(xi[j] + step, 0, 1)
        current = np.sign(plane @ (xi - point))
        coords[j] = 0
    return xi.reshape(x0.shape)


def test_l1_linear_solver_equals_the_coordinate_loop():
    rng = np.random.default_rng(1)
    n, d = 12, 30
    x = rng.uniform(0, 1, (n, d))
    normal = rng.normal(0, 1, (n, d))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    # boundary points on the positive side of x (the loop moves along sign(normal)): a random reach
    boundary = x + rng.uniform(0.05, 1.5, (n, 1)) * normal
    got = S.l1_linear_solver(torch.as_tensor(x), torch.as_tensor(normal), torch.as_tensor(boundary)).numpy()
    for i in range(n):
        np.testing.assert_allclose(got[i], _solver_loop(x[i], normal[i], boundary[i]), atol=1e-12)


def test_new_attacks_through_run_attack_keep_l0_and_l1_separately():
    w = _weights()
    model, x, y = _case(w, torch.full((3, 1, 4, 4), 0.5), margin=0.7)
    out = A.run_attack(model, x.numpy(), y.numpy(), "sparsefool-l1", grid={"lambda_": [1.0, 3.0]}, device="cpu")
    assert out.success.all() and out.rejected == 0 and len(out.params_tried) == 2
    np.testing.assert_allclose(out.distances["l1"], 1.02 * (0.7 + 1e-3 * float(w.norm())) / 5.0, rtol=1e-4)
    assert (out.distances["l0"] == 1).all() and out.budgets == [1, 2, 5, 10, 20]
    jsma = A.run_attack(model, x.numpy(), y.numpy(), "jsma-l0", grid={"theta": [1.0, 0.3]}, device="cpu")
    assert jsma.success.all() and jsma.rejected == 0
    # theta 1 saturates 2 features (L1 1.0); theta 0.3 needs fewer L1 (0.6) on the same 2 features
    assert (jsma.distances["l0"] == 2).all()
    np.testing.assert_allclose(jsma.distances["l1"], 0.6, atol=1e-6)


def test_reduce_runs_budgets_and_selection():
    inf = np.inf
    # 2 runs x 3 samples, NORMS order l0, l1, l2, linf
    d = np.array([[[3, 1.0, 0.5, 0.2], [inf] * 4, [5, 2.0, 1.0, 0.3]],
                  [[2, 1.5, 0.6, 0.1], [4, 3.0, 1.0, 0.4], [6, 1.0, 0.9, 0.5]]])
    used = np.array([[10, 10, 3], [20, 20, 20]])
    out, best = SC.reduce_runs(d, used, "l0")
    np.testing.assert_array_equal(best, [1, 1, 0])
    np.testing.assert_array_equal(out, [d[1, 0], d[1, 1], d[0, 2]])
    sel, _ = SC.reduce_runs(d, used, "l0", ("l1",))
    np.testing.assert_array_equal(sel[:, 1], [1.0, 3.0, 1.0])          # L1 kept on its own
    np.testing.assert_array_equal(sel[:, [0, 2, 3]], out[:, [0, 2, 3]])
    at10, best10 = SC.reduce_runs(d, used, "l0", budget=10)
    np.testing.assert_array_equal(best10, [0, -1, 0])
    assert np.isinf(at10[1]).all()
    assert SC.budget_points([30, 10]) == [1, 2, 5, 10, 20, 30] and SC.budget_points([]) == []


def test_budget_curve_is_the_minimum_over_attacks_at_each_budget():
    a = ([2, 10], np.array([[[5.0], [inf := np.inf]], [[4.0], [3.0]]]))
    b = ([5], np.array([[[6.0], [1.0]]]))
    budgets, curve = SC.budget_curve([a, b])
    assert budgets == [2, 5, 10]
    np.testing.assert_array_equal(curve[:, :, 0], [[5.0, inf], [5.0, 1.0], [4.0, 1.0]])
    with pytest.raises(ValueError):
        SC.budget_curve([([10, 2], np.zeros((2, 1)))])


def test_distance_statistics_and_robust_accuracy_against_numpy():
    rng = np.random.default_rng(2)
    d = rng.exponential(0.02, 101)
    correct = rng.uniform(size=101) > 0.2
    d[~correct] = 0.0
    st = SC.distance_statistics(d, correct)
    assert st["median"] == np.median(d) and st["mean"] == pytest.approx(d.mean())
    assert st["sem"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(101))
    c = d[correct]
    assert st["median_correct"] == np.median(c) and st["mean_correct"] == pytest.approx(c.mean())
    assert st["sem_correct"] == pytest.approx(np.std(c, ddof=1) / np.sqrt(len(c)))
    assert st["n"] == 101 and st["n_correct"] == correct.sum() and st["success_rate"] == 1.0
    for eps in (8 / 255, 0.01, 0.5):
        assert SC.robust_accuracy(d, eps) == pytest.approx(np.mean(d > eps))
        assert SC.robust_accuracy(d, eps) <= correct.mean()           # clean errors are never robust
    d2 = d.copy()
    d2[correct.nonzero()[0][0]] = np.inf                              # one sample never fooled
    st2 = SC.distance_statistics(d2, correct)
    assert np.isinf(st2["mean"]) and np.isinf(st2["sem"]) and np.isfinite(st2["median"])
    assert st2["success_rate"] == pytest.approx(100 / 101)
    assert SC.robust_accuracy(np.array([0.0, 8 / 255, 0.04, np.inf]), 8 / 255) == 0.5   # at the budget: fooled
    with pytest.raises(ValueError):
        SC.distance_statistics(np.array([np.nan]), np.array([True]))


def test_jsma_candidate_pool_finds_the_exhaustive_pair():
    """The pair search among 3 x pool candidates (top alpha, most negative beta, top alpha - beta) picks
    a pair scoring as high as the paper's search over all pairs, on random saliency maps."""
    g = torch.Generator().manual_seed(0)
    d, n = 256, 12
    for corr in (0.0, -0.5, -0.9):
        z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        alpha, beta = z1, corr * z1 + (1 - corr ** 2) ** 0.5 * z2
        a, b = torch.cat([alpha, -alpha], 1), torch.cat([beta, -beta], 1)
        valid = torch.rand(n, 2 * d, generator=g) > 0.1

        def score(c1, c2):
            pick = lambda t: t.gather(1, c1[:, None]) + t.gather(1, c2[:, None])   # noqa: E731
            return (-pick(a) * pick(b)).flatten()

        e1, e2, ok_e = S._jsma_pairs(a, b, valid, d, pool=0)
        p1, p2, ok_p = S._jsma_pairs(a, b, valid, d, pool=16)
        assert ok_e.all() and ok_p.all() and ((p1 % d) != (p2 % d)).all()
        assert valid.gather(1, p1[:, None]).all() and valid.gather(1, p2[:, None]).all()
        torch.testing.assert_close(score(p1, p2), score(e1, e2))


@pytest.mark.parametrize("direction", ["increase", "decrease"])
def test_jsma_papers_one_sided_setting_matches_brute_force(direction):
    """Papernot et al.'s theta = +1 (features only increase, to 1) and theta = -1 (only decrease, to 0),
    all pairs (pool 0): the fewest features that flip a linear model when each may move only that way is
    the smallest k with 0.5 * (sum of the k largest useful |w|) > margin (useful: w < 0 when
    increasing lowers the class-1 score, w > 0 when decreasing), rounded up to even (pairs)."""
    rng = np.random.default_rng(1)
    sign = -1 if direction == "increase" else 1
    for trial in range(5):
        d = 10
        w = rng.normal(0, 1, d)
        useful = np.sort(np.clip(sign * w, 0, None))[::-1]
        margin = rng.uniform(0.3, 0.45) * useful.sum()
        model, x, y = _case(w, np.full((1, 1, 2, 5), 0.5), margin)
        best = next(k for k in range(1, d + 1) if 0.5 * useful[:k].sum() > margin)
        adv, ok, _ = S.jsma(model, x, y, theta=1.0, gamma=1.0, steps=d, pool=0, direction=direction)
        assert ok.all()
        diff = (adv - x).flatten()
        assert (diff >= 0).all() if direction == "increase" else (diff <= 0).all()
        changed = diff.abs() > 1e-6
        assert set(adv.flatten()[changed].tolist()) == {1.0 if direction == "increase" else 0.0}
        assert int(changed.sum()) == best + (best % 2), (trial, int(changed.sum()), best)
    with pytest.raises(ValueError, match="direction"):
        S.jsma(model, x, y, direction="up")

