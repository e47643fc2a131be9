"""compute/evaluation/attacks.py and its neighbours (attack_specs, attack_recipes, attack_scores, foolbox_pgd):
the batched minimal-epsilon search against the closed form of a linear model, distances, the
re-check, the 0 / inf / NaN rules, min over attacks, determinism, the typed specs and their parser,
every attack of the "tiny" recipe on a tiny CNN, and an interrupted run resumed from its checkpoint.
Brendel-Bethge (numba JIT-compiles one optimizer class per norm: about a minute each) is marked
`slow`: it runs by default, `-m "not slow"` leaves it out."""

import numpy as np
import pytest
import torch
from torch import nn

from neuralreg_schema.compute.evaluation import recipes as R
from neuralreg_schema.compute.evaluation import scores as SC
from neuralreg_schema.compute.evaluation import specs as SP
from neuralreg_schema.compute.evaluation import attacks as A


class Linear2(nn.Module):
    """Two classes, logits (0, w.x + b): class 1 iff w.x + b > 0. Returns a tuple, like ClassifierNet."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = nn.Parameter(w.flatten().clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1), {}


def _linear_case(n=6, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    model = Linear2(w, 0.0)
    # images around 0.5 so the minimal perturbations stay far inside [0, 1]
    x = (0.5 + 0.02 * torch.randn(n, 1, 4, d // 4, generator=g)).clamp(0, 1)
    with torch.no_grad():
        s = x.flatten(1) @ model.w + model.b
    y = (s > 0).long()
    margin = s.abs().numpy().astype(np.float64)
    return model, x, y, w.numpy().astype(np.float64), margin


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_binary_search_finds_the_minimal_epsilon_of_a_linear_model(norm):
    model, x, y, w, margin = _linear_case()
    wt = torch.as_tensor(w, dtype=torch.float32)
    direction = torch.sign(wt) if norm == "linf" else wt / wt.norm()
    calls = []

    def attack_fn(xb, yb, eps):
        # move every sample by eps towards the boundary (the optimal direction of a linear model)
        calls.append(len(xb))
        sign = (1 - 2 * yb.float())[:, None]           # class 1 -> decrease w.x
        step = sign * direction[None] * eps[:, None]
        return (xb.flatten(1) + step).reshape(xb.shape).clamp(0, 1)

    eps_hi, steps = 1.0, 14
    eps, adv = A.minimal_epsilon_search(model, x, y, attack_fn, eps_hi, steps)
    expected = margin / (np.abs(w).sum() if norm == "linf" else np.sqrt((w ** 2).sum()))
    tol = eps_hi / 2 ** steps
    assert eps.dtype == np.float64 and eps.shape == (len(x),)
    assert np.all(eps >= expected - 1e-6) and np.all(eps <= expected + tol + 1e-6), (eps, expected)
    # batched: one call per bisection step (+ the one at eps_hi), each on all samples at once
    assert len(calls) == steps + 1 and all(c == len(x) for c in calls)
    assert A.recheck(model, x, y, adv, np.ones(len(x), bool)).all()


def test_binary_search_with_foolbox_pgd_per_sample_epsilon():
    """The per-sample-epsilon foolbox PGD inside the search reaches the closed form too."""
    import eagerpy as ep
    import foolbox as fb
    model, x, y, w, margin = _linear_case(n=5, seed=3)
    net = A.Logits(model)
    fmodel = fb.PyTorchModel(net.eval(), bounds=(0, 1))
    attack = SP.ATTACKS["pgd-linf"].build({"steps": 30, "rel_stepsize": 0.1, "random_start": False})

    def attack_fn(xb, yb, eps):
        return attack.run(fmodel, xb, fb.Misclassification(yb), epsilon=ep.astensor(eps.reshape(-1, 1, 1, 1)))

    eps, _ = A.minimal_epsilon_search(model, x, y, attack_fn, 0.25, 12)
    expected = margin / np.abs(w).sum()
    assert np.all(np.abs(eps - expected) <= 0.25 / 2 ** 12 + 1e-4), (eps, expected)


def test_search_failures_are_inf_and_clean_errors_zero():
    model, x, y, w, margin = _linear_case(n=4)
    y = y.clone()
    y[0] = 1 - y[0]                                    # misclassified without attack
    eps, adv = A.minimal_epsilon_search(model, x, y, lambda xb, yb, e: xb, 0.5, 3)   # never fools
    assert eps[0] == 0 and np.isinf(eps[1:]).all()
    assert torch.equal(adv, x)


def test_distances_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5, 1, 6, 7)).astype(np.float32)
    adv = x.copy()
    adv[:, 0, :3, :2] += rng.normal(0, 0.1, (5, 3, 2)).astype(np.float32)
    adv[1] = x[1]                                      # unchanged sample
    adv[2, 0, 5, 6] = x[2, 0, 5, 6] + 5e-7             # below the L0 threshold
    d = SC.distances(x, adv)
    diff = (adv.astype(np.float64) - x.astype(np.float64)).reshape(5, -1)
    assert set(d) == set(SC.NORMS) and all(v.dtype == np.float64 and v.shape == (5,) for v in d.values())
    np.testing.assert_allclose(d["l1"], np.abs(diff).sum(1))
    np.testing.assert_allclose(d["l2"], np.linalg.norm(diff, axis=1))
    np.testing.assert_allclose(d["linf"], np.abs(diff).max(1))
    np.testing.assert_array_equal(d["l0"], (np.abs(diff) > SC.L0_THRESHOLD).sum(1))
    assert d["l0"][1] == 0 and d["l0"][2] == np.count_nonzero(np.abs(diff[2]) > 1e-6)
    np.testing.assert_allclose(SC.distances(torch.as_tensor(x), torch.as_tensor(adv))["l2"], d["l2"])
    bad = adv.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        SC.distances(x, bad)


def test_recheck_rejects_fake_adversarials():
    model, x, y, w, margin = _linear_case(n=4)
    wt = torch.as_tensor(w, dtype=torch.float32)
    sign = (1 - 2 * y.float())[:, None]
    eps = torch.as_tensor(margin / np.abs(w).sum() * 1.5, dtype=torch.float32)
    real = (x.flatten(1) + sign * torch.sign(wt)[None] * eps[:, None]).reshape(x.shape)
    assert A.recheck(model, x, y, real, np.ones(4, bool)).all()
    fake = real.clone()
    fake[0] = x[0]                                     # correctly classified
    fake[1] = real[1]
    fake[1, 0, 0, 0] = 1.5                             # misclassified but outside the bounds
    fake[2, 0, 0, 0] = float("nan")                    # not finite
    ok = A.recheck(model, x, y, fake, np.ones(4, bool))
    assert ok.tolist() == [False, False, False, True]
    assert not A.recheck(model, x, y, real, np.array([True, True, True, False]))[3]   # not claimed


class _Fixed(nn.Module):
    """Tiny CNN for the attack runs (3 classes, 10x10)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)), {}


