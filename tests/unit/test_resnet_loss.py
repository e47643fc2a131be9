"""CIFAR ResNet18/34 with numbered feature layers and their uniform choice, and the similarity loss
(Eqs. 7-10) against direct numpy computations, Eq. 9 centred by the mean over all stimulus images;
gradients (to the network, not to the detached mean); the running feature mean; the loss floor of
the centrings on synthetic data; a tiny optimisation that lowers the loss on held-out pairs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralreg_schema.compute.classifier import centering, recipes as clf_recipes, similarity_loss
from neuralreg_schema.compute.classifier import resnet
from neuralreg_schema.compute.classifier.resnet import build_resnet, conv_layer_names


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(b=4, seed=0, size=32):
    return torch.randn(b, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# the network

@pytest.mark.parametrize("arch,n_convs", [("resnet18", 17), ("resnet34", 33)])
def test_logits_and_conv_count(arch, n_convs):
    torch.manual_seed(0)
    model = build_resnet(arch, num_classes=10, width=8)
    logits, feats = model(_batch())
    assert logits.shape == (4, 10) and feats == {}
    assert model.n_conv_layers == n_convs
    names = conv_layer_names(model)
    assert len(names) == n_convs and len(set(names)) == n_convs
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], torch.nn.Conv2d) for n in names)
    # every main-path conv is numbered; the only convs left out are the three 1x1 shortcuts
    all_convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(set(all_convs) - set(names)) == [f"layer{s}.0.shortcut.0" for s in (2, 3, 4)]
    assert [n for n in all_convs if n in names] == names                      # forward order


def test_default_width_and_channels():
    model = build_resnet(num_classes=100, in_channels=3)
    logits, feats = model(torch.randn(2, 3, 32, 32), feature_layers=(17,))
    assert logits.shape == (2, 100) and feats[17].shape == (2, 512, 4, 4)
    assert resnet.stage_output_layers(model) == resnet.PAPER_LAYERS
    assert resnet.stage_output_layers(build_resnet("resnet34", num_classes=2, width=4)) == \
        (1, 7, 15, 27, 33)


def test_uniform_layers():
    """K uniformly located convolutions: the paper's 1/5/9/13/17 for ResNet18; for ResNet34 every 8th
    conv from the stem to the last, all block outputs, one in stage 4 (the stage outputs of ResNet18's
    numbers would leave stage 4 of ResNet34 out)."""
    assert resnet.uniform_layers("resnet18") == resnet.PAPER_LAYERS == (1, 5, 9, 13, 17)
    assert resnet.uniform_layers("resnet34") == (1, 9, 17, 25, 33)
    model34 = build_resnet("resnet34", num_classes=2, width=2)
    assert resnet.uniform_layers(model34) == (1, 9, 17, 25, 33)
    names = conv_layer_names(model34)
    assert [names[k - 1] for k in resnet.uniform_layers(model34)] == \
        ["conv1", "layer2.0.conv2", "layer3.0.conv2", "layer3.4.conv2", "layer4.2.conv2"]
    assert resnet.uniform_layers("resnet34", 3) == (1, 17, 33)
    assert resnet.uniform_layers("resnet34", 4) == (1, 12, 22, 33)          # 11.67 and 22.33 rounded
    assert resnet.uniform_layers("resnet18", 1) == (17,)
    for arch, n in (("resnet18", 17), ("resnet34", 33)):
        for k in range(2, 8):
            layers = resnet.uniform_layers(arch, k)
            assert len(layers) == k and layers[0] == 1 and layers[-1] == n and list(layers) == sorted(set(layers))
            gaps = np.diff(layers)
            assert gaps.max() - gaps.min() <= 1                               # as even as integers allow
    with pytest.raises(ValueError):
        resnet.uniform_layers("resnet34", 34)
    with pytest.raises(ValueError, match="unknown arch"):
        resnet.uniform_layers("resnet50")
    # the classifier config resolves "uniform" per arch into the explicit list
    assert clf_recipes.check_config({"arch": "resnet34"})["layers"] == [1, 9, 17, 25, 33]
    assert clf_recipes.check_config({"arch": "resnet18", "layers": "uniform"})["layers"] == [1, 5, 9, 13, 17]


def test_paper_layers_shapes():
    torch.manual_seed(0)
    model = build_resnet("resnet18", num_classes=10, width=8)
    _, feats = model(_batch(), feature_layers=[17, 1, 5, 9, 13])
    assert sorted(feats) == [1, 5, 9, 13, 17]
    expected = {1: (8, 32), 5: (8, 32), 9: (16, 16), 13: (32, 8), 17: (64, 4)}
    for k, (c, s) in expected.items():
        assert feats[k].shape == (4, c, s, s), k
        assert (feats[k] >= 0).all()                                    # rectified outputs


def test_invalid_layers():
    model = build_resnet("resnet18", num_classes=10, width=4)
    for bad in [(0,), (18,), (1, 18), (-1,), (2.5,)]:
        with pytest.raises(ValueError, match=r"1\.\.17"):
            model(_batch(2), feature_layers=bad)
    model34 = build_resnet("resnet34", num_classes=10, width=4)
    model34(_batch(2), feature_layers=(33,))
    with pytest.raises(ValueError, match=r"1\.\.33"):
        model34(_batch(2), feature_layers=(34,))
    with pytest.raises(ValueError, match="unknown arch"):
        build_resnet("resnet50", num_classes=10)


@pytest.mark.parametrize("train", [False, True])
def test_features_match_manual_forward(train):
    torch.manual_seed(1)
    model = build_resnet("resnet18", num_classes=10, width=8)
    x = _batch(6, seed=3)
    # give BN non-trivial running statistics and affine parameters
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.train(train)
    with torch.no_grad():
        logits, feats = model(x, feature_layers=(1, 2, 5, 8, 9))

        def bn(m, t):
            if train:
                mean, var = t.mean(dim=(0, 2, 3)), t.var(dim=(0, 2, 3), unbiased=False)
            else:
                mean, var = m.running_mean, m.running_var
            return ((t - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + m.eps)
                    * m.weight[None, :, None, None] + m.bias[None, :, None, None])

        def conv(m, t):
            return F.conv2d(t, m.weight, stride=m.stride, padding=m.padding)

        h1 = F.relu(bn(model.bn1, conv(model.conv1, x)))                        # layer 1
        b = model.layer1[0]
        h2 = F.relu(bn(b.bn1, conv(b.conv1, h1)))                               # layer 2
        h3 = F.relu(bn(b.bn2, conv(b.conv2, h2)) + h1)                          # layer 3
        b = model.layer1[1]
        h5 = F.relu(bn(b.bn2, conv(b.conv2, F.relu(bn(b.bn1, conv(b.conv1, h3))))) + h3)
        b = model.layer2[0]                                                     # strided, 1x1 shortcut
        h6 = F.relu(bn(b.bn1, conv(b.conv1, h5)))
        sc = bn(b.shortcut[1], conv(b.shortcut[0], h5))
        h7 = F.relu(bn(b.bn2, conv(b.conv2, h6)) + sc)
        b = model.layer2[1]
        h8 = F.relu(bn(b.bn1, conv(b.conv1, h7)))
        h9 = F.relu(bn(b.bn2, conv(b.conv2, h8)) + h7)
    for k, ref in {1: h1, 2: h2, 5: h5, 8: h8, 9: h9}.items():
        torch.testing.assert_close(feats[k], ref, rtol=1e-4, atol=1e-5, msg=f"layer {k}")


# ------------------------------------------------------------------------------------------------
# Eqs. 8-10 against numpy

def _np_mean(f):
    """The mean over the images (rows) with an explicit loop."""
    f = np.asarray(f, dtype=np.float64).reshape(len(f), -1)
    mean = np.zeros(f.shape[1])
    for row in f:
        mean += row
    return mean / len(f)


def _np_similarity(f, mean=None):
    """Eq. 9 with explicit loops: f centred by `mean` (default: the mean of the rows of f)."""
    f = np.asarray(f, dtype=np.float64).reshape(len(f), -1)
    mean = _np_mean(f) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
    units = []
    for row in f:
        c = row - mean
        units.append(c / np.sqrt(np.sum(c * c)))
    s = np.empty((len(f), len(f)))
    for i in range(len(f)):
        for j in range(len(f)):
            s[i, j] = np.sum(units[i] * units[j])
    return s


def _np_loss(feats, target, gamma, clip=0.999, means=None):
    keys = sorted(feats)
    s = sum(g * _np_similarity(feats[k], None if means is None else means[k]) for g, k in zip(gamma, keys))
    b = len(target)
    terms = []
    for i in range(b):
        for j in range(i + 1, b):
            a = np.arctanh(np.clip(s[i, j], -clip, clip))
            t = np.arctanh(np.clip(target[i, j], -clip, clip))
            terms.append((a - t) ** 2)
    assert len(terms) == b * (b - 1) // 2
    return float(np.mean(terms))


def test_feature_similarity_centred_over_all_stimuli_matches_numpy():
    """Eq. 9 as the paper writes it: a batch of 8 of 40 stimuli, centred by f_bar = E_i f_i over all 40."""
    g = torch.Generator().manual_seed(5)
    everything = torch.randn(40, 3, 4, 5, generator=g, dtype=torch.float64) + 2.0
    batch = everything[torch.randperm(40, generator=g)[:8]]
    mean_all = _np_mean(everything.numpy())
    expected = _np_similarity(batch.numpy(), mean_all)
    center = torch.as_tensor(mean_all)
    s = similarity_loss.feature_similarity(batch, center)
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.diag(s.numpy()), 1.0, atol=1e-12)
    np.testing.assert_allclose(s.numpy(), s.numpy().T, atol=1e-15)
    # the centre may come in one image's feature shape; a shared offset of features and centre cancels
    torch.testing.assert_close(similarity_loss.feature_similarity(batch, center.reshape(3, 4, 5)), s)
    torch.testing.assert_close(similarity_loss.feature_similarity(3 * batch - 7, 3 * center - 7), s)
    # it is not the batch-centred similarity, whose mean off-diagonal is -1/(B-1) by construction
    # (exactly when the centred rows have equal norms: sum_ij S_ij = |sum_i e_i|^2 ~ 0)
    s_batch = similarity_loss.feature_similarity(batch, "batch")
    off = ~torch.eye(8, dtype=torch.bool)
    assert s_batch[off].mean().item() == pytest.approx(-1 / 7, abs=0.01)
    assert abs(s[off].mean().item() - s_batch[off].mean().item()) > 0.05
    np.testing.assert_allclose(s_batch.numpy(), _np_similarity(batch.numpy()), rtol=1e-12, atol=1e-12)
    # over ALL the stimuli, "batch" is Eq. 9 itself
    torch.testing.assert_close(similarity_loss.feature_similarity(everything, "batch"),
                               similarity_loss.feature_similarity(everything, center))
    with pytest.raises(ValueError):
        similarity_loss.feature_similarity(batch[:1], center)
    with pytest.raises(ValueError, match="60 per image"):
        similarity_loss.feature_similarity(batch, center[:10])
    with pytest.raises(ValueError, match="'batch'"):
        similarity_loss.feature_similarity(batch, "mean")


def test_similarity_loss_matches_numpy():
    """Eq. 8 over the pairs of a batch of 6 of 30 stimuli, each layer centred by its mean over all 30."""
    rng = np.random.default_rng(11)
    n, b = 30, 6
    every = {1: rng.normal(size=(n, 4, 3, 3)), 5: rng.normal(size=(n, 10)) + 1.0,
             9: rng.normal(size=(n, 2, 5))}
    means = {k: _np_mean(v) for k, v in every.items()}
    center = {k: torch.tensor(v) for k, v in means.items()}
    idx = rng.permutation(n)[:b]
    feats = {k: v[idx] for k, v in every.items()}
    target = _np_similarity(rng.normal(size=(n, 8)))[np.ix_(idx, idx)]
    logits = torch.tensor([0.3, -1.0, 0.8], dtype=torch.float64)
    gamma = torch.softmax(logits, 0)
    tfeats = {k: torch.tensor(v) for k, v in feats.items()}
    loss = similarity_loss.similarity_loss(tfeats, torch.tensor(target), gamma, center=center)
    expected = _np_loss(feats, target, gamma.numpy(), means=means)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # the batch-centred loss (explicit "batch") is the numpy loss with the batch's own mean
    batch_loss = similarity_loss.similarity_loss(tfeats, torch.tensor(target), gamma, center="batch")
    assert batch_loss.item() == pytest.approx(_np_loss(feats, target, gamma.numpy()), rel=1e-10)
    assert abs(batch_loss.item() - expected) > 1e-3
    # Eq. 10 combines similarities BEFORE the arctanh: not the gamma-weighted per-layer losses
    per_layer = sum(g * _np_loss({k: feats[k]}, target, [1.0], means=means)
                    for g, k in zip(gamma.numpy(), sorted(feats)))
    assert abs(per_layer - expected) > 1e-3
    # only the upper triangle of the target is read
    lower = np.tril(rng.uniform(-1, 1, size=(b, b)), -1)
    loss2 = similarity_loss.similarity_loss(tfeats, torch.tensor(np.triu(target) + lower), gamma, center=center)
    assert loss2.item() == pytest.approx(expected, rel=1e-10)
    # a pair mask averages over the chosen pairs i < j only
    mask = torch.zeros(b, b, dtype=torch.bool)
    mask[0, 1] = mask[2, 5] = mask[4, 3] = True                       # (4, 3) is below: ignored
    s = sum(g * _np_similarity(feats[k], means[k]) for g, k in zip(gamma.numpy(), sorted(feats)))
    ref = np.mean([(np.arctanh(s[i, j]) - np.arctanh(target[i, j])) ** 2 for i, j in [(0, 1), (2, 5)]])
    got = similarity_loss.similarity_loss(tfeats, torch.tensor(target), gamma, center=center, pair_mask=mask)
    assert got.item() == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ValueError):
        similarity_loss.similarity_loss(tfeats, torch.tensor(target), gamma[:2], center=center)
    with pytest.raises(ValueError):
        similarity_loss.similarity_loss(tfeats, torch.tensor(target[:5, :5]), gamma, center=center)
    with pytest.raises(ValueError, match="layer 9"):
        similarity_loss.similarity_loss(tfeats, torch.tensor(target), gamma, center={1: center[1], 5: center[5]})
    with pytest.raises(TypeError):
        similarity_loss.similarity_loss(tfeats, torch.tensor(target), gamma)        # no silent default centre


def test_clipping_keeps_loss_finite():
    # two stimuli centred by their own mean: exactly anti-parallel, S_01 = -1; target +1
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    loss = similarity_loss.similarity_loss({1: f}, target, torch.ones(1, dtype=torch.float64), center="batch")
    z = np.arctanh(0.999)
    assert torch.isfinite(loss) and loss.item() == pytest.approx((2 * z) ** 2, rel=1e-9)
    loss.backward()
    assert torch.isfinite(f.grad).all()
    loss = similarity_loss.similarity_loss({1: f.detach()}, target, torch.ones(1, dtype=torch.float64),
                                     center={1: f.detach().mean(0)}, clip=0.9)
    assert loss.item() == pytest.approx((2 * np.arctanh(0.9)) ** 2, rel=1e-9)
    # a degenerate (centred to zero) feature row gives a finite similarity of 0, not NaN
    s = similarity_loss.feature_similarity(torch.zeros(3, 4), "batch")
    assert torch.isfinite(s).all()
    s = similarity_loss.feature_similarity(torch.ones(3, 4), torch.ones(4))
    assert torch.isfinite(s).all()
    with pytest.raises(ValueError):
        similarity_loss.similarity_loss({1: f}, target, torch.ones(1, dtype=torch.float64), center="batch", clip=1.0)


def test_total_loss():
    assert similarity_loss.total_loss(torch.tensor(1.5), torch.tensor(0.25), 20).item() == 6.5
    with pytest.raises(ValueError):
        similarity_loss.total_loss(torch.tensor(1.0), torch.tensor(1.0), -1)


def test_layer_weights_equal_at_init():
    w = similarity_loss.LayerWeights(resnet.PAPER_LAYERS)
    assert w.layers == (1, 5, 9, 13, 17)
    torch.testing.assert_close(w.gamma(), torch.full((5,), 0.2))
    assert similarity_loss.LayerWeights(3).gamma().sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        similarity_loss.LayerWeights([1, 1])


# ------------------------------------------------------------------------------------------------
# gradients and a tiny optimisation

def test_gradients_reach_gamma_and_network():
    torch.manual_seed(2)
    model = build_resnet("resnet18", num_classes=10, width=4)
    weights = similarity_loss.LayerWeights(resnet.PAPER_LAYERS)
    x = _batch(6, seed=4)
    target = similarity_loss.feature_similarity(torch.randn(6, 5, generator=torch.Generator().manual_seed(9)), "batch")
    # the centre: the features' mean over more stimuli (24), computed without a graph, as training does
    with torch.no_grad():
        _, every = model(_batch(24, seed=5), feature_layers=resnet.PAPER_LAYERS)
    mean = similarity_loss.RunningFeatureMean(resnet.PAPER_LAYERS, 0.1)
    mean.reset({k: v.mean(0) for k, v in every.items()})
    logits, feats = model(x, feature_layers=resnet.PAPER_LAYERS)
    sim = similarity_loss.similarity_loss(feats, target, weights.gamma(), center=mean.center())
    task = F.cross_entropy(logits, torch.arange(6) % 10)
    similarity_loss.total_loss(task, sim, 20.0).backward()
    assert weights.logits.grad is not None and weights.logits.grad.abs().sum() > 0
    assert model.conv1.weight.grad.abs().sum() > 0
    assert model.layer4[1].conv2.weight.grad.abs().sum() > 0              # reached through layer 17
    assert model.fc.weight.grad.abs().sum() > 0
    # the similarity term alone also reaches the convolutions (not the fc head)
    model.zero_grad()
    weights.zero_grad()
    _, feats = model(x, feature_layers=resnet.PAPER_LAYERS)
    similarity_loss.similarity_loss(feats, target, weights.gamma(), center=mean.center()).backward()
    assert model.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.fc.weight.grad is None or model.fc.weight.grad.abs().sum() == 0


def test_gradient_flows_to_features_not_to_the_centre():
    """The centre is detached: a centre that requires grad gets none, the features get the gradient of
    Eq. 9 with the centre held fixed (finite differences)."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    center = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    target = similarity_loss.feature_similarity(torch.randn(5, 4, generator=g, dtype=torch.float64), "batch")
    gamma = torch.ones(1, dtype=torch.float64)
    similarity_loss.similarity_loss({1: f}, target, gamma, center={1: center}).backward()
    assert center.grad is None
    assert f.grad is not None and f.grad.abs().sum() > 0
    fixed = center.detach()
    assert torch.autograd.gradcheck(
        lambda x: similarity_loss.similarity_loss({1: x}, target, gamma, center={1: fixed}), (f.detach().requires_grad_(),))


