"""The neural predictive model (compute/predictive/network.py) and its trainer (compute/predictive/train.py):
pieces against hand computations, a short training on the 'tiny' simulation, refused input."""
import numpy as np
import pytest
import torch

from neuralreg_schema.compute.predictive import train as tp
from neuralreg_schema.compute.predictive import network as pm
from neuralreg_schema.compute.experiment.simulate import simulate_experiment


# ---------------------------------------------------------------------------------------------
# pieces


def test_poisson_loss_hand_computed():
    pred = torch.tensor([[1.0, 2.0], [0.5, 4.0]])
    target = torch.tensor([[0.0, 3.0], [1.0, 2.0]])
    trial1 = (1.0 - 0.0) + (2.0 - 3.0 * np.log(2.0))
    trial2 = (0.5 - np.log(0.5)) + (4.0 - 2.0 * np.log(4.0))
    got = pm.poisson_loss(pred, target, eps=0.0)
    assert got.item() == pytest.approx((trial1 + trial2) / 2, rel=1e-6)
    assert pm.poisson_loss(pred, target, eps=0.0, reduction="sum").item() == \
        pytest.approx(trial1 + trial2, rel=1e-6)
    assert pm.poisson_loss(pred, target, eps=0.0, reduction="none").shape == (2, 2)


def test_elu1_positive_and_inverse():
    x = torch.linspace(-30, 30, 601)
    y = pm.elu1(x)
    assert torch.all(y > 0)
    assert pm.elu1(torch.tensor(0.0)).item() == 1.0
    rates = torch.tensor([0.01, 0.5, 1.0, 3.0])
    torch.testing.assert_close(pm.elu1(pm.elu1_inverse(rates)), rates)


def _bilinear(fmap, gx, gy):
    """Bilinear value of fmap (H, W) at grid coordinates (gx, gy), align_corners=True."""
    h, w = fmap.shape
    x, y = (gx + 1) / 2 * (w - 1), (gy + 1) / 2 * (h - 1)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    return ((1 - fy) * ((1 - fx) * fmap[y0, x0] + fx * fmap[y0, x1])
            + fy * ((1 - fx) * fmap[y1, x0] + fx * fmap[y1, x1]))


def test_gaussian_readout_reads_bilinear_value_at_mu():
    rng = np.random.default_rng(0)
    fmap = rng.normal(size=(2, 5, 7)).astype(np.float32)     # (channels, H, W)
    readout = pm.GaussianReadout(in_channels=2, n_neurons=3, align_corners=True)
    mu = np.array([[0.25, -0.5], [-1.0, 1.0], [0.1, 0.3]], np.float32)
    weights = np.array([[2.0, 0.5, -1.0], [-1.0, 3.0, 0.25]], np.float32)   # (channels, neurons)
    bias = np.array([0.5, -0.2, 1.0], np.float32)
    with torch.no_grad():
        readout.mu.copy_(torch.from_numpy(mu))
        readout.features.copy_(torch.from_numpy(weights))
        readout.bias.copy_(torch.from_numpy(bias))
        readout.sigma.fill_(0.0)
    x = torch.from_numpy(fmap)[None]
    expected = np.array([sum(weights[c, n] * _bilinear(fmap[c], *mu[n]) for c in range(2)) + bias[n]
                         for n in range(3)])
    got = readout(x, sample=False)[0].detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # sigma = 0: sampling reads at mu too
    np.testing.assert_allclose(readout(x, sample=True)[0].detach().numpy(), expected, rtol=1e-5,
                               atol=1e-5)
    # a shift (grid units) moves every read position by the same amount
    shift = np.array([[0.2, 0.4]], np.float32)
    moved = mu[[0, 2]] + shift
    expected_shifted = [sum(weights[c, n] * _bilinear(fmap[c], *moved[i]) for c in range(2)) + bias[n]
                        for i, n in enumerate([0, 2])]
    got_shifted = readout(x, shift=torch.from_numpy(shift), sample=False)[0].detach().numpy()
    np.testing.assert_allclose(got_shifted[[0, 2]], expected_shifted, rtol=1e-5, atol=1e-5)