def _tiny_data(n=8):
    net = _Fixed()
    x = torch.rand(n, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x)[0].argmax(1)
    return net, x.numpy(), y.numpy()


def test_run_attack_zero_for_clean_errors_and_inf_for_unfoolable():
    net, x, y = _tiny_data(6)
    y = y.copy()
    y[0] = (y[0] + 1) % 3                              # misclassified without attack
    out = A.run_attack(net, x, y, "pgd-linf", grid={"steps": 3, "rel_stepsize": 0.5, "eps_hi": 1e-4,
                                                    "search_steps": 2}, device="cpu")
    assert not out.clean_correct[0] and out.clean_correct[1:].all()
    assert all(out.distances[k][0] == 0 for k in SC.NORMS) and out.success[0]
    # 1e-4 Linf cannot flip these samples: failures are +inf in every norm
    assert all(np.isinf(out.distances[k][1:]).all() for k in SC.NORMS) and not out.success[1:].any()
    assert out.norm == "linf" and len(out.params_tried) == 1 and out.rejected == 0


def test_rejected_claims_become_failures(monkeypatch):
    """An attack that claims success for NaN / out-of-bounds / unchanged images: all rejected, inf."""
    net, x, y = _tiny_data(4)

    def lying(spec, params, fmodel, model, xb, yb, seed, dev):
        adv = xb.clone()
        adv[0] = float("nan")
        adv[1] = adv[1] + 2.0
        return adv, np.ones(len(xb), bool), np.ones(len(xb), np.int64)

    monkeypatch.setattr(A, "_attack_batch", lying)
    out = A.run_attack(net, x, y, "ddn-l2", grid={"steps": 1}, device="cpu")
    assert out.rejected == 4 and not out.success.any()
    assert all(np.isinf(out.distances[k]).all() for k in SC.NORMS)


