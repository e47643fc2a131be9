"""Model queries (compute/evaluation/queries.py, issue 22): the counting wrapper on a toy model where
the count is known, run_attack's per-run counts for PGD (with its bisection) and JSMA against counts
derived from their loops, and the budget costing of compute/evaluation/scores.py."""

import numpy as np
import pytest
import torch
from torch import nn

from neuralreg_schema.compute.evaluation import attacks as A
from neuralreg_schema.compute.evaluation import scores as SC
from neuralreg_schema.compute.evaluation.queries import QueryCounter

from .test_attacks import _Fixed, _linear_case, _tiny_data


def test_counter_counts_forward_rows_and_gradient_rows():
    net = QueryCounter(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
    x = torch.rand(5, 1, 3, 4)
    with torch.no_grad():
        net(x)
    assert net.counts() == (5, 0)
    xg = x[:3].clone().requires_grad_(True)
    z = net(xg)
    g1, = torch.autograd.grad(z[:, 0].sum(), xg, retain_graph=True)      # two backward passes of 3 rows
    g2, = torch.autograd.grad(z[:, 1].sum(), xg)
    assert net.counts() == (8, 6)
    # the gradient is the model's: the counter changes nothing
    assert torch.allclose(g1, net.model[1].weight[0].reshape(1, 1, 3, 4).expand(3, 1, 3, 4))
    # a gradient for the parameters alone (input without grad) is not a query of the input
    net(x[:2]).sum().backward()
    assert net.counts() == (10, 6)
    # a leaf used twice gets no lasting hook: one backward, one count
    xl = x[:1].clone().requires_grad_(True)
    net(xl).sum().backward()
    net(xl).sum().backward()
    assert net.counts() == (12, 8)
    net.reset()
    assert net.counts() == (0, 0)


def test_pgd_counts_every_bisection_attempt():
    """foolbox PGD: per attempt steps x (forward + gradient) per sample, and the attempt's success check
    (one forward per sample); the search starts with one clean forward per sample. With every sample
    fooled at eps_hi, all n samples stay in all 1 + search_steps attempts."""
    model, x, y, _, _ = _linear_case(n=6)
    steps, search = 3, 4
    out = A.run_attack(model, x.numpy(), y.numpy(), "pgd-linf",
                       grid={"steps": steps, "rel_stepsize": 0.5, "eps_hi": 0.5, "search_steps": search},
                       device="cpu")
    assert out.success.all()
    run, = out.params_tried
    n = 6
    assert run["attacked"] == n and run["steps"] == steps
    assert run["forward_rows"] == n + (1 + search) * n * (steps + 1)
    assert run["gradient_rows"] == (1 + search) * n * steps


def test_jsma_counts_follow_its_loop():
    """JSMA (targets 1): one forward at the start, a check forward every iteration up to the sample's
    adversarial, and one forward with two gradients (alpha, beta) per iteration before it."""
    net, x, y = _tiny_data(6)
    out = A.run_attack(net, x, y, "jsma-l0", grid={"steps": 40, "theta": 1.0, "gamma": 1.0, "targets": 1,
                                                     "pool": 0}, device="cpu")
    assert out.success.all() and out.clean_correct.all()
    run, = out.params_tried
    u = out.runs_used[0].astype(np.int64)
    assert run["forward_rows"] == int((2 * u + 2).sum())
    assert run["gradient_rows"] == int((2 * u).sum())


def test_run_queries_and_the_budget_costing():
    fixed = {"steps": 10, "early_stopping": False, "attacked": 4, "forward_rows": 44, "gradient_rows": 40,
             "used": [10] * 4}
    early = {"steps": 20, "early_stopping": True, "attacked": 4, "forward_rows": 30, "gradient_rows": 20,
             "used": [1, 2, 3, 14]}
    assert SC.run_queries(fixed) == 21.0 and SC.run_queries(early) == 12.5
    assert SC.run_queries(fixed, 9) == 0.0 and SC.run_queries(fixed, 10) == 21.0
    # proportional model: 12.5 x (1 + 2 + 3 + 5) / 20
    assert SC.run_queries(early, 5) == pytest.approx(12.5 * 11 / 20)
    assert SC.run_queries(early, 20) == 12.5
    union = [1, 5, 10, 20]
    q = SC.budget_queries([([5, 10], [fixed]), ([1, 2, 5, 10, 20], [early])], union)
    assert q == pytest.approx([12.5 * 4 / 20, 12.5 * 11 / 20, 21 + 12.5 * 16 / 20, 21 + 12.5])
    assert SC.run_queries({**fixed, "attacked": 0}) == 0.0


