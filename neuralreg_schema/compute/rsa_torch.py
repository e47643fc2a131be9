"""The paper's similarity loss (Eqs. 7-10) in torch, differentiable (Li et al., NeurIPS 2019, Sec. 3).

Eq. 9   per-layer CNN similarity: f_i^(k) is the flattened (concatenated) feature vector of image i
        at layer k, f_bar^(k) = E_i[f_i^(k)] its mean over the stimulus batch,
        S_ij^(CNN-k) = cos(f_i^(k) - f_bar^(k), f_j^(k) - f_bar^(k))          `feature_similarity`
Eq. 10  combined CNN similarity S_ij^CNN = sum_k gamma_k S_ij^(CNN-k), gamma = softmax of trainable
        logits, equal (1/K) at initialisation (supplement)       `LayerWeights`, `model_similarity`
Eq. 8   similarity loss for a pair (i, j):
        [arctanh(S_ij^CNN) - arctanh(S_ij^neural)]^2; the layers are combined BEFORE the arctanh
        (Eq. 10 defines S^CNN, which enters Eq. 8). Averaged over the stimulus pairs i < j of the
        batch (the diagonal, where S = 1, is left out)                          `similarity_loss`
Eq. 7   L = L_task + alpha L_similarity                                          `total_loss`

Clipping: arctanh(+-1) is infinite and its gradient blows up near +-1, so both S^CNN and S^neural
are clamped to [-clip, clip] (clip = 0.999 by default: arctanh(0.999) = 3.8) before the arctanh.
The diagonal never enters the loss; off-diagonal entries only reach +-1 for (anti)parallel centred
features. A clamped entry of S^CNN passes no gradient (torch.clamp), which only happens beyond the
clip. The paper does not state its clipping; this is the minimal choice that keeps the loss finite.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

# Centred feature vectors shorter than this are divided by EPS instead of their norm (their row of
# the similarity matrix is then ~0 instead of NaN).
EPS = 1e-8


def feature_similarity(features: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. 9: (B, B) cosine similarity of the batch-centred, flattened features of B stimuli.

    features: (B, ...) with B >= 2; each image's features are flattened, the mean over the B stimuli
    is subtracted, rows are normalised to unit length (norm clamped below at `eps`), and the Gram
    matrix of the unit rows is returned (symmetric, diagonal 1 for non-degenerate rows)."""
    if features.dim() < 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (B >= 2, ...), got shape {tuple(features.shape)}")
    f = features.reshape(features.shape[0], -1)
    f = f - f.mean(dim=0, keepdim=True)
    e = f / f.norm(dim=1, keepdim=True).clamp_min(eps)
    return e @ e.T


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


def model_similarity(features: Mapping[int, torch.Tensor], gamma: torch.Tensor) -> torch.Tensor:
    """Eq. 10: S^CNN = sum_k gamma_k S^(CNN-k) (Eq. 9 per layer), layers in ascending key order,
    gamma[m] for the m-th of them. Returns (B, B)."""
    if not features:
        raise ValueError("no feature layers given")
    keys = sorted(features)
    if gamma.dim() != 1 or gamma.shape[0] != len(keys):
        raise ValueError(f"gamma must be ({len(keys)},) for layers {keys}, got {tuple(gamma.shape)}")
    sims = torch.stack([feature_similarity(features[k]) for k in keys])      # (K, B, B)
    return torch.einsum("k,kij->ij", gamma.to(sims.dtype), sims)


def similarity_loss(features: Mapping[int, torch.Tensor], target: torch.Tensor, gamma: torch.Tensor,
                    *, clip: float = 0.999, pair_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8 averaged over the pairs i < j, with S^CNN from Eq. 10 (gamma-weighted Eq. 9).

    features: {layer k: (B, ...)} for the same B stimuli; target: (B, B) S^neural for them (only its
    upper triangle is read); gamma: (K,) layer weights in ascending layer order (e.g.
    LayerWeights.gamma()). Both similarities are clamped to [-clip, clip] before the arctanh (see the
    module docstring). pair_mask: optional (B, B) bool, a subset of the pairs i < j to average over
    (entries on or below the diagonal are ignored), e.g. to hold pairs out. Returns a scalar."""
    if not 0 < clip < 1:
        raise ValueError(f"clip must be in (0, 1), got {clip}")
    s_cnn = model_similarity(features, gamma)
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
