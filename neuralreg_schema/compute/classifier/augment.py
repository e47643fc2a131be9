"""Tensors and augmentation for the classifiers.

`to_tensor` turns uint8 images into float32 in [0, 1] of shape (N, 1, H, W); `random_crop_flip` is the
standard CIFAR augmentation (random 32 x 32 crop of the image zero-padded by 4, horizontal flip with
p = 0.5) done with one vectorised gather on the batch's device; `crop_flip` its deterministic part.

Pure torch; never imports datajoint.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images, device=None) -> torch.Tensor:
    """uint8 (N, H, W) or (N, 1, H, W) grey levels -> float32 in [0, 1] of shape (N, 1, H, W)."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.dtype != torch.uint8:
        raise TypeError(f"to_tensor expects uint8 images, got {t.dtype}")
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W), got {tuple(t.shape)}")
    return t.to(device=device).to(torch.float32).div_(255.0)


def crop_flip(batch: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Deterministic part of `random_crop_flip`: image i is the (H, W) window at rows dy[i].., columns
    dx[i].. of the image zero-padded by `padding` on every side, mirrored left-right where flip[i]."""
    b, c, h, w = batch.shape
    dev = batch.device
    padded = F.pad(batch, (padding, padding, padding, padding))          # zeros
    dy, dx, flip = dy.to(dev).long(), dx.to(dev).long(), flip.to(dev).bool()
    rows = dy[:, None] + torch.arange(h, device=dev)                       # (B, H)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]    # (B, W)
    index = torch.arange(b, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]   # (B, H, W, C)
    # a fresh NCHW tensor: the permuted (B, 1, H, W) view counts as channels-last too, and would make
    # the CPU convolutions run NHWC into a defective oneDNN kernel (compute/common/runtime.py)
    return out.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)


def random_crop_flip(batch: torch.Tensor, generator: torch.Generator | None = None,
                     padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding `padding`, offsets uniform in 0..2*padding) and horizontal flip with
    p = 0.5, per image, vectorised on the batch's device. The offsets and flips are drawn from
    `generator` (on its own device) in the order dy, dx, flip."""
    if batch.ndim != 4:
        raise ValueError(f"batch must be (B, C, H, W), got {tuple(batch.shape)}")
    b = batch.shape[0]
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_dev)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_dev)
    flip = torch.rand(b, generator=generator, device=gen_dev) < 0.5
    return crop_flip(batch, dy, dx, flip, padding)
