"""Nine of CIFAR-10-C's corruption functions, after Hendrycks & Dietterich's `make_cifar_c.py` with its
CIFAR severity parameters, to build a LOCAL corruption set for a data set that has no published one
(the offline stand-ins). It is not CIFAR-10-C: other images, our random draws, and only the
corruptions that need no extra files or libraries (frost needs the authors' frost photos; motion
blur, snow and others need ImageMagick via Wand; glass blur and the fog's plasma fractal are left out).
Pure numpy (+ Pillow, scikit-image, which the stand-ins already need); never imports datajoint.

Each function takes RGB images uint8 (N, H, W, 3), a severity 1..5 and a numpy Generator, and
returns uint8 (N, H, W, 3) (rounded as the authors' `np.uint8(...)` of a float image in 0..255:
truncated after clipping). `write_local_set(images, labels, folder)` writes them in the published
layout (`<corruption>.npy` (5 N, H, W, 3), `labels.npy`), so compute/evaluation/corruptions.py reads
the local set exactly as it reads CIFAR-10-C.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# the CIFAR severities of make_cifar_c.py (index = severity - 1)
PARAMS = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "speckle_noise": [.06, .1, .12, .16, .2],
    "gaussian_blur": [.4, .6, 0.7, .8, 1],
    "contrast": [.75, .5, .4, .3, 0.15],
    "brightness": [.05, .1, .15, .2, .3],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}
LOCAL = tuple(PARAMS)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """np.uint8 of a float image in 0..255, as the authors' code: truncated."""
    return np.clip(x, 0, 255).astype(np.uint8)


def gaussian_noise(x, severity, rng):
    c = PARAMS["gaussian_noise"][severity - 1]
    x = x / 255.0
    return _to_uint8(np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255)


def shot_noise(x, severity, rng):
    c = PARAMS["shot_noise"][severity - 1]
    x = x / 255.0
    return _to_uint8(np.clip(rng.poisson(x * c) / c, 0, 1) * 255)


def impulse_noise(x, severity, rng):
    """skimage.util.random_noise(mode='s&p', amount=c): a fraction c of the values set to 0 or 1, half each."""
    c = PARAMS["impulse_noise"][severity - 1]
    x = x / 255.0
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    out = np.where(hit, np.where(salt, 1.0, 0.0), x)
    return _to_uint8(np.clip(out, 0, 1) * 255)


def speckle_noise(x, severity, rng):
    c = PARAMS["speckle_noise"][severity - 1]
    x = x / 255.0
    return _to_uint8(np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255)


def gaussian_blur(x, severity, rng):
    from scipy.ndimage import gaussian_filter
    c = PARAMS["gaussian_blur"][severity - 1]
    x = x / 255.0
    # skimage.filters.gaussian(multichannel=True): per channel, mode 'nearest', truncate 4
    out = gaussian_filter(x, sigma=(0, c, c, 0), mode="nearest", truncate=4.0)
    return _to_uint8(np.clip(out, 0, 1) * 255)


def contrast(x, severity, rng):
    c = PARAMS["contrast"][severity - 1]
    x = x / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8(np.clip((x - means) * c + means, 0, 1) * 255)


def brightness(x, severity, rng):
    """In HSV: V + c, clipped (skimage.color.rgb2hsv / hsv2rgb, as the authors)."""
    from skimage import color
    c = PARAMS["brightness"][severity - 1]
    x = x / 255.0
    out = np.empty_like(x)
    for i in range(len(x)):
        hsv = color.rgb2hsv(x[i])
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        out[i] = color.hsv2rgb(hsv)
    return _to_uint8(np.clip(out, 0, 1) * 255)


def pixelate(x, severity, rng):
    from PIL import Image
    c = PARAMS["pixelate"][severity - 1]
    h, w = x.shape[1:3]
    out = np.empty_like(x)
    for i in range(len(x)):
        im = Image.fromarray(x[i]).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
        out[i] = np.asarray(im)
    return out


def jpeg_compression(x, severity, rng):
    from PIL import Image
    c = PARAMS["jpeg_compression"][severity - 1]
    out = np.empty_like(x)
    for i in range(len(x)):
        buffer = io.BytesIO()
        Image.fromarray(x[i]).save(buffer, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


FUNCTIONS = {name: globals()[name] for name in LOCAL}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3): `images` (uint8 (N, H, W, 3) RGB, or (N, H, W) grey, replicated to RGB) with
    corruption `name` at `severity` (1..5), random draws from numpy's default_rng(seed)."""
    if name not in FUNCTIONS:
        raise KeyError(f"no local corruption function {name!r}; implemented: {', '.join(LOCAL)}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    x = np.asarray(images)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=3)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3) or (N, H, W), got {x.dtype} {x.shape}")
    return FUNCTIONS[name](x.astype(np.float64) if name not in ("pixelate", "jpeg_compression") else x,
                           int(severity), np.random.default_rng(int(seed)))


def write_local_set(images: np.ndarray, labels: np.ndarray, folder, corruptions=LOCAL, seed: int = 0) -> Path:
    """Write the local corruption set of `images` (uint8 (N, H, W) grey or (N, H, W, 3) RGB) in the
    published layout into `folder` (created): `<corruption>.npy` (5 N, H, W, 3) severity-major and
    `labels.npy` (5 N,) uint8. Severity s of corruption k draws from default_rng(seed * 1000 + 10 k + s)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(corruptions):
        stack = [corrupt(images, name, s, seed * 1000 + 10 * k + s) for s in range(1, 6)]
        np.save(folder / f"{name}.npy", np.concatenate(stack))
    np.save(folder / "labels.npy", np.tile(np.asarray(labels).astype(np.uint8), 5))
    return folder


__all__ = ["FUNCTIONS", "LOCAL", "PARAMS", "corrupt", "write_local_set"] + list(LOCAL)