def test_running_feature_mean():
    mean = similarity_loss.RunningFeatureMean([5, 1], momentum=0.25)
    assert mean.layers == (1, 5) and not mean.ready
    with pytest.raises(RuntimeError, match="reset"):
        mean.center()
    g = torch.Generator().manual_seed(0)
    start = {1: torch.randn(2, 3, generator=g), 5: torch.randn(4, generator=g)}
    mean.reset(start)
    assert mean.center()[1].shape == (6,) and mean.center()[1].dtype == torch.float32
    batch = {1: torch.randn(8, 2, 3, generator=g, requires_grad=True), 5: torch.randn(8, 4, generator=g)}
    mean.update(batch)
    torch.testing.assert_close(mean.center()[1], 0.75 * start[1].reshape(-1) + 0.25 * batch[1].detach().mean(0).reshape(-1))
    torch.testing.assert_close(mean.center()[5], 0.75 * start[5] + 0.25 * batch[5].mean(0))
    assert not mean.center()[1].requires_grad
    state = mean.state_dict()
    other = similarity_loss.RunningFeatureMean([1, 5], 0.25).load_state_dict(state)
    for k in (1, 5):
        torch.testing.assert_close(other.center()[k], mean.center()[k], rtol=0, atol=0)
    with pytest.raises(ValueError):
        similarity_loss.RunningFeatureMean([1, 5], 0.5).load_state_dict(state)
    with pytest.raises(ValueError):
        similarity_loss.RunningFeatureMean([1], 0)
    with pytest.raises(ValueError):
        mean.reset({1: start[1]})


