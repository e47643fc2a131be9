"""compute/classifier/train.py: schedule, config checks, the BatchNorm handling of the stimulus pass,
Eq. 9's running feature mean (exact start, update, checkpoint), resuming from a checkpoint, the
effect of the similarity loss on held-out pairs, and bad input."""
import copy

import numpy as np
import pytest
import torch

from neuralreg_schema.compute.common import modes
from neuralreg_schema.compute.similarity import rsa
from neuralreg_schema.compute.classifier import network as clf_network, recipes, train as tc
from neuralreg_schema.compute.classifier.data import ClassificationData
from tests.helpers import MemoryCheckpoint


def _data(n_train=192, n_test=64, seed=0):
    """Two classes of 32x32 images a ResNet separates quickly: bright left half vs bright right half."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 2, n).astype(np.int64)
        x = rng.uniform(0, 90, (n, 32, 32))
        x[labels == 0, :, :16] += 120
        x[labels == 1, :, 16:] += 120
        return np.clip(x, 0, 255).astype(np.uint8), labels

    tr, te = make(n_train), make(n_test)
    return ClassificationData("toy", tr[0], tr[1], te[0], te[1], ["left", "right"], "generated in the test")


def _target(n=64, seed=1):
    """Stimuli built from 3 smooth patterns with random weights; the target is the similarity of the
    weights, a strongly structured matrix the network can learn to reproduce."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:36, 0:64]
    patterns = np.stack([np.sin(xx / 5.0), np.cos(yy / 4.0), np.sin((xx + yy) / 7.0)])
    coef = rng.normal(size=(n, 3))
    images = np.tensordot(coef, patterns, axes=1)
    images = (images - images.min()) / (images.max() - images.min())
    matrix = rsa.similarity(coef).astype(np.float32)
    return tc.SimilarityTarget(images.astype(np.float32), matrix, np.arange(n, dtype=np.int64), "patterns")


def _cfg(**kw):
    return {**recipes.default_config("tiny"), "max_train": 0, "batch_size": 32, **kw}


def test_paper_learning_rate_schedule():
    cfg = recipes.check_config(recipes.default_config("paper"))
    lrs = [recipes.learning_rate(cfg, e) for e in range(40)]
    assert lrs[:4] == [0.1] * 4
    assert lrs[4] == pytest.approx(0.03) and lrs[8] == pytest.approx(0.009) and lrs[19] == pytest.approx(0.1 * 0.3 ** 4)
    assert lrs[20] == 0.1 and lrs[24] == pytest.approx(0.03) and lrs[39] == pytest.approx(0.1 * 0.3 ** 4)
    assert cfg["epochs"] == 40 and cfg["batch_size"] == 64 and cfg["alpha"] == 20 and cfg["layers"] == [1, 5, 9, 13, 17]
    # as many stimulus images per step as classification images (the paper's 64)
    assert cfg["stim_batch"] == cfg["batch_size"] == 64
    assert recipes.check_config({**recipes.default_config("paper"), "arch": "resnet34"})["layers"] == [1, 9, 17, 25, 33]


def test_config_checks():
    with pytest.raises(ValueError, match="unknown classifier config keys"):
        recipes.check_config({"alhpa": 1})
    with pytest.raises(ValueError, match="feature layer 18"):
        recipes.check_config({"layers": [1, 18]})
    assert recipes.check_config({"arch": "resnet34", "layers": [33]})["layers"] == [33]
    with pytest.raises(ValueError, match="stim_batch"):
        recipes.check_config({"stim_batch": 1})
    with pytest.raises(ValueError, match="alpha"):
        recipes.check_config({"alpha": -1})
    with pytest.raises(ValueError, match="stimulus_bn"):
        recipes.check_config({"stimulus_bn": "train"})
    with pytest.raises(ValueError, match="center_momentum"):
        recipes.check_config({"center_momentum": 0})
    with pytest.raises(ValueError, match="'uniform'"):
        recipes.check_config({"layers": "even"})
    # "uniform" is resolved, so that stored (content-addressed) configs list the layers
    assert recipes.check_config({"arch": "resnet34", "layers": "uniform"})["layers"] == [1, 9, 17, 25, 33]
    assert recipes.check_config({})["layers"] == [1, 5, 9, 13, 17]
    with pytest.raises(KeyError, match="unknown classifier config"):
        recipes.default_config("nope")