def _outcome(name, norm, d):
    d = {k: np.asarray(v, np.float64) for k, v in d.items()}
    n = len(d["l2"])
    return A.AttackOutcome(name=name, norm=norm, kind="min", distances=d, success=np.isfinite(d[norm]),
                           clean_correct=np.ones(n, bool), params_tried=[], seconds=0.0)


def test_minimal_over_attacks():
    inf = np.inf
    a = _outcome("a", "l2", {"l0": [3, inf, 0, 5], "l1": [1, inf, 0, 2], "l2": [0.5, inf, 0, 1], "linf": [0.1, inf, 0, 0.3]})
    b = _outcome("b", "linf", {"l0": [9, 7, 0, 2], "l1": [2, 3, 0, 1], "l2": [0.4, 2, 0, 1.5], "linf": [0.2, 0.5, 0, 0.1]})
    m = SC.minimal_over_attacks([a, b])
    assert m["l0"].tolist() == [3, 7, 0, 2]
    assert m["l2"].tolist() == [0.4, 2, 0, 1]
    assert m["linf"].tolist() == [0.1, 0.5, 0, 0.1]
    c = _outcome("c", "l2", {"l0": [inf] * 4, "l1": [inf] * 4, "l2": [inf] * 4, "linf": [inf] * 4})
    assert np.isinf(SC.minimal_over_attacks([c])["l2"]).all()
    nan = _outcome("n", "l2", {"l0": [1, 1, 1, 1], "l1": [1, 1, 1, 1], "l2": [np.nan, 1, 1, 1], "linf": [1, 1, 1, 1]})
    with pytest.raises(ValueError):
        SC.minimal_over_attacks([a, nan])
    with pytest.raises(ValueError):
        SC.minimal_over_attacks([])
    short = _outcome("s", "l2", {k: [1, 1] for k in SC.NORMS})
    with pytest.raises(ValueError):
        SC.minimal_over_attacks([a, short])


