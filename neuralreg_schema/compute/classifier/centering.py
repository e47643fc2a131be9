"""Known-answer check of Eq. 9's centring: the loss floor of Eq. 8 when the network's features ARE
the responses that generated the target (Li et al. 2019, Eqs. 2, 8, 9). Pure numpy/torch.

The target S^neural is Eq. 2 on synthetic responses r (n stimuli x N neurons, a rank-`rank` signal
plus independent noise), centred by the mean over ALL n stimuli, as the paper's matrices are.
Features f = r reproduce it exactly when Eq. 9 centres them the same way, so the similarity loss
of a perfect network is zero; whatever is left is the floor the centring itself imposes. The floor
is the mean of Eq. 8 over random stimulus batches of `stim_batch` images; the reference is the loss
of predicting S^CNN = 0 for every pair on the same batches (a regularizer that learnt nothing):
ratio = floor / zero-prediction loss (0: the loss can be driven to zero; 1: no better than zeros).

Centrings compared (similarity_loss's `center`):
  'batch'    the mean of the step's stimulus batch (the old reading; mean off-diagonal S^CNN forced
             to -1/(B-1))
  'running'  similarity_loss.RunningFeatureMean as the trainer keeps it: exact over all stimuli at the
             start, then updated by each batch's mean (momentum) after the batch's loss
  'all'      the exact mean over all n stimuli (Eq. 9 as written; floor 0 up to clipping)
Used by benchmarks/centering.py and tests/unit/test_resnet_loss.py.
"""
from __future__ import annotations

import numpy as np
import torch

from ..similarity import rsa
from . import similarity_loss

CENTERINGS = ("batch", "running", "all")


def synthetic_responses(n_stimuli: int = 1000, n_neurons: int = 400, rank: int = 40, noise: float = 0.2,
                        seed: int = 0) -> np.ndarray:
    """(n_stimuli, n_neurons) float64: Z W + noise, Z (n, rank) and W (rank, N) standard normal,
    the noise N(0, noise^2 rank) per entry (noise = signal-to-noise sd ratio per neuron)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_stimuli, rank))
    w = rng.normal(size=(rank, n_neurons))
    return z @ w + rng.normal(scale=noise * np.sqrt(rank), size=(n_stimuli, n_neurons))


def loss_floor(responses: np.ndarray, stim_batch: int, centering: str, *, n_steps: int = 300,
               momentum: float = 0.1, clip: float = 0.999, seed: int = 0) -> dict:
    """Eq. 8 with features = `responses` against their own Eq. 2 similarity, over `n_steps` random
    batches of `stim_batch` stimuli. Returns floor, zero (the loss of S^CNN = 0), ratio, and the
    mean off-diagonal S^CNN and target of the batches."""
    if centering not in CENTERINGS:
        raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
    r = np.asarray(responses, dtype=np.float64)
    n = len(r)
    if not 2 <= stim_batch <= n:
        raise ValueError(f"stim_batch must be in 2..{n}, got {stim_batch}")
    target = torch.as_tensor(rsa.similarity(r, dtype=np.float64), dtype=torch.float64)
    f = torch.as_tensor(r)
    gamma = torch.ones(1, dtype=torch.float64)
    running = similarity_loss.RunningFeatureMean([1], momentum)
    running.reset({1: f.mean(dim=0)})
    exact = {1: f.mean(dim=0)}
    gen = torch.Generator().manual_seed(seed)
    iu = torch.triu_indices(stim_batch, stim_batch, offset=1)
    floors, zeros, s_mean, t_mean = [], [], [], []
    for _ in range(n_steps):
        idx = torch.randperm(n, generator=gen)[:stim_batch]
        feats, t = {1: f[idx]}, target[idx][:, idx]
        center = {"batch": "batch", "all": exact}.get(centering) or {1: running.center()[1].double()}
        floors.append(float(similarity_loss.similarity_loss(feats, t, gamma, center=center, clip=clip)))
        zeros.append(float((torch.atanh(t[iu[0], iu[1]].clamp(-clip, clip)) ** 2).mean()))
        s_mean.append(float(similarity_loss.cnn_similarity(feats, gamma, center)[iu[0], iu[1]].mean()))
        t_mean.append(float(t[iu[0], iu[1]].mean()))
        running.update(feats)
    floor, zero = float(np.mean(floors)), float(np.mean(zeros))
    return {"centering": centering, "stim_batch": int(stim_batch), "floor": floor, "zero": zero,
            "ratio": floor / zero, "mean_s_cnn": float(np.mean(s_mean)), "mean_target": float(np.mean(t_mean)),
            "n_steps": int(n_steps), "momentum": float(momentum)}