def test_gaussian_readout_samples_around_mu_in_training():
    torch.manual_seed(0)
    readout = pm.GaussianReadout(in_channels=4, n_neurons=50, init_sigma=0.2)
    x = torch.randn(8, 4, 6, 9)
    grid = readout.grid(8, sample=True)
    assert grid.shape == (8, 50, 2)
    assert torch.all(grid.abs() <= 1)
    assert not torch.allclose(grid[0], grid[1])       # a position per batch element
    torch.testing.assert_close(readout.grid(8, sample=False), readout.mu.clamp(-1, 1).expand(8, -1, -1))
    assert readout(x, sample=True).shape == (8, 50)


def test_laplace_penalty_matches_numpy():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 2, 5, 5))
    lap = np.zeros_like(w)
    padded = np.pad(w, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(5):
        for j in range(5):
            lap[:, :, i, j] = (4 * padded[:, :, i + 1, j + 1] - padded[:, :, i, j + 1]
                               - padded[:, :, i + 2, j + 1] - padded[:, :, i + 1, j]
                               - padded[:, :, i + 1, j + 2])
    expected = (lap ** 2).sum() / (w ** 2).sum()
    got = pm.laplace_l2norm(torch.from_numpy(w)).item()
    assert got == pytest.approx(expected, rel=1e-10)
    # a constant filter is smooth inside: only its border (zero padding) is penalised
    flat = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    assert pm.laplace_l2norm(flat).item() == pytest.approx((12 * 1 + 4 * 4) / 25)


def test_regularizer_terms():
    cfg = tp.default_config("tiny")
    cfg.update(gamma_input=0.0, gamma_hidden=0.0, gamma_readout=0.25)
    net = pm.PredictiveNetwork(cfg, n_neurons=7)
    with torch.no_grad():
        net.readout.features.uniform_(-1, 1)
    assert net.regularizer().item() == pytest.approx(0.25 * net.readout.features.abs().sum().item(),
                                                     rel=1e-6)
    cfg.update(gamma_input=2.0, gamma_readout=0.0)
    net2 = pm.PredictiveNetwork(cfg, n_neurons=7)
    assert net2.regularizer().item() == pytest.approx(
        2.0 * pm.laplace_l2norm(net2.core.convs[0].weight).item(), rel=1e-6)
    w = torch.randn(4, 3, 3, 3)
    assert pm.group_sparsity(w).item() == pytest.approx(
        w.pow(2).sum(dim=(2, 3)).sqrt().mean().item(), rel=1e-6)


def test_core_skip_connections_and_output_channels():
    core = pm.Core(hidden_channels=4, input_kern=5, hidden_kern=3, layers=3, skip=2)
    assert [c.in_channels for c in core.convs] == [1, 4, 8]
    out = core(torch.randn(2, 1, 18, 32))
    assert out.shape == (2, 12, 14, 28)          # all layers stacked; no padding on layer 0
    no_skip = pm.Core(hidden_channels=4, input_kern=5, hidden_kern=3, layers=3, skip=0, pad_input=True)
    assert [c.in_channels for c in no_skip.convs] == [1, 4, 4]
    assert no_skip(torch.randn(2, 1, 18, 32)).shape == (2, 12, 18, 32)


def test_modulator_and_shifter_at_init():
    torch.manual_seed(0)
    mod = pm.Modulator(n_neurons=11, hidden=8, layers=1)
    gain, offset = mod(torch.randn(5, 3))
    assert offset is None
    torch.testing.assert_close(gain, torch.ones(5, 11))
    with torch.no_grad():
        for p in mod.parameters():
            p.normal_(0, 2.0)
    assert torch.all(mod(torch.randn(5, 3))[0] > 0)
    shifter = pm.Shifter(hidden=5, layers=2)
    torch.testing.assert_close(shifter(torch.randn(6, 2)), torch.zeros(6, 2))


def test_network_standardises_and_outputs_positive_rates():
    torch.manual_seed(0)
    net = pm.PredictiveNetwork(tp.default_config("tiny"), n_neurons=9)
    net.set_statistics(100.0, 50.0, [10, 0, 5], [2, 1, 3], [300, 200], [5, 5], np.full(9, 2.0))
    net.init_bias(torch.full((9,), 3.0))
    net.eval()
    images = torch.rand(4, 36, 64) * 255
    rate = net(images, torch.randn(4, 3), torch.randn(4, 2) + 250)
    assert rate.shape == (4, 9) and torch.all(rate > 0)
    # zero readout weights: the rate is the mean response the bias was set from (gain 1 at init)
    with torch.no_grad():
        net.readout.features.zero_()
    torch.testing.assert_close(net(images, torch.randn(4, 3), torch.randn(4, 2)),
                               torch.full((4, 9), 3.0))


def test_pixel_to_grid_mapping():
    cfg = tp.default_config("demo")            # downsample 2, 'same' padding, align_corners
    net = pm.PredictiveNetwork(cfg, n_neurons=2)
    assert net.feature_shape[1:] == (18, 32)
    got = net.pixel_to_grid(torch.tensor([[0.5, 0.5], [62.5, 34.5], [31.5, 17.5]]))
    torch.testing.assert_close(got, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    cfg.update(pad_input=False, input_kern=7)  # map cropped by 3 downsampled px on each side
    net = pm.PredictiveNetwork(cfg, n_neurons=2)
    assert net.feature_shape[1:] == (12, 26)
    got = net.pixel_to_grid(torch.tensor([[6.5, 6.5], [56.5, 28.5]]))
    torch.testing.assert_close(got, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_energy_positions_find_the_receptive_field():
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.normal(size=(400, 1, 36, 64)).astype(np.float32))
    # neuron 0 responds to the contrast energy around column 20, row 10; neuron 1 around (45, 25)
    yy, xx = np.mgrid[0:36, 0:64]
    responses = []
    for cx, cy in ((20, 10), (45, 25)):
        window = torch.from_numpy(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0 ** 2)))
        responses.append((images[:, 0] ** 2 * window.float()).sum(dim=(1, 2)))
    responses = torch.stack(responses, dim=1)
    xy, peak_r = tp.energy_positions(images, torch.arange(400), responses)
    torch.testing.assert_close(xy, torch.tensor([[20.0, 10.0], [45.0, 25.0]]), atol=1.5, rtol=0)
    assert torch.all(peak_r > 3 / np.sqrt(400))     # the significance threshold of the trainer