def test_specs_and_recipes():
    assert SP.ATTACKS["jsma-l0"].norm == "l0" and SP.ATTACKS["sparsefool-l1"].norm == "l1"
    assert not SP.ATTACKS["jsma-l0"].foolbox_class and not SP.ATTACKS["jsma-l0"].stochastic
    paper = R.RECIPES["paper"]["grids"]
    assert len(SP.expand_grid(paper["pgd-linf"])) == 35        # the paper's 7 step sizes x 5 iteration counts
    assert sorted({g["steps"] for g in SP.expand_grid(paper["pgd-linf"])}) == [10, 30, 50, 100, 200]
    assert len(SP.expand_grid(paper["bb-l2"])) == 7 * 6
    assert R.RECIPES["demo"]["attacks"] == ["ddn-l2", "fmn-l0", "fmn-l1", "fmn-linf", "pgd-linf"]   # its budget
    for name in ("bb-l0", "bb-l1", "bb-l2", "bb-linf", "cw-l2", "ddn-l2", "fmn-l0", "fmn-l1", "fmn-l2",
                 "fmn-linf", "pgd-linf", "pgd-l2", "adampgd-linf", "adampgd-l2"):
        spec = SP.ATTACKS[name]
        assert spec.norm in SC.NORMS and spec.kind in ("min", "eps")
        assert spec.kind == ("eps" if "pgd" in name else "min")
        import foolbox.attacks as fa
        assert hasattr(fa, spec.foolbox_class)
    for r in R.RECIPES.values():
        for name in r["attacks"]:
            for p in SP.expand_grid(r["grids"][name]):
                SP.ATTACKS[name].params(p)               # every grid key is known
    assert R.RECIPES["paper"]["n_samples"] == 1000 and R.RECIPES["paper"]["repeats"] == 5
    assert set(R.RECIPES["paper"]["attacks"]) == set(SP.ATTACKS)
    assert {SP.ATTACKS[a].norm for a in R.RECIPES["demo"]["attacks"]} == set(SC.NORMS)
    with pytest.raises(ValueError):
        SP.ATTACKS["ddn-l2"].params({"nonsense": 1})
    assert len(SP.expand_grid({"a": [1, 2], "b": [3, 4, 5]})) == 6 and SP.expand_grid(None) == [{}]


def test_typed_specs_and_the_config_parser():
    """A stored config (attack name + JSON grid) parses into frozen, keyword-only typed options of the
    attack's family; unknown attacks, unknown options, wrong types and bad starting attacks are refused
    with an AttackConfigError that names them."""
    import dataclasses
    spec, options = SP.parse_grid("pgd-l2", {"steps": [5, 10], "abs_stepsize": [None, 1], "search_steps": [4]})
    assert spec.family is SP.PGD and spec.kind == "eps" and spec.stochastic and len(options) == 4
    o = options[-1]
    assert isinstance(o, SP.PGD) and o.steps == 10 and o.abs_stepsize == 1.0 and isinstance(o.abs_stepsize, float)
    assert o.eps_hi == 6.0 and o.rel_stepsize == 0.025 and o.search_steps == 4     # pgd-l2's own defaults
    assert "eps_hi" not in o.attack_kwargs() and "search_steps" not in o.attack_kwargs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.steps = 3
    with pytest.raises(TypeError):
        SP.DDN(1.0, 10, 0.05)                                      # keyword-only, foolbox's style
    assert SP.ATTACKS["adampgd-linf"].family is SP.AdamPGD and issubclass(SP.AdamPGD, SP.PGD)
    assert isinstance(SP.ATTACKS["jsma-l0"].build({"steps": 3}), SP.SparseAttack)
    bb = SP.ATTACKS["bb-l1"].options({})
    assert bb.init == "ddn-l2" and bb.requires_start and "init" not in bb.attack_kwargs()
    for name, setting, words in [
            ("nope-l2", {}, ["unknown attack 'nope-l2'", "ddn-l2"]),
            ("ddn-l2", {"stepz": 3}, ["unknown options ['stepz']", "init_epsilon"]),
            ("ddn-l2", {"steps": 2.5}, ["'steps' must be int", "2.5"]),
            ("cw-l2", {"abort_early": 1}, ["'abort_early' must be bool"]),
            ("pgd-linf", {"eps_hi": None}, ["'eps_hi' must be float"]),
            ("fmn-l2", {"init": "bb-l2"}, ["init must be one of", "ddn-l2"]),
            ("bb-l0", {"init": "jsma-l0"}, ["init must be one of"])]:
        with pytest.raises(SP.AttackConfigError) as error:
            SP.parse_grid(name, setting)
        assert isinstance(error.value, ValueError) and all(w in str(error.value) for w in words), str(error.value)
    # the stored JSON format is unchanged: a grid as an existing database holds it parses as before
    stored = {"steps": [8], "init": ["ddn-l2"], "init_steps": [10]}
    assert [x.as_dict() for x in SP.parse_grid("fmn-l0", stored)[1]] == [{
        "steps": 8, "max_stepsize": 1.0, "gamma": 0.05, "binary_search_steps": 10, "init": "ddn-l2", "init_steps": 10}]
    assert SP.parse_grid("ddn-l2", [{"steps": 3}, {"steps": 4}])[1][1].steps == 4      # a list of settings