@pytest.mark.parametrize("mode", ["batch", "eval"])
def test_stimulus_pass_does_not_touch_batchnorm_statistics(mode):
    """A step with the similarity loss leaves the running statistics exactly where the same step
    without it leaves them (only the classification batch updates them), and BN is back in train mode."""
    torch.manual_seed(0)
    cfg = recipes.check_config(_cfg(stimulus_bn=mode))
    data, target = _data(), _target()
    net = clf_network.ClassifierNet("resnet18", 2, 4)
    twin = copy.deepcopy(net)
    lw = tc.similarity_loss.LayerWeights(cfg["layers"])
    step = tc.StepData(torch.as_tensor(data.train_images)[:, None].float() / 255, torch.as_tensor(data.train_labels),
                       torch.as_tensor(target.images)[:, None], torch.as_tensor(target.matrix))
    idx, stim = torch.arange(32), torch.arange(8)
    mean = tc.similarity_loss.RunningFeatureMean(cfg["layers"], cfg["center_momentum"])
    mean.reset(tc.stimulus_feature_mean(net, step.stim_x, cfg["layers"], cfg))
    before = {k: v.clone() for k, v in mean.center().items()}
    with pytest.raises(ValueError, match="feature mean"):
        tc.train_step(copy.deepcopy(net), lw, tc.make_optimizer(net, lw, cfg), step, idx, stim, cfg, None)
    tc.train_step(net, lw, tc.make_optimizer(net, lw, cfg), step, idx, stim, cfg, None, mean)
    tc.train_step(twin, None, tc.make_optimizer(twin, None, cfg), step, idx, None, cfg, None)
    assert all(not torch.equal(before[k], mean.center()[k]) for k in cfg["layers"])     # updated after the step
    for (name, a), b in zip(net.named_buffers(), twin.buffers()):
        if "running" in name:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(m.training for m in net.modules())
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # ... and the parameters differ: the similarity loss did reach the network and the layer logits
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))
    assert lw.logits.abs().sum() > 0




