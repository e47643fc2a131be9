"""Eq. 1 of Li et al. (NeurIPS 2019): the signal-to-noise weight of each neuron, from repeated
(oracle) presentations; pure numpy, never imports datajoint.

Eq. 1  signal-to-noise weight per neuron, from repeated (oracle) presentations:
       sigma_a^2 = Var_i(E_t[r_ait])      variance over oracle images of the mean over repeats
       eta_a^2   = E_i[Var_t(r_ait)]      mean over oracle images of the variance over repeats
       w_a       = sigma_a / eta_a

The `experiment.Neuron` table stores these weights; the similarity matrices (compute/similarity/rsa.py)
scale the responses by them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this relative size a variance is treated as zero (float32 data carries ~1e-7 relative error).
_REL_EPS = 1e-6


@dataclass
class SNR:
    """Eq. 1 per neuron. `status` says how w_a was obtained:
    'ok'        both variances positive: w_a = sigma_a / eta_a
    'constant'  the neuron never varies on the oracle trials (sigma = eta = 0): w_a = 0, it carries no
                information and must not enter a similarity matrix
    'noiseless' eta = 0 but sigma > 0 (identical responses on every repeat, e.g. a deterministic or
                quantized unit): w_a would be infinite; it is set to `max_weight`, a finite cap
    """

    signal_var: np.ndarray   # sigma_a^2, (response unit)^2
    noise_var: np.ndarray    # eta_a^2, (response unit)^2
    weight: np.ndarray       # w_a, dimensionless
    status: np.ndarray       # str per neuron: 'ok' | 'constant' | 'noiseless'


def oracle_groups(image_ids: np.ndarray) -> list[np.ndarray]:
    """Row indices of the trials of each distinct image, images in sorted id order."""
    image_ids = np.asarray(image_ids)
    order = np.argsort(image_ids, kind="stable")
    ids_sorted = image_ids[order]
    bounds = np.flatnonzero(np.diff(ids_sorted)) + 1
    return np.split(order, bounds)


def snr_weights(responses: np.ndarray, image_ids: np.ndarray, max_weight: float = 1e3) -> SNR:
    """Eq. 1 on the oracle trials.

    responses: (n_trials, n_neurons), the oracle trials only; image_ids: (n_trials,) image of each
    trial. Every image needs >= 2 repeats; repeat counts may differ between images (each image's
    mean and unbiased variance use its own repeats; images weigh equally in the outer mean and
    variance). The variance over images is the population variance (ddof=0) and the variance over
    repeats the unbiased one (ddof=1), so that eta^2 estimates the trial noise without bias.
    """
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2:
        raise ValueError(f"responses must be (trials, neurons), got shape {responses.shape}")
    if len(image_ids) != len(responses):
        raise ValueError(f"{len(image_ids)} image ids for {len(responses)} trials")
    if not np.all(np.isfinite(responses)):
        raise ValueError("responses contain NaN or inf")
    groups = oracle_groups(image_ids)
    if len(groups) < 2:
        raise ValueError(f"Eq. 1 needs at least 2 oracle images, got {len(groups)}")
    sizes = np.array([len(g) for g in groups])
    if sizes.min() < 2:
        raise ValueError("every oracle image needs at least 2 repeats")
    means = np.stack([responses[g].mean(axis=0) for g in groups])          # images x neurons
    variances = np.stack([responses[g].var(axis=0, ddof=1) for g in groups])
    signal_var = means.var(axis=0)
    noise_var = variances.mean(axis=0)
    scale = np.maximum(np.abs(responses).max(axis=0), np.finfo(float).tiny) ** 2
    zero_signal = signal_var <= _REL_EPS * scale
    zero_noise = noise_var <= _REL_EPS * scale
    status = np.full(responses.shape[1], "ok", dtype=object)
    weight = np.zeros(responses.shape[1])
    ok = ~zero_noise
    weight[ok] = np.sqrt(signal_var[ok] / noise_var[ok])
    weight[ok & zero_signal] = 0.0
    status[zero_noise & zero_signal] = "constant"
    status[zero_noise & ~zero_signal] = "noiseless"
    weight[zero_noise & ~zero_signal] = max_weight
    return SNR(signal_var=signal_var, noise_var=noise_var, weight=np.minimum(weight, max_weight),
               status=status.astype(str))