def test_tiny_recipe_every_attack_runs_and_is_deterministic():
    net, x, y = _tiny_data(R.RECIPES["tiny"]["n_samples"])
    net.train()
    state = torch.random.get_rng_state()
    outs = A.run_recipe(net, x, y, "tiny", seed=3, device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())      # global RNG restored
    assert net.training                                           # caller's mode restored
    assert set(outs) == set(R.RECIPES["tiny"]["attacks"])
    for name, o in outs.items():
        assert o.norm == SP.ATTACKS[name].norm
        assert o.success.any(), name
        for k in SC.NORMS:
            d = o.distances[k]
            assert d.dtype == np.float64 and d.shape == (len(x),)
            assert np.isfinite(d[o.success]).all() and (d[o.success] >= 0).all(), (name, k)
            assert np.isinf(d[~o.success]).all()
        assert o.rejected == 0
        assert o.seconds > 0 and o.params_tried
    # 2 settings x 2 repeats for the randomized pgd-linf; deterministic attacks run once per setting
    assert len(outs["pgd-linf"].params_tried) == 4 and len(outs["ddn-l2"].params_tried) == 2
    for name, o in outs.items():                # at the largest budget the curve is the final result
        assert o.budgets == SC.budget_points([p["params"]["steps"] for p in o.params_tried]), name
        final = np.stack([o.distances[k] for k in SC.NORMS], axis=1)
        np.testing.assert_array_equal(o.budget_distances[-1], final)
        for norm in (o.norm,) + SP.ATTACKS[name].select:       # in the norms it selects by, more budget never hurts
            k = SC.NORMS.index(norm)
            assert (o.budget_distances[1:, :, k] <= o.budget_distances[:-1, :, k]).all(), name
    assert outs["ddn-l2"].budgets == [1, 2, 3, 5, 10] and np.isinf(outs["ddn-l2"].budget_distances[:2]).all()
    again = A.run_attack(net, x, y, "pgd-linf", grid=R.RECIPES["tiny"]["grids"]["pgd-linf"],
                         repeats=2, seed=3, batch_size=8, device="cpu")
    for k in SC.NORMS:
        np.testing.assert_array_equal(again.distances[k], outs["pgd-linf"].distances[k])
    m = SC.minimal_over_attacks(list(outs.values()))
    assert all((m[k] <= outs["ddn-l2"].distances[k]).all() for k in SC.NORMS)


