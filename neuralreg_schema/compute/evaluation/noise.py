"""Accuracy under additive Gaussian noise (paper Fig. 4). Pure numpy/torch; never imports datajoint.

x_noisy = clip(x + sigma * z, 0, 1) for images x in [0, 1] (uint8 / 255), with one standard-normal
image z per test image drawn from `numpy.random.default_rng(seed)` in test-set order: every model is
scored on identical noisy images, and the same z is scaled for every sigma (so accuracies of one
model at neighbouring levels are paired too). The paper does not list its noise levels; the default
spans clean to strong on [0, 1] grayscale images (at sigma 0.1 an unregularized CIFAR ResNet is
near chance).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..common.modes import eval_mode

DEFAULT_SIGMAS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10)
# named level sets: 'default' for CIFAR; 'wide' for high-contrast images such as the offline stand-in
# (handwritten digits barely change below sd 0.1)
LEVELS = {"default": DEFAULT_SIGMAS, "wide": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)}


def check_sigmas(sigmas: Sequence[float]) -> list[float]:
    """Sorted distinct non-negative finite noise sds; ValueError otherwise."""
    values = [float(s) for s in sigmas]
    if not values or any(not np.isfinite(s) or s < 0 for s in values):
        raise ValueError(f"noise sds must be a non-empty list of finite numbers >= 0, got {list(sigmas)!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"noise sds must be distinct, got {values}")
    return sorted(values)


def noise_images(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    """float32 (n, H, W) standard normal: the z of the module docstring."""
    return np.random.default_rng(int(seed)).standard_normal((n, *shape), dtype=np.float32)


@torch.no_grad()
def noise_accuracy(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray, sigmas: Sequence[float], *,
                   seed: int = 0, batch_size: int = 500, device=None) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy per sigma (S,), correct (S, N) bool) of `net` (in eval mode for the call, every
    module's mode restored after: modes.eval_mode; forward returns logits or (logits, ...)) on uint8
    (N, H, W) `images` with additive Gaussian noise of each sd."""
    sigmas = check_sigmas(sigmas)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{len(images)} images but labels of shape {labels.shape}")
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    z = noise_images(len(images), images.shape[1:], seed)
    correct = np.zeros((len(sigmas), len(images)), dtype=bool)
    with eval_mode(net):
        for s in range(0, len(images), batch_size):
            x = torch.as_tensor(images[s:s + batch_size]).to(dev).float().div_(255.0)[:, None]
            zz = torch.as_tensor(z[s:s + batch_size]).to(dev)[:, None]
            y = torch.as_tensor(labels[s:s + batch_size]).to(dev)
            for i, sigma in enumerate(sigmas):
                out = net((x + sigma * zz).clamp_(0.0, 1.0))
                logits = out[0] if isinstance(out, tuple) else out
                correct[i, s:s + batch_size] = (logits.argmax(1) == y).cpu().numpy()
    return correct.mean(axis=1), correct
