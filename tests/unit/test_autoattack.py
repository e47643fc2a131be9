"""compute/evaluation/autoattack.py on a linear model whose minimal Linf and L2 distances are known in
closed form: AutoAttack's robust accuracy at every budget must equal the analytic count, the nested
budgets must attack only the samples still robust, and an interrupted run must resume to the same
result. No database.

AutoAttack's standard version spends ~25 s per budget on this model (Square's 5000 queries and FAB-T's
9 targets on the samples it cannot fool, mostly Python overhead): one test runs it as it is, at one
budget in Linf; the others use `quick`, the same wrapper with Square at 100 queries, FAB at 10
iterations and one target class (on this model only class 1 can win, and APGD-CE alone finds the
closed-form answer)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neuralreg_schema.compute.evaluation import autoattack as aa

D = 64                       # 1 x 8 x 8 images
N_CLASSES = 10


class Linear(nn.Module):
    """Logits: class 0 gets m(x) = a.x + c, class 1 gets -m(x), classes 2..9 a constant -20 (never
    the top class here). The decision boundary is m(x) = 0: the minimal distance of x is
    |m(x)| / ||a||_1 in Linf and |m(x)| / ||a||_2 in L2 (inside the box [0, 1] for the images below)."""

    def __init__(self, a: np.ndarray, c: float):
        super().__init__()
        self.a = nn.Parameter(torch.as_tensor(a, dtype=torch.float32))
        self.c = float(c)

    def forward(self, x):
        m = x.reshape(len(x), -1) @ self.a + self.c
        rest = torch.full((len(x), N_CLASSES - 2), -20.0, dtype=x.dtype)
        return torch.cat([m[:, None], -m[:, None], rest], dim=1), None      # (logits, features) like ClassifierNet


def problem(norm: str, targets: list[float], seed: int = 0):
    """Images near 0.5 whose distance to the boundary (in `norm`) is each of `targets`, alternately on
    either side; labels: the side the model predicts (all clean-correct)."""
    rng = np.random.default_rng(seed)
    a = rng.choice([-1.0, 1.0], size=D)
    c = -0.5 * a.sum()                              # m(0.5) = 0
    dual = np.abs(a).sum() if norm == "linf" else np.sqrt((a * a).sum())
    xs, ys = [], []
    for i, d in enumerate(targets):
        u = 0.5 + rng.uniform(-0.05, 0.05, size=D)
        sign = 1.0 if i % 2 == 0 else -1.0
        want = sign * d * dual                      # m(x) wanted
        x = u + (want - (a @ u + c)) * a / (a @ a)   # shift along a: m(x) = want exactly
        xs.append(x)
        ys.append(0 if sign > 0 else 1)
    x = np.clip(np.stack(xs), 0, 1).astype(np.float32).reshape(-1, 1, 8, 8)
    model = Linear(a, c)
    flat = x.reshape(len(x), -1).astype(np.float64)
    true = np.abs(flat @ a + c) / dual             # recomputed on the float32 images
    assert (x.min() > 0.2) and (x.max() < 0.8)      # the minimal adversarial stays inside the box
    return model, x, np.asarray(ys, np.int64), true


@pytest.fixture
def quick(monkeypatch):
    real = aa._autoattack

    def fast(*args, **kwargs):
        attack = real(*args, **kwargs)
        attack.square.n_queries = 100
        attack.fab.n_iter = 10
        attack.fab.n_target_classes = attack.apgd_targeted.n_target_classes = 1
        return attack

    monkeypatch.setattr(aa, "_autoattack", fast)


CASES = {
    "linf": [0.5 / 255, 1.5 / 255, 3 / 255, 6 / 255, 12 / 255, 0.7 / 255, 2.8 / 255, 5.5 / 255, 20 / 255, 9 / 255],
    "l2": [0.05, 0.17, 0.35, 0.8, 0.07, 0.2, 0.4, 1.2, 0.3, 0.6],
}


def test_the_standard_version_matches_the_closed_form():
    norm = "linf"                                   # L2: the same code path (test below)
    model, x, y, true = problem(norm, CASES[norm])
    eps = aa.EPSILONS[norm][1]
    out = aa.run_autoattack(model, x, y, norm, [eps], seed=1, batch_size=16, device="cpu")
    np.testing.assert_array_equal(out.robust[0], true > eps)
    assert out.rejected == 0


@pytest.mark.parametrize("norm", aa.NORMS)
def test_robust_accuracy_at_every_budget_matches_the_closed_form(norm, quick):
    model, x, y, true = problem(norm, CASES[norm])
    out = aa.run_autoattack(model, x, y, norm, seed=1, batch_size=4, device="cpu")
    eps = np.asarray(aa.EPSILONS[norm])
    assert out.clean_correct.all()
    expected = true[None, :] > eps[:, None]         # robust iff the minimal distance exceeds the budget
    np.testing.assert_array_equal(out.robust, expected)
    np.testing.assert_allclose(out.robust_accuracy, expected.mean(axis=1))
    fooled = ~out.robust[-1]
    # an adversarial is never closer than the minimal distance, and inside the budget that fooled it
    assert (out.distance[fooled] >= true[fooled] * (1 - 1e-4)).all()
    assert np.isinf(out.distance[~fooled]).all()
    # nested budgets: each budget attacks only the samples robust at the budget below
    assert out.attacked == [len(x)] + [int(r.sum()) for r in out.robust[:-1]]
    assert out.rejected == 0
    first = aa.fooled_at(out.robust, out.clean_correct)
    assert aa.missed_by_minimal(first, eps, true, out.clean_correct) == 0          # the true minimum is never missed
    assert aa.missed_by_minimal(first, eps, true + 1.0, out.clean_correct) == int(fooled.sum())


def test_clean_errors_are_not_robust_and_not_attacked(quick):
    model, x, y, true = problem("l2", CASES["l2"][:6])
    y[:2] = 1 - y[:2]                                # now misclassified without attack
    out = aa.run_autoattack(model, x, y, "l2", seed=0, batch_size=8, device="cpu")
    assert not out.clean_correct[:2].any() and out.clean_correct[2:].all()
    assert not out.robust[:, :2].any() and (out.distance[:2] == 0).all()
    assert out.attacked[0] == 4


class MemoryCheckpoint:
    def __init__(self, fail_after_saves: int | None = None):
        self.blob, self.saves, self.fail_after = None, 0, fail_after_saves

    def load(self):
        return self.blob

    def save(self, state: bytes):
        self.blob = state
        self.saves += 1
        if self.fail_after is not None and self.saves >= self.fail_after:
            raise KeyboardInterrupt("simulated crash after a saved chunk")


def test_an_interrupted_run_resumes_to_the_same_result(quick):
    model, x, y, _ = problem("linf", CASES["linf"])
    eps = [1 / 255, 4 / 255]
    whole = aa.run_autoattack(model, x, y, "linf", eps, seed=3, batch_size=3, device="cpu")
    ck = MemoryCheckpoint(fail_after_saves=5)      # 4 chunks at the first budget, 1 of 2 at the second
    with pytest.raises(KeyboardInterrupt):
        aa.run_autoattack(model, x, y, "linf", eps, seed=3, batch_size=3, device="cpu", checkpoint=ck,
                          checkpoint_interval=0.0)
    ck.fail_after = None
    said = []
    resumed = aa.run_autoattack(model, x, y, "linf", eps, seed=3, batch_size=3, device="cpu", checkpoint=ck,
                                checkpoint_interval=0.0, progress=said.append)
    assert resumed.resumed_chunks == 5 and any("resuming" in s for s in said)
    np.testing.assert_array_equal(resumed.robust, whole.robust)
    np.testing.assert_array_equal(resumed.distance, whole.distance)
    assert resumed.attacked == whole.attacked
    # a checkpoint of another run (other seed) is ignored, and said so
    said.clear()
    other = aa.run_autoattack(model, x, y, "linf", eps[:1], seed=4, batch_size=10, device="cpu", checkpoint=ck,
                              progress=said.append)
    assert other.resumed_chunks == 0 and any("another run" in s for s in said)


def test_bad_settings_are_refused():
    model, x, y, _ = problem("l2", CASES["l2"][:2])
    with pytest.raises(ValueError, match="norm"):
        aa.run_autoattack(model, x, y, "l1")
    with pytest.raises(ValueError, match="ascending"):
        aa.run_autoattack(model, x, y, "l2", [0.5, 0.1])
    with pytest.raises(ValueError, match="version"):
        aa.check_settings("l2", [0.1], "plus")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aa.run_autoattack(model, x + 2, y, "l2")
