"""The paper's similarity loss (Eqs. 7-10) in torch, differentiable (Li et al., NeurIPS 2019, Sec. 3).

Eq. 9   per-layer CNN similarity: f_i^(k) is the flattened (concatenated) feature vector of image i
        at layer k, f_bar^(k) = E_i[f_i^(k)] its mean over the stimulus IMAGES (as Eq. 2 centres the
        responses by their mean over all stimuli), not over the step's batch,
        S_ij^(CNN-k) = cos(f_i^(k) - f_bar^(k), f_j^(k) - f_bar^(k))          `feature_similarity`
Eq. 10  combined CNN similarity S_ij^CNN = sum_k gamma_k S_ij^(CNN-k), gamma = softmax of trainable
        logits, equal (1/K) at initialisation (supplement)       `LayerWeights`, `cnn_similarity`
Eq. 8   similarity loss for a pair (i, j):
        [arctanh(S_ij^CNN) - arctanh(S_ij^neural)]^2; the layers are combined BEFORE the arctanh
        (Eq. 10 defines S^CNN, which enters Eq. 8). Averaged over the stimulus pairs i < j of the
        batch (the diagonal, where S = 1, is left out)                          `similarity_loss`
Eq. 7   L = L_task + alpha L_similarity                                          `total_loss`

The centre f_bar (`center`)
---------------------------
Every function that computes Eq. 9 takes the centre explicitly, there is no default:
  * a tensor (per layer, a mapping {k: tensor}): f_bar^(k) itself, of the flattened feature size
    (D_k,) or of one image's feature shape. It is detached: no gradient reaches it, the loss
    trains the network through f_i only. During training it is the `RunningFeatureMean` of the
    stimulus features (compute/classifier/train.py: exact over all training stimuli at the start,
    then an exponential moving average of each stimulus batch's mean).
  * "batch": the mean of the B rows given. This is Eq. 9 only when the rows ARE all the stimulus
    images (e.g. a target computed from features of a whole image set). Over a training batch it is
    the old, wrong reading: it forces sum_j (f_j - f_bar) = 0 inside the batch, hence the mean
    off-diagonal S^CNN-k of the batch to about -1/(B-1) (-0.14 at B = 8; exactly so when the
    centred rows have equal norms) whatever the network computes, while the target's sub-blocks
    average ~0; even features equal to the responses that generated the target then cannot reach
    zero loss (compute/classifier/centering.py, benchmarks/centering.py: floor / zero-prediction loss 1.04 at
    B = 8, 0.48 at B = 12; 0.015 and 0.010 with the running mean, 0 with the exact mean).

Clipping: arctanh(+-1) is infinite and its gradient blows up near +-1, so both S^CNN and S^neural
are clamped to [-clip, clip] (clip = 0.999 by default: arctanh(0.999) = 3.8) before the arctanh.
The diagonal never enters the loss; off-diagonal entries only reach +-1 for (anti)parallel centred
features. A clamped entry of S^CNN passes no gradient (torch.clamp), which only happens beyond the
clip. The paper does not state its clipping; this is the minimal choice that keeps the loss finite.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import torch
from torch import nn

# Centred feature vectors shorter than this are divided by EPS instead of their norm (their row of
# the similarity matrix is then ~0 instead of NaN).
EPS = 1e-8


Center = Union[torch.Tensor, str]                     # f_bar of one layer, or "batch"


def feature_similarity(features: torch.Tensor, center: Center, eps: float = EPS) -> torch.Tensor:
    """Eq. 9: (B, B) cosine similarity of the centred, flattened features of B stimuli.

    features: (B, ...) with B >= 2; each image's features are flattened. center: f_bar, the mean of
    these features over the stimulus images, as (D,) or features.shape[1:] (detached here), or
    "batch" for the mean of the B rows (Eq. 9 only when the rows are all the images; see the module
    docstring). The centred rows are normalised to unit length (norm clamped below at `eps`) and the
    Gram matrix of the unit rows is returned (symmetric, diagonal 1 for non-degenerate rows)."""
    if features.dim() < 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (B >= 2, ...), got shape {tuple(features.shape)}")
    f = features.reshape(features.shape[0], -1)
    if isinstance(center, str):
        if center != "batch":
            raise ValueError(f"center must be a tensor (the mean over the stimulus images) or 'batch', "
                             f"got {center!r}")
        f = f - f.mean(dim=0, keepdim=True)
    else:
        c = center.detach().reshape(-1)
        if c.shape[0] != f.shape[1]:
            raise ValueError(f"center has {c.shape[0]} values for features of {f.shape[1]} per image "
                             f"(shape {tuple(features.shape[1:])})")
        f = f - c.to(device=f.device, dtype=f.dtype)[None]
    e = f / f.norm(dim=1, keepdim=True).clamp_min(eps)
    return e @ e.T


class RunningFeatureMean:
    """f_bar^(k) of Eq. 9 for a network that changes while it trains: per layer k, the mean of the
    flattened stimulus features, detached (float32, on the features' device).

    `reset(means)` sets it exactly (train_classifier computes the mean over all training stimuli with
    one no-grad pass before the first step); `update(features)` then moves it towards each stimulus
    batch's mean, f_bar <- f_bar + momentum (batch mean - f_bar), an exponential moving average over
    about (2 - momentum) / momentum batches. The trainer updates it AFTER the step's loss is
    computed, so no batch is centred by a mean that contains itself. Error of the estimate (features
    fixed, B images per batch): E|e|^2 ~ momentum / ((2 - momentum) B) of the features' total
    variance, which biases the off-diagonal S^CNN-k by about that much (momentum 0.1, B = 8: +0.007;
    batch centring: -1/(B-1) = -0.14); lag behind a drifting network: about 1 / momentum steps."""

    def __init__(self, layers, momentum: float):
        if not 0 < float(momentum) <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        self.layers = tuple(sorted(int(k) for k in layers))
        self.momentum = float(momentum)
        self.mean: dict[int, torch.Tensor] = {}

    @property
    def ready(self) -> bool:
        return set(self.mean) == set(self.layers)

    def center(self) -> dict[int, torch.Tensor]:
        """{k: (D_k,)} the current f_bar per layer (for `similarity_loss(center=...)`)."""
        if not self.ready:
            raise RuntimeError("the feature mean is not initialised: call reset() first")
        return self.mean

    @torch.no_grad()
    def reset(self, means: Mapping[int, torch.Tensor]) -> None:
        if set(means) != set(self.layers):
            raise ValueError(f"means for layers {sorted(means)}, expected {list(self.layers)}")
        self.mean = {k: means[k].detach().reshape(-1).float().clone() for k in self.layers}

    @torch.no_grad()
    def update(self, features: Mapping[int, torch.Tensor]) -> None:
        """Move f_bar towards the mean of this batch's features {k: (B, ...)}."""
        for k in self.layers:
            f = features[k].detach()
            self.mean[k].lerp_(f.reshape(f.shape[0], -1).float().mean(dim=0), self.momentum)

    def state_dict(self) -> dict:
        return {"layers": list(self.layers), "momentum": self.momentum,
                "mean": {k: v.detach().cpu().clone() for k, v in self.mean.items()}}

    def load_state_dict(self, state: dict, device=None) -> "RunningFeatureMean":
        if tuple(state["layers"]) != self.layers or float(state["momentum"]) != self.momentum:
            raise ValueError("feature mean state of other layers or momentum")
        self.mean = {int(k): v.to(device).clone() if device is not None else v.clone()
                     for k, v in state["mean"].items()}
        return self


class LayerWeights(nn.Module):
    """Eq. 10's gamma_k: softmax of K trainable logits, zeros at init, hence gamma_k = 1/K.

    `layers` is either K or the layer indices themselves (kept in ascending order as `self.layers`);
    gamma()[m] weights the m-th layer in ascending order, the order `similarity_loss` uses."""

    def __init__(self, layers: int | Sequence[int]):
        super().__init__()
        if isinstance(layers, int):
            if layers < 1:
                raise ValueError(f"need at least one layer, got {layers}")
            self.layers = tuple(range(1, layers + 1))
        else:
            self.layers = tuple(sorted(int(k) for k in layers))
            if not self.layers or len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers must be distinct and non-empty, got {layers!r}")
        self.logits = nn.Parameter(torch.zeros(len(self.layers)))

    def gamma(self) -> torch.Tensor:
        """(K,) softmax(logits): non-negative, sums to one."""
        return torch.softmax(self.logits, dim=0)

    def forward(self) -> torch.Tensor:
        return self.gamma()


def _check_target(target: torch.Tensor, b: int) -> None:
    if target.shape != (b, b):
        raise ValueError(f"target must be ({b}, {b}) for a batch of {b} stimuli, "
                         f"got {tuple(target.shape)}")


def _layer_center(center: Mapping[int, torch.Tensor] | str, k: int) -> Center:
    if isinstance(center, str):
        return center
    if k not in center:
        raise ValueError(f"no center (feature mean) for layer {k}; given for {sorted(center)}")
    return center[k]


def cnn_similarity(features: Mapping[int, torch.Tensor], gamma: torch.Tensor,
                     center: Mapping[int, torch.Tensor] | str) -> torch.Tensor:
    """Eq. 10: S^CNN = sum_k gamma_k S^(CNN-k) (Eq. 9 per layer, centred by center[k], or "batch"),
    layers in ascending key order, gamma[m] for the m-th of them. Returns (B, B)."""
    if not features:
        raise ValueError("no feature layers given")
    keys = sorted(features)
    if gamma.dim() != 1 or gamma.shape[0] != len(keys):
        raise ValueError(f"gamma must be ({len(keys)},) for layers {keys}, got {tuple(gamma.shape)}")
    sims = torch.stack([feature_similarity(features[k], _layer_center(center, k)) for k in keys])  # (K,B,B)
    return torch.einsum("k,kij->ij", gamma.to(sims.dtype), sims)


def similarity_loss(features: Mapping[int, torch.Tensor], target: torch.Tensor, gamma: torch.Tensor,
                    *, center: Mapping[int, torch.Tensor] | str, clip: float = 0.999,
                    pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8 averaged over the pairs i < j, with S^CNN from Eq. 10 (gamma-weighted Eq. 9).

    features: {layer k: (B, ...)} for the same B stimuli; target: (B, B) S^neural for them (only its
    upper triangle is read); gamma: (K,) layer weights in ascending layer order (e.g.
    LayerWeights.gamma()); center: {layer k: f_bar^(k)}, the features' mean over the stimulus images
    (e.g. RunningFeatureMean.center(); detached), or "batch" (see the module docstring). Both similarities are clamped to [-clip, clip] before the arctanh (see the
    module docstring). pair_mask: optional (B, B) bool, a subset of the pairs i < j to average over
    (entries on or below the diagonal are ignored), e.g. to hold pairs out. Returns a scalar."""
    if not 0 < clip < 1:
        raise ValueError(f"clip must be in (0, 1), got {clip}")
    s_cnn = cnn_similarity(features, gamma, center)
    b = s_cnn.shape[0]
    _check_target(target, b)
    i, j = torch.triu_indices(b, b, offset=1, device=s_cnn.device)
    if pair_mask is not None:
        if pair_mask.shape != (b, b):
            raise ValueError(f"pair_mask must be ({b}, {b}), got {tuple(pair_mask.shape)}")
        keep = pair_mask.to(torch.bool)[i, j]
        if not bool(keep.any()):
            raise ValueError("pair_mask selects no pair i < j")
        i, j = i[keep], j[keep]
    z_cnn = torch.atanh(s_cnn[i, j].clamp(-clip, clip))
    z_neural = torch.atanh(target.to(s_cnn.dtype)[i, j].clamp(-clip, clip))
    return ((z_cnn - z_neural) ** 2).mean()


def total_loss(task_loss: torch.Tensor, sim_loss: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 7: L = L_task + alpha L_similarity (the paper's main results use alpha = 20)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    return task_loss + alpha * sim_loss