def test_loss_floor_of_the_centrings():
    """Features equal to the responses that generated a rank-40 target (with noise): the loss the
    centring leaves, relative to predicting S = 0. Centring over the step's batch at the old demo size
    (8 stimuli) is no better than zeros; the running mean over all images is within 10 % of zero loss
    at the recipes' stimulus batches; the exact mean reaches zero."""
    r = centering.synthetic_responses(n_stimuli=600, seed=1)
    for recipe in ("demo", "paper"):
        b = clf_recipes.default_config(recipe)["stim_batch"]
        new = centering.loss_floor(r, b, "running", n_steps=150, momentum=clf_recipes.check_config(
            clf_recipes.default_config(recipe))["center_momentum"])
        assert new["ratio"] <= 0.10, (recipe, b, new)
    old = centering.loss_floor(r, 8, "batch", n_steps=150)
    assert old["ratio"] > 0.9, old
    assert old["mean_s_cnn"] == pytest.approx(-1 / 7, abs=0.005)
    assert abs(old["mean_target"]) < 0.02
    assert centering.loss_floor(r, 8, "all", n_steps=50)["ratio"] < 1e-3


def test_tiny_optimisation_lowers_held_out_pair_loss():
    torch.manual_seed(0)
    model = build_resnet("resnet18", num_classes=10, width=8)
    weights = similarity_loss.LayerWeights(resnet.PAPER_LAYERS)
    b = 16
    x = _batch(b, seed=7)
    # a valid, learnable target: Eq. 9 on coarse (2 x 2 average-pooled) image features
    # (all b images are the whole stimulus set here: "batch" centring is the mean over all of them)
    target = similarity_loss.feature_similarity(F.avg_pool2d(x, 16), "batch")
    g = torch.Generator().manual_seed(8)
    upper = torch.triu(torch.ones(b, b, dtype=torch.bool), 1)
    train_pairs = upper & (torch.rand(b, b, generator=g) < 0.7)
    held_out = upper & ~train_pairs
    opt = torch.optim.Adam(list(model.parameters()) + list(weights.parameters()), lr=1e-2)

    def losses():
        with torch.no_grad():
            _, feats = model(x, feature_layers=resnet.PAPER_LAYERS)
            return (similarity_loss.similarity_loss(feats, target, weights.gamma(), center="batch", pair_mask=m).item()
                    for m in (train_pairs, held_out))

    model.train()
    train0, held0 = losses()
    for _ in range(30):
        opt.zero_grad()
        _, feats = model(x, feature_layers=resnet.PAPER_LAYERS)
        similarity_loss.similarity_loss(feats, target, weights.gamma(), center="batch", pair_mask=train_pairs).backward()
        opt.step()
    train1, held1 = losses()
    assert train1 < 0.5 * train0
    assert held1 < 0.7 * held0, (held0, held1)
    assert not torch.allclose(weights.gamma(), torch.full((5,), 0.2))