def test_correlation_against_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    b[:, 1] += a[:, 1]
    expected = [np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(4)]
    np.testing.assert_allclose(tp.correlation(a, b), expected, rtol=1e-10)
    a[:, 2] = 3.7                      # constant prediction: 0, not NaN
    b[:, 3] = 0.0                      # constant target: 0
    r = tp.correlation(a, b)
    assert r[2] == 0.0 and r[3] == 0.0 and np.all(np.isfinite(r))
    assert isinstance(tp.correlation(a[:, 0], b[:, 0]), float)
    with pytest.raises(ValueError):
        tp.correlation(a, b[:5])


def test_configs_complete_and_copied():
    for name in tp.CONFIGS:
        cfg = tp.default_config(name)
        assert set(cfg) == set(tp.CONFIGS["demo"])
        cfg["lr"] = -1
        assert tp.CONFIGS[name]["lr"] > 0
    with pytest.raises(KeyError):
        tp.default_config("nope")


# ---------------------------------------------------------------------------------------------
# training on the tiny simulation


@pytest.fixture(scope="module")
def tiny():
    exp = simulate_experiment("tiny", 0)
    return exp, tp.PredictiveData.from_recording(exp.image_set, exp.scans[1])


@pytest.fixture(scope="module")
def trained(tiny):
    _, data = tiny
    lines = []
    result = tp.train_predictive(data, tp.default_config("tiny"), seed=0, progress=lines.append,
                                 device="cpu")
    return result, lines