@pytest.mark.parametrize("mode", ["batch", "eval"])
def test_exact_feature_mean_and_heldout_centre(mode):
    """The start of the running mean is the mean over ALL training stimuli of the features the stimulus
    pass computes (BatchNorm per stimulus_bn, batches of stim_batch); the held-out loss is Eq. 8 with
    the training's final mean as the centre, and the stored network carries that mean."""
    torch.manual_seed(0)
    cfg = recipes.check_config(_cfg(stimulus_bn=mode, stim_batch=8))
    net = clf_network.ClassifierNet("resnet18", 2, 4)
    net.train()
    x = torch.as_tensor(_target(n=20).images)[:, None]
    got = tc.stimulus_feature_mean(net, x, cfg["layers"], cfg)
    with torch.no_grad():
        if mode == "eval":
            with modes.batchnorm_eval(net):
                _, f = net(x, cfg["layers"])
            ref = {k: v.reshape(20, -1).mean(0) for k, v in f.items()}
        else:   # chunks 0-7, 8-15, 16-19 (filled up with 0-3 for BatchNorm, those rows not counted)
            parts = []
            for rows, keep in ((torch.arange(8), 8), (torch.arange(8, 16), 8), (torch.cat([torch.arange(16, 20),
                                                                                          torch.arange(4)]), 4)):
                with modes.batchnorm_batch_stats(net):
                    parts.append(net(x[rows], cfg["layers"])[1])
                parts[-1] = {k: v[:keep].reshape(keep, -1) for k, v in parts[-1].items()}
            ref = {k: torch.cat([p[k] for p in parts]).mean(0) for k in cfg["layers"]}
    for k in cfg["layers"]:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)
    assert all(m.training for m in net.modules())
    # training: the stored network carries the final mean, and the held-out loss is centred by it
    data, target = _data(), _target(n=48)
    result = tc.train_classifier(data, target, {**cfg, "epochs": 1, "heldout_fraction": 0.25}, seed=0)
    mean = clf_network.load_feature_mean(result.state)
    assert sorted(mean) == cfg["layers"]
    _, held = tc.heldout_split(48, 0.25, cfg["heldout_max"])
    net = clf_network.load_classifier(result.state)
    lw = tc.similarity_loss.LayerWeights(cfg["layers"])
    with torch.no_grad():
        lw.logits.copy_(torch.log(torch.as_tensor(result.gamma)))
    loss = tc.heldout_similarity_loss(net, lw.gamma(), torch.as_tensor(target.images[held])[:, None],
                                      torch.as_tensor(target.matrix[np.ix_(held, held)]), cfg["layers"], cfg["clip"],
                                      cfg, mean)
    assert loss == pytest.approx(result.heldout_loss, rel=1e-5)
    assert clf_network.load_feature_mean(tc.train_classifier(data, None, {**cfg, "epochs": 1}, seed=0).state) is None


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run():
    data, target, cfg = _data(), _target(), _cfg(epochs=3)
    whole = tc.train_classifier(data, target, cfg, seed=3)
    memory = MemoryCheckpoint(fail_after=1)
    with pytest.raises(RuntimeError, match="worker killed"):
        tc.train_classifier(data, target, cfg, seed=3, checkpoint=memory)
    memory.fail_after = None
    messages = []
    resumed = tc.train_classifier(data, target, cfg, seed=3, checkpoint=memory, progress=messages.append)
    assert resumed.resumed_from_epoch == 1 and whole.resumed_from_epoch == 0
    assert any("resuming after epoch 1" in m for m in messages)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(whole.history, resumed.history):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert resumed.test_accuracy == whole.test_accuracy
    np.testing.assert_array_equal(resumed.gamma, whole.gamma)
    a, b = clf_network.load_classifier(whole.state), clf_network.load_classifier(resumed.state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    mean_a, mean_b = clf_network.load_feature_mean(whole.state), clf_network.load_feature_mean(resumed.state)   # restored, not redone
    for k in mean_a:
        torch.testing.assert_close(mean_a[k], mean_b[k], rtol=0, atol=0)
    # a checkpoint of another seed is ignored, not resumed
    other = tc.train_classifier(data, target, cfg, seed=4, checkpoint=_memory_holding(memory.blob))
    assert other.resumed_from_epoch == 0


def _memory_holding(blob):
    m = MemoryCheckpoint()
    m.blob = blob
    return m


def test_similarity_loss_lowers_heldout_pair_loss_and_classifier_learns():
    data, target = _data(), _target(n=96)
    cfg = _cfg(epochs=4, alpha=20.0, lr=0.05, lr_step=4, stim_batch=12, heldout_fraction=0.25)
    result = tc.train_classifier(data, target, cfg, seed=0)
    assert result.n_stimuli_heldout == 24 and result.n_stimuli_train == 72 and result.pairs_per_step == 66
    assert result.heldout_loss < 0.7 * result.initial_heldout_loss
    assert result.test_accuracy > 0.8
    assert result.gamma.shape == (5,) and result.gamma.sum() == pytest.approx(1.0, abs=1e-6)
    # without the similarity loss the held-out loss is not tracked and no pairs are drawn
    plain = tc.train_classifier(data, target, {**cfg, "alpha": 0.0}, seed=0)
    assert plain.pairs_per_step == 0 and plain.heldout_loss is None and plain.gamma is None


def test_divergence_raises_training_error():
    with pytest.raises(tc.TrainingError, match="non-finite loss at epoch 1"):
        tc.train_classifier(_data(), _target(), _cfg(lr=1e30, epochs=1), seed=0)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.matrix.__setitem__((0, 1), np.nan), "non-finite"),
    (lambda t: t.matrix.__setitem__((0, 1), 0.9), "not symmetric"),
    (lambda t: setattr(t, "matrix", t.matrix[:-1, :-1]), "must be"),
    (lambda t: setattr(t, "images", t.images * 255), r"in \[0, 1\]"),
    (lambda t: t.matrix.__setitem__((slice(None), slice(None)), 2.0), "outside"),
])
def test_bad_target_is_refused(change, message):
    target = _target()
    change(target)
    with pytest.raises(tc.ClassifierDataError, match=message):
        tc.train_classifier(_data(), target, _cfg(epochs=1), seed=0)


def test_too_few_images_is_refused():
    with pytest.raises(tc.ClassifierDataError, match="fewer than one batch"):
        tc.train_classifier(_data(n_train=20), None, _cfg(epochs=1), seed=0)
