"""The data-driven start of the predictive network's readout positions (network.py), a
deviation from neuralpredictors, which starts them at random. Pure torch; never imports datajoint.

Each neuron's position starts at the peak of the correlation between its training responses and a
local band-pass energy map of the images (`energy_positions`); `start_positions` moves the readout
there for the neurons whose peak is significant and keeps the random start elsewhere. The trainer
(train.py) calls it with `init_positions='energy'`; `'random'` restores the reference
behaviour. On the demo simulation this start is worth ~5 epochs of training: the readout positions,
not the core, are what the network learns slowest.
"""
from __future__ import annotations

import math

import torch

from .network import PredictiveNetwork

ENERGY_BANDPASS_PX = (2.0, 4.0)   # difference-of-Gaussians sds (px) of the band-pass filter
ENERGY_POOL_PX = 3.0              # Gaussian sd (px) pooling the squared band-passed image
ENERGY_STRIDE = 2                 # px between the candidate positions


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (sd `sigma` px, truncated at 3 sd, reflected edges) of (n, 1, h, w)."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect"),
                                   k.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect"),
                                      k.view(1, 1, -1, 1))


@torch.no_grad()
def energy_positions(images: torch.Tensor, trial_image: torch.Tensor, responses: torch.Tensor,
                     chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Data-driven start for the readout positions (not in neuralpredictors, which starts them
    at random): each neuron's position is where the local band-pass energy of the image
    correlates best with its responses.

    images (n_images, 1, h, w) standardised; trial_image (n_trials,) rows of `images`; responses
    (n_trials, n_neurons) - pass the training trials only. The energy map is the squared
    difference-of-Gaussians band-pass (ENERGY_BANDPASS_PX) pooled by a Gaussian (ENERGY_POOL_PX),
    sampled every ENERGY_STRIDE px; per neuron the Pearson r with the responses is taken at every
    sampled position, and the position is the r-weighted centroid of the 3x3 neighbourhood of the
    peak. Returns positions (n_neurons, 2: x column, y row, image px) and each neuron's peak r
    (callers keep the random start where it is not significant)."""
    s1, s2 = ENERGY_BANDPASS_PX
    maps = []
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].float()
        band = _gaussian_blur(x, s1) - _gaussian_blur(x, s2)
        maps.append(_gaussian_blur(band * band, ENERGY_POOL_PX)[:, 0, ::ENERGY_STRIDE, ::ENERGY_STRIDE])
    energy = torch.cat(maps)                                 # (n_images, gh, gw)
    gh, gw = energy.shape[1:]
    e = energy.reshape(len(energy), -1)[trial_image].double()
    e = (e - e.mean(0)) / e.std(0).clamp_min(1e-12)
    r = responses.double()
    r = (r - r.mean(0)) / r.std(0).clamp_min(1e-12)
    corr = (r.T @ e / len(r)).float().reshape(-1, gh, gw)    # (n_neurons, gh, gw)
    peak_r, flat = corr.reshape(len(corr), -1).max(dim=1)
    py, px = flat // gw, flat % gw
    offsets = torch.arange(-1, 2, device=corr.device)
    ys = (py[:, None] + offsets).clamp(0, gh - 1)            # (n, 3)
    xs = (px[:, None] + offsets).clamp(0, gw - 1)
    n_idx = torch.arange(len(corr), device=corr.device)[:, None, None]
    w = corr[n_idx, ys[:, :, None], xs[:, None, :]].clamp_min(0.0) + 1e-12   # (n, 3, 3)
    cy = (w * ys[:, :, None].float()).sum((1, 2)) / w.sum((1, 2))
    cx = (w * xs[:, None, :].float()).sum((1, 2)) / w.sum((1, 2))
    return torch.stack([cx, cy], dim=1) * ENERGY_STRIDE, peak_r


@torch.no_grad()
def start_positions(network: PredictiveNetwork, images: torch.Tensor, trial_image: torch.Tensor,
                    responses: torch.Tensor) -> None:
    """Move the readout positions of `network` (its standardisation buffers set) to
    `energy_positions` of the raw images (n_images, 1, h, w) for the neurons whose peak r is ~3 sd
    above chance (3 / sqrt(n_trials)); the others keep their random start. trial_image and
    responses: the training trials only."""
    xy, peak_r = energy_positions((images - network.image_mean) / network.image_std, trial_image, responses)
    significant = peak_r > 3.0 / math.sqrt(len(responses))        # ~3 sd above chance
    mu = network.readout.mu.detach().clone()
    mu[significant] = network.pixel_to_grid(xy[significant]).clamp(-1.0, 1.0)
    network.readout.mu.copy_(mu)


__all__ = ["ENERGY_BANDPASS_PX", "ENERGY_POOL_PX", "ENERGY_STRIDE", "energy_positions", "start_positions"]