def test_training_on_tiny_profile(tiny, trained):
    exp, data = tiny
    result, lines = trained
    n = data.n_neurons
    assert len(lines) == len(result.history) >= 1 and lines[0].startswith("epoch 1/")
    assert set(result.history[0]) == {"epoch", "train_loss", "val_corr", "lr", "seconds"}
    assert 0 <= result.best_epoch <= len(result.history)
    for scores in (result.val_corr, result.test_corr, result.oracle_corr):
        assert scores.shape == (n,) and np.all(np.isfinite(scores))
    assert result.test_corr.mean() > 0.0
    assert result.predictions.shape == (len(data.images), n)
    assert result.predictions.dtype == np.float32
    assert np.all(np.isfinite(result.predictions)) and np.all(result.predictions > 0)
    assert result.n_parameters > 0 and result.device == "cpu" and result.seconds > 0
    # the denoised responses track the simulator's noise-free responses
    truth = exp.scans[1].ground_truth["noise_free"]
    assert tp.correlation(result.predictions, truth).mean() > 0.0


def test_training_is_deterministic(tiny, trained):
    _, data = tiny
    again = tp.train_predictive(data, tp.default_config("tiny"), seed=0, device="cpu")
    first = trained[0]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in first.history] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in again.history]
    np.testing.assert_array_equal(first.predictions, again.predictions)


def test_load_network_reproduces_predictions(tiny, trained):
    _, data = tiny
    result = trained[0]
    net = tp.load_network(result.state)
    assert not net.training
    n = len(data.images)
    behavior = np.broadcast_to(data.behavior.mean(axis=0), (n, 3))
    eye = np.broadcast_to(data.eye.mean(axis=0), (n, 2))
    np.testing.assert_allclose(tp.predict(net, data.images, behavior, eye, batch_size=37),
                               result.predictions, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# refused input and failed training


def _copy(data, **changes):
    fields = {k: np.array(getattr(data, k), copy=True) for k in
              ("images", "image_ids", "trial_image", "responses", "behavior", "eye", "tiers")}
    fields.update(changes)
    return tp.PredictiveData(**fields)


def test_bad_input_is_refused(tiny):
    _, data = tiny
    cfg = tp.default_config("tiny")
    nan = np.array(data.responses, copy=True)
    nan[3, 2] = np.nan
    tiers = np.asarray(data.tiers)
    cases = {
        "responses contains NaN": _copy(data, responses=nan),
        "train tier is empty": _copy(data, tiers=np.where(tiers == "train", "withheld", tiers)),
        "validation tier is empty": _copy(data, tiers=np.where(tiers == "validation", "train", tiers)),
        "oracle tier is empty": _copy(data, tiers=np.where(tiers == "oracle", "withheld", tiers)),
        "behavior has shape": _copy(data, behavior=data.behavior[:, :2]),
        "images must have shape": _copy(data, images=data.images[:, :30]),
        "trial_image out of range": _copy(data, trial_image=data.trial_image + len(data.images)),
        "unknown tiers": _copy(data, tiers=np.where(tiers == "oracle", "test", tiers)),
    }
    for message, bad in cases.items():
        with pytest.raises(tp.PredictiveDataError, match=message):
            tp.train_predictive(bad, cfg, seed=0, device="cpu")
    with pytest.raises(ValueError, match="unknown predictive config keys"):
        tp.train_predictive(data, {**cfg, "learning_rate": 1.0}, seed=0, device="cpu")


def test_non_finite_loss_raises_training_error(tiny, monkeypatch):
    _, data = tiny
    monkeypatch.setattr(tp, "poisson_loss", lambda pred, target, eps=0.0: pred.sum() * np.nan)
    with pytest.raises(tp.TrainingError, match="epoch 1: the training loss became non-finite"):
        tp.train_predictive(data, tp.default_config("tiny"), seed=0, device="cpu")


def test_diverging_learning_rate_raises_training_error(tiny):
    _, data = tiny
    cfg = tp.default_config("tiny")
    cfg.update(lr=1e30)
    with pytest.raises(tp.TrainingError, match="non-finite"):
        tp.train_predictive(data, cfg, seed=0, device="cpu")