def test_batches_do_not_change_what_is_kept():
    net, x, y = _tiny_data(6)
    a = A.run_attack(net, x, y, "ddn-l2", grid={"steps": 5}, batch_size=6, device="cpu")
    b = A.run_attack(net, x, y, "ddn-l2", grid={"steps": 5}, batch_size=2, device="cpu")
    np.testing.assert_allclose(a.distances["l2"], b.distances["l2"], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bb-l0", "bb-l1", "bb-l2", "bb-linf"])
def test_brendel_bethge_from_starting_points(name):
    net, x, y = _tiny_data(4)
    out = A.run_attack(net, x, y, name, grid={"steps": 10}, device="cpu")
    start = A.run_attack(net, x, y, "ddn-l2", grid={}, device="cpu")
    assert out.success.all() and out.rejected == 0
    assert (out.distances[out.norm] <= start.distances[out.norm] + 1e-6).all()


class _Interrupted(Exception):
    """Stands for a crash (a killed worker) after a checkpoint was saved."""


class _MemoryCheckpoint:
    """training.Checkpoint in memory; raises _Interrupted once its `crash_after`-th save is written."""

    def __init__(self, crash_after=None):
        self.blob, self.saves, self.crash_after = None, 0, crash_after

    def load(self):
        return self.blob

    def save(self, state: bytes):
        self.blob, self.saves = state, self.saves + 1
        if self.saves == self.crash_after:
            raise _Interrupted


@pytest.mark.parametrize("crash_after", [3, 5])
def test_an_interrupted_attack_resumes_to_the_uninterrupted_result(crash_after):
    """PGD (random starts) x 2 settings x 2 repeats, 3 batches per run: a run that dies after its 3rd
    (end of the first run) or 5th (inside the second) saved batch resumes from the checkpoint and gives
    exactly what an uninterrupted run gives, without attacking the saved batches again."""
    net, x, y = _tiny_data(8)
    kw = dict(grid={"steps": [3], "rel_stepsize": [0.3, 0.5], "eps_hi": [0.5], "search_steps": [3]},
              repeats=2, seed=7, batch_size=3, device="cpu")
    whole = A.run_attack(net, x, y, "pgd-linf", **kw)
    assert len(whole.params_tried) == 4 and whole.resumed_batches == 0
    checkpoint = _MemoryCheckpoint(crash_after=crash_after)
    with pytest.raises(_Interrupted):
        A.run_attack(net, x, y, "pgd-linf", checkpoint=checkpoint, checkpoint_interval=0, **kw)
    checkpoint.crash_after = None
    said = []
    again = A.run_attack(net, x, y, "pgd-linf", checkpoint=checkpoint, checkpoint_interval=0, progress=said.append, **kw)
    assert again.resumed_batches == crash_after and any("resuming" in m for m in said)
    assert checkpoint.saves == 12                      # 4 runs x 3 batches: none attacked twice
    for k in SC.NORMS:
        np.testing.assert_array_equal(again.distances[k], whole.distances[k])
    np.testing.assert_array_equal(again.budget_distances, whole.budget_distances)
    np.testing.assert_array_equal(again.best_run, whole.best_run)
    np.testing.assert_array_equal(again.success, whole.success)
    assert again.budgets == whole.budgets and again.rejected == whole.rejected

    def strip(tried):
        return [{k: v for k, v in t.items() if k != "seconds"} for t in tried]

    assert strip(again.params_tried) == strip(whole.params_tried)
    # a checkpoint of another run (here: another seed) is ignored, and said so
    said.clear()
    other = A.run_attack(net, x, y, "pgd-linf", checkpoint=_MemoryCheckpoint(), **{**kw, "seed": 8})
    stale = A.run_attack(net, x, y, "pgd-linf", checkpoint=checkpoint, progress=said.append, **{**kw, "seed": 8})
    assert stale.resumed_batches == 0 and any("ignoring" in m for m in said)
    np.testing.assert_array_equal(stale.distances["linf"], other.distances["linf"])
    bad = _MemoryCheckpoint()
    bad.blob = b"not a checkpoint"
    assert A.run_attack(net, x, y, "pgd-linf", checkpoint=bad, **kw).resumed_batches == 0


def test_attack_progress_round_trip():
    inf = np.inf
    p = A.AttackProgress("id", np.array([[[1.0, inf, 0.5, 0.1]]]), np.array([[3]]),
                         [{"params": {"steps": 3, "abs_stepsize": None}, "repeat": 0, "seconds": 0.5}], 2,
                         np.full((1, 4), inf), np.zeros(1, np.int64), 1, 0, 0.25, 2, 1.5, 5)
    q = A.AttackProgress.from_bytes(p.to_bytes())
    for f in ("runs_d", "runs_used", "d_run", "used"):
        np.testing.assert_array_equal(getattr(q, f), getattr(p, f))
    assert q.tried == p.tried and [getattr(q, k) for k in q.SCALARS] == [getattr(p, k) for k in p.SCALARS]
