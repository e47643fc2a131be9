"""compute/evaluation/noise.py: reproducible noise, identical noisy images for every model, clipping, and the
accuracy against a direct numpy computation."""
import numpy as np
import pytest
import torch

from neuralreg_schema.compute.evaluation import noise


class Recorder(torch.nn.Module):
    """A linear classifier on the mean of the left and right image halves; keeps every input."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        h = x.shape[-1] // 2
        feats = torch.stack([x[..., :h].mean(dim=(1, 2, 3)), x[..., h:].mean(dim=(1, 2, 3))], 1)
        return feats @ self.w.T, {}


def _data(n=50, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int64)
    x = rng.uniform(60, 120, (n, 8, 8))
    x[labels == 0, :, :4] += 8
    x[labels == 1, :, 4:] += 8
    return np.clip(x, 0, 255).astype(np.uint8), labels


def test_accuracy_matches_numpy_and_noise_is_reproducible_and_clipped():
    images, labels = _data()
    sigmas = [0.0, 0.05, 0.5]
    net = Recorder()
    acc, correct = noise.noise_accuracy(net, images, labels, sigmas, seed=3, batch_size=16)
    z = np.random.default_rng(3).standard_normal((len(images), 8, 8), dtype=np.float32)
    for i, s in enumerate(sigmas):
        x = np.clip(images / np.float32(255) + np.float32(s) * z, 0, 1)
        left, right = x[..., :4].mean(axis=(1, 2)), x[..., 4:].mean(axis=(1, 2))
        pred = np.where(left - right > right - left, 0, 1)
        np.testing.assert_array_equal(correct[i], pred == labels)
        assert acc[i] == pytest.approx(np.mean(pred == labels))
    seen = torch.cat(net.seen)
    assert float(seen.min()) == 0.0 and float(seen.max()) == 1.0         # sigma 0.5 is clipped on both sides
    again = noise.noise_accuracy(Recorder(), images, labels, sigmas, seed=3, batch_size=7)[1]
    np.testing.assert_array_equal(again, correct)                         # batch size does not matter
    other = noise.noise_accuracy(Recorder(), images, labels, sigmas, seed=4)[1]
    assert not np.array_equal(other[1:], correct[1:])
    assert acc[0] > 0.9 and acc[2] < acc[0]


def test_every_model_sees_the_same_noisy_images():
    images, labels = _data(n=10)
    a, b = Recorder(), Recorder()
    with torch.no_grad():
        b.w.mul_(-1)
    noise.noise_accuracy(a, images, labels, [0.1], seed=0)
    noise.noise_accuracy(b, images, labels, [0.1], seed=0)
    torch.testing.assert_close(torch.cat(a.seen), torch.cat(b.seen), rtol=0, atol=0)


@pytest.mark.parametrize("sigmas, message", [([], "non-empty"), ([0.1, -0.1], ">= 0"), ([0.1, 0.1], "distinct"),
                                              ([float("nan")], "finite")])
def test_bad_sigmas(sigmas, message):
    with pytest.raises(ValueError, match=message):
        noise.check_sigmas(sigmas)


def test_bad_images():
    images, labels = _data(n=4)
    with pytest.raises(ValueError, match="uint8"):
        noise.noise_accuracy(Recorder(), images.astype(np.float32), labels, [0.0])
    with pytest.raises(ValueError, match="labels"):
        noise.noise_accuracy(Recorder(), images, labels[:3], [0.0])
