"""bf16 and the similarity loss (compute/classifier/precision.py), with the CPU's bf16 autocast
(`torch.autocast("cpu", dtype=torch.bfloat16)`): the code path a GPU runs under CUDA autocast.

The bound must hold (measured error <= bound) on ordinary and on hostile features; it must call bf16
unsafe where it is (a large common offset that the centring cancels; similarities near 1 under a
bf16 loss), and the measured error must agree there; and the check must be able to fail."""
import pytest
import torch

from neuralreg_schema.compute.classifier import precision


def _case(seed=0, b=8, dims=(64, 200), offset=0.0, spread=1.0, parallel=0.0):
    g = torch.Generator().manual_seed(seed)
    common = {k: torch.randn(d, generator=g) for k, d in enumerate(dims, 1)}
    features = {k: offset + parallel * common[k] + spread * torch.randn(b, d, generator=g).relu()
                for k, d in enumerate(dims, 1)}
    center = {k: v.mean(dim=0) for k, v in features.items()} if not parallel else \
        {k: torch.full((d,), offset) for k, d in enumerate(dims, 1)}
    m = (torch.randn(b, b, generator=g) * 0.3).clamp(-0.9, 0.9)
    target = ((m + m.T) / 2).fill_diagonal_(1.0)
    if parallel:                       # a target near the features' own (high) similarity
        target = torch.full((b, b), 0.99).fill_diagonal_(1.0)
    logits = torch.randn(len(dims), generator=g) * 0.1
    return features, target, logits, center


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["features", "loss"])
def test_the_bound_holds_on_ordinary_features(seed, mode):
    features, target, logits, center = _case(seed)
    r = precision.compare(features, target, logits, center=center, mode=mode, device="cpu")
    assert r["bound_holds"], r
    assert r["loss_rel"] <= r["bound_loss_rel_bound"] + 1e-5
    if mode == "features":             # what trains on a GPU: bf16 features, float32 loss
        assert r["safe"], r
        assert r["loss_rel"] < 1e-3 and r["grad_features_rel"] < precision.GRAD_TOL


def test_a_large_common_offset_is_unsafe_and_really_is():
    """Features 1000 + O(1): bf16 spaces values near 1000 by 4, so the centred features are noise."""
    features, target, logits, center = _case(1, offset=1000.0, spread=1.0)
    r = precision.compare(features, target, logits, center=center, mode="features", device="cpu")
    assert r["bound_max_offset"] > 100
    assert not r["safe"] and r["bound_loss_rel_bound"] > precision.LOSS_TOL
    assert r["loss_rel"] > precision.LOSS_TOL                     # the measurement agrees
    assert r["bound_holds"], r


def test_similarities_near_one_make_a_bf16_loss_unsafe():
    """Nearly parallel centred features (S ~ 0.99): arctanh's slope 1 / (1 - S^2) ~ 50 turns bf16's
    spacing of 2^-8 near 1 into a large error of z; the float32 loss on bf16 features stays safe."""
    features, target, logits, center = _case(2, parallel=30.0, spread=0.1)
    loss_mode = precision.compare(features, target, logits, center=center, mode="loss", device="cpu")
    assert loss_mode["bound_max_abs_S"] > 0.95
    assert not loss_mode["safe"] and loss_mode["loss_rel"] > precision.LOSS_TOL
    assert loss_mode["bound_holds"], loss_mode
    as_trained = precision.compare(features, target, logits, center=center, mode="features", device="cpu")
    assert as_trained["bound_holds"], as_trained
    assert as_trained["loss_rel"] < loss_mode["loss_rel"]


def test_the_check_fails_when_rounding_exceeds_the_bound(monkeypatch):
    """A bound for a finer format than the one that ran (here: 2^-20 instead of bf16's 2^-9) is
    exceeded, and compare says so: the comparison can fail."""
    features, target, logits, center = _case(3)
    monkeypatch.setattr(precision, "U_BF16", 2.0 ** -20)
    r = precision.compare(features, target, logits, center=center, mode="loss", device="cpu")
    assert not r["bound_holds"], r


def test_autocast_really_rounds_the_loss_on_the_cpu():
    """The 'loss' mode runs Eq. 9's Gram matrix under the CPU's bf16 autocast: its loss differs from
    float32 by more than float32 rounding (so the test above is not vacuous)."""
    features, target, logits, center = _case(4)
    r = precision.compare(features, target, logits, center=center, mode="loss", device="cpu")
    assert r["loss_bf16"] != r["loss_fp32"] and r["loss_rel"] > 1e-5


def test_batch_centring_and_bad_mode():
    features, target, logits, _ = _case(5)
    r = precision.compare(features, target, logits, center="batch", mode="features", device="cpu")
    assert r["bound_holds"] and r["safe"]
    with pytest.raises(ValueError, match="mode"):
        precision.predicted_error(features, target, torch.softmax(logits, 0), center="batch", mode="fp8")


def test_network_check_on_a_small_classifier():
    torch.manual_seed(0)
    rows = precision.network_check("tiny", "cpu", n_stim=6)
    assert [r["mode"] for r in rows] == ["features", "loss"]
    assert all(r["recipe"] == "tiny" and r["stim_batch"] == 6 and r["bound_holds"] for r in rows)
    assert rows[0]["safe"]
