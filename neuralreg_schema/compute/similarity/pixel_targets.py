"""Known-answer control targets: similarity matrices computed from the stimulus pixels themselves.

They answer one question: does matching a similarity matrix (Eqs. 7-10) transfer a property of the
representation that made the matrix to the classifier at all? Each target comes from a
representation whose robustness to Gaussian noise is known in advance:

    lowpass   Eq. 2 on the Gaussian-blurred pixels, G_sigma * x_i: a representation that white noise
              barely moves (blurring divides the s.d. of white pixel noise by 2 sigma sqrt(pi), ~7x
              at sigma = 2 px), so a classifier pulled towards it should be MORE robust than None
    highpass  Eq. 2 on the fine detail, x_i - G_sigma * x_i: the part of the image white noise
              corrupts most, so a classifier pulled towards it should be LESS robust (or no better)

Both are Eq. 2 exactly as the neural targets: each image's (flattened) vector is centred by the
mean over ALL images of the set (like r-bar over all stimuli), normalised to unit length, and
S_ij = e_i . e_j (`rsa.similarity`, float32, symmetric, unit diagonal).

The blur is separable: a normalised 1-D Gaussian kernel exp(-t^2 / (2 sigma^2)), t = -R..R with
R = ceil(truncate sigma) (truncate 4), run along rows and columns; borders are mirrored with the
edge pixel repeated (numpy 'symmetric', scipy.ndimage 'reflect'). Pure numpy; never imports
datajoint.
"""
from __future__ import annotations

import math

import numpy as np

from . import rsa

METHODS = ("lowpass", "highpass")
DEFAULT_SIGMA = 2.0        # px of the (36 x 64) stimulus images: detail finer than ~4 px is 'high'
TRUNCATE = 4.0             # the kernel reaches truncate * sigma pixels (scipy.ndimage's default)


def _check_sigma(sigma) -> float:
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"blur sigma must be a positive number of pixels, got {sigma!r}")
    return sigma


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, H, W), got shape {images.shape}")
    if len(images) < 2:
        raise ValueError(f"a similarity matrix needs at least 2 images, got {len(images)}")
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
        raise ValueError(f"images must be real numbers, got dtype {images.dtype}")
    images = images.astype(np.float64)
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or inf")
    return images


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """The normalised 1-D kernel (2R + 1,), R = ceil(truncate sigma)."""
    sigma = _check_sigma(sigma)
    radius = int(math.ceil(truncate * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    radius = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="symmetric")
    n = x.shape[axis]
    out = np.zeros_like(x)
    for offset, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(offset, offset + n), axis=axis)
    return out


def gaussian_blur(images, sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """float64 (n, H, W): every image blurred by the separable Gaussian of s.d. `sigma` pixels."""
    images = _check_images(images)
    kernel = gaussian_kernel(sigma, truncate)
    return _blur_axis(_blur_axis(images, kernel, 1), kernel, 2)


def filtered(images, method: str, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """float64 (n, H, W): the blurred images ('lowpass') or the images minus their blur ('highpass')."""
    if method not in METHODS:
        raise ValueError(f"pixel control method must be one of {METHODS}, got {method!r}")
    images = _check_images(images)
    low = gaussian_blur(images, sigma)
    return low if method == "lowpass" else images - low


def pixel_similarity(images, method: str, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """Eq. 2 on the flattened lowpass / highpass pixels of `images` (n, H, W): float32 (n, n),
    centred over all n images, symmetric, unit diagonal."""
    x = filtered(images, method, sigma)
    return rsa.similarity(x.reshape(len(x), -1), dtype=np.float64)


def noise_sensitivity(images, method: str, sigma: float = DEFAULT_SIGMA, noise_sd: float = 0.1,
                      seed: int = 0) -> float:
    """How far white noise of s.d. `noise_sd` (in the images' units) moves the representation: the
    mean over images of ||f(x + z) - f(x)|| / ||f(x) - mean_i f(x_i)||, for the filter f of `method`
    (a diagnostic: small for lowpass, large for highpass)."""
    images = _check_images(images)
    z = np.random.default_rng(seed).standard_normal(images.shape) * float(noise_sd)
    clean = filtered(images, method, sigma)
    noisy = filtered(images + z, method, sigma)
    centred = clean - clean.mean(axis=0)
    num = np.linalg.norm((noisy - clean).reshape(len(images), -1), axis=1)
    den = np.linalg.norm(centred.reshape(len(images), -1), axis=1)
    return float(np.mean(num / np.maximum(den, np.finfo(float).tiny)))
