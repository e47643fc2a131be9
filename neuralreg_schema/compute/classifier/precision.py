"""bf16 autocast and the similarity loss (Eqs. 8-10): its error against float32, and bounds that say
when bf16 is unsafe.

On a GPU the classifier runs under bf16 autocast; `train.train_step` casts the stimulus features to
float32 and computes the similarity loss outside autocast. Two cases are compared with float32 on the
same device (`compare`), on the same float32 features f_i^(k), target and gamma:

  'features'  what trains: the features carry bf16's rounding (the network's last operation wrote
              them in bf16), the loss runs in float32;
  'loss'      what would happen if the loss ran under autocast too: the features in bf16 and Eq. 9's
              Gram matrix e e^T a bf16 matmul (inputs and output rounded), the target rounded to bf16.

Bounds (first order; bf16 keeps 8 significant bits: unit roundoff u = 2^-9)
-------------------------------------------------------------------------
Rounding errors are independent and uniform, |delta| <= u |x|, variance u^2 x^2 / 3 per value.

* Features: rounding f_i moves the centred row c_i = f_i - f_bar by d_i (d_ik ~ u f_ik / sqrt 3), so the
  unit row e_i = c_i / |c_i| by (d_i - (d_i . e_i) e_i) / |c_i|. To first order
  dS_ij = d_i . (e_j - S_ij e_i) / |c_i| + d_j . (e_i - S_ij e_j) / |c_j|, whose standard deviation is
  sigma_ij^2 = (u^2 / 3) [sum_k f_ik^2 (e_jk - S_ij e_ik)^2 / |c_i|^2 + (i <-> j)]   (computed exactly).
  Large when the centring cancels most of the feature (|f_i| >> |c_i|: a big common offset) or when
  the feature sits in a few large entries.
* Loss under autocast: besides that, the centring in bf16 (f, f_bar and f - f_bar rounded: 3x the
  variance), rounding e (the same formula with f -> e, c -> e, 1 -> |e|), the product S_ij itself
  (<= u |S_ij|, worst case), the target (<= u |S_n|), and arctanh, the difference and the mean in
  bf16 (<= u (|z_cnn| + |z_n| + |r|) on z, 2 u L on the loss). The clip 0.999 itself is no bf16
  number (it rounds to 1): a similarity that may round to within 2^-9 of +-1 makes arctanh, and the
  bound, infinite.
* Layers: S^CNN = sum_k gamma_k S^(CNN-k): sigma adds in quadrature over the layers (weights gamma_k).
* arctanh: dz = dS / (1 - S^2) (S inside the clip; at the clip the derivative is 1/(1 - clip^2)):
  near |S| = 1 a small error of S becomes a large one of z. With K_SIGMA = 6 standard deviations of
  the random part, dz_ij <= K_SIGMA sigma_ij / (1 - S_ij^2) + worst-case parts.
* Loss L = mean over pairs of r^2, r = z_cnn - z_n: |dL| <= mean(2 |r| dz + dz^2).

`compare` reports the measured relative errors of the loss and of its gradients (with respect to the
features and to Eq. 10's gamma logits) and the bound on the loss's relative error; bf16 is called
unsafe when that bound exceeds LOSS_TOL (the loss would differ from float32 by more than 1%). The
gradient has no bound here: it is measured and held to GRAD_TOL. Whether the bound holds (measured <=
bound) is part of the result, so a kernel that rounds worse than bf16 is caught too.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from . import similarity_loss

U_BF16 = 2.0 ** -9          # bf16 unit roundoff (8 significant bits, round to nearest)
K_SIGMA = 6.0               # standard deviations of the random rounding error the bound allows
LOSS_TOL = 1e-2             # relative loss error above which bf16 is called unsafe
GRAD_TOL = 5e-2             # relative gradient error (max |difference| / max |float32 gradient|)


def _unit_rows(f: torch.Tensor, center: torch.Tensor | str) -> tuple[torch.Tensor, torch.Tensor]:
    f = f.reshape(f.shape[0], -1).double()
    c = f - (f.mean(dim=0, keepdim=True) if isinstance(center, str) else center.detach().reshape(1, -1).double())
    return c / c.norm(dim=1, keepdim=True).clamp_min(similarity_loss.EPS), c.norm(dim=1).clamp_min(similarity_loss.EPS)


def _rounding_variance(x: torch.Tensor, e: torch.Tensor, s: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """(B, B) variance / u^2 of dS_ij from rounding the rows x_i (unit rows e, Gram s, centred norms)."""
    x2 = x * x
    # sum_k x_ik^2 (e_jk - s_ij e_ik)^2 = x2 e2^T - 2 s (x2 e) e^T + s^2 (x2 . e2 row sums)
    a = x2 @ (e * e).T - 2 * s * ((x2 * e) @ e.T) + s * s * (x2 * e * e).sum(dim=1, keepdim=True)
    a = a.clamp_min(0) / (norm[:, None] ** 2)
    return (a + a.T) / 3.0


def predicted_error(features: Mapping[int, torch.Tensor], target: torch.Tensor, gamma: torch.Tensor,
                    *, center: Mapping[int, torch.Tensor] | str, clip: float = 0.999, mode: str = "features") -> dict:
    """The bound of the module docstring for `mode` ('features' or 'loss'): {'loss': float32 loss,
    'max_dS', 'max_dz', 'loss_rel_bound', 'max_abs_S' (largest off-diagonal |S^CNN|), 'max_offset'
    (largest |f_i| / |f_i - f_bar|: how much the centring cancels)}."""
    if mode not in ("features", "loss"):
        raise ValueError(f"mode must be 'features' or 'loss', got {mode!r}")
    keys = sorted(features)
    g = gamma.detach().double().cpu()                 # the bound is computed in float64 on the CPU
    var = 0.0
    s_cnn = 0.0
    offset = 0.0
    for m, k in enumerate(keys):
        f = features[k].detach().reshape(features[k].shape[0], -1).double().cpu()
        e, norm = _unit_rows(f, "batch" if isinstance(center, str) else center[k].detach().cpu())
        s = e @ e.T
        v = _rounding_variance(f, e, s, norm)
        if mode == "loss":          # f, f_bar and their difference rounded (3x), then e for the matmul
            v = 3 * v + _rounding_variance(e, e, s, torch.ones_like(norm))
        var = var + (g[m] ** 2) * v
        s_cnn = s_cnn + g[m] * s
        offset = max(offset, float((f.norm(dim=1) / norm).max()))
    b = s_cnn.shape[0]
    i, j = torch.triu_indices(b, b, offset=1)
    s_ij = s_cnn[i, j]
    ds = K_SIGMA * torch.sqrt(var[i, j]) * U_BF16
    n_ij = target.detach().double().cpu()[i, j].clamp(-clip, clip)
    if mode == "loss":
        ds = ds + U_BF16 * s_ij.abs()
    slope = 1.0 / (1.0 - s_ij.clamp(-clip, clip) ** 2)
    dz = ds * slope + ((U_BF16 * n_ij.abs() / (1.0 - n_ij ** 2)) if mode == "loss" else 0.0)
    z_cnn, z_n = torch.atanh(s_ij.clamp(-clip, clip)), torch.atanh(n_ij)
    r = z_cnn - z_n
    if mode == "loss":              # arctanh and the difference computed in bf16
        dz = dz + U_BF16 * (z_cnn.abs() + z_n.abs() + r.abs())
        # the clip (0.999) rounds to 1 in bf16: a similarity that may round to +-1 makes arctanh infinite
        dz = torch.where((s_ij.abs() + ds > 1 - U_BF16) | (n_ij.abs() > 1 - U_BF16), torch.inf, dz)
    loss = float((r ** 2).mean())
    d_loss = float((2 * r.abs() * dz + dz ** 2).mean()) + (2 * U_BF16 * loss if mode == "loss" else 0.0)
    return {"loss": loss, "max_dS": float(ds.max()), "max_dz": float(dz.max()),
            "loss_rel_bound": d_loss / max(loss, 1e-30), "max_abs_S": float(s_ij.abs().max()),
            "max_offset": offset}


def _loss_and_grads(features, target, logits, center, clip, mode, device):
    feats = {k: v.detach().clone().requires_grad_(True) for k, v in features.items()}
    lg = logits.detach().clone().requires_grad_(True)
    gamma = torch.softmax(lg, dim=0)
    if mode == "float32":
        loss = similarity_loss.similarity_loss(feats, target, gamma, center=center, clip=clip)
    elif mode == "features":        # as train_step: features written in bf16, the loss in float32
        rounded = {k: v.to(torch.bfloat16).float() for k, v in feats.items()}
        loss = similarity_loss.similarity_loss(rounded, target, gamma, center=center, clip=clip)
    else:                           # the loss under autocast
        with torch.autocast(device.type, dtype=torch.bfloat16):
            rounded = {k: v.to(torch.bfloat16) for k, v in feats.items()}
            loss = similarity_loss.similarity_loss(rounded, target.to(torch.bfloat16), gamma, center=center,
                                                   clip=clip)
    loss.float().backward()
    grads = torch.cat([feats[k].grad.reshape(-1).float() for k in sorted(feats)])
    return float(loss.detach()), grads, lg.grad.float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def compare(features: Mapping[int, torch.Tensor], target: torch.Tensor, logits: torch.Tensor, *,
            center: Mapping[int, torch.Tensor] | str, clip: float = 0.999, mode: str = "features",
            device=None) -> dict:
    """The similarity loss and its gradients with bf16 (`mode` 'features' or 'loss', see the module
    docstring) against float32, on `device` (default: the features'), for float32 `features`
    {k: (B, ...)}, `target` (B, B), Eq. 10's gamma `logits` (K,) and Eq. 9's `center`. Returns the
    measured relative errors ('loss_rel', 'grad_features_rel', 'grad_gamma_rel'), the bound
    (`predicted_error`), 'bound_holds' (measured loss error within the bound) and 'safe' (the bound
    within LOSS_TOL and the gradients within GRAD_TOL)."""
    dev = torch.device(device) if device is not None else next(iter(features.values())).device
    features = {k: v.detach().float().to(dev) for k, v in features.items()}
    target = target.detach().float().to(dev)
    logits = logits.detach().float().to(dev)
    if not isinstance(center, str):
        center = {k: v.detach().float().to(dev) for k, v in center.items()}
    ref_loss, ref_gf, ref_gg = _loss_and_grads(features, target, logits, center, clip, "float32", dev)
    loss, gf, gg = _loss_and_grads(features, target, logits, center, clip, mode, dev)
    bound = predicted_error(features, target, torch.softmax(logits, 0), center=center, clip=clip, mode=mode)
    loss_rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
    out = {"mode": mode, "device": dev.type, "loss_fp32": ref_loss, "loss_bf16": loss, "loss_rel": loss_rel,
           "grad_features_rel": _rel(gf, ref_gf), "grad_gamma_rel": _rel(gg, ref_gg),
           **{f"bound_{k}": v for k, v in bound.items() if k != "loss"}}
    # float32 itself rounds at ~1e-7 relative: a measurement below that is within any bound
    out["bound_holds"] = bool(loss_rel <= bound["loss_rel_bound"] + 1e-5)      # inf <= inf holds
    out["safe"] = bool(bound["loss_rel_bound"] <= LOSS_TOL and out["grad_features_rel"] <= GRAD_TOL
                       and out["grad_gamma_rel"] <= GRAD_TOL)
    return out


def network_check(recipe: str = "demo", device=None, n_stim: int | None = None, seed: int = 0,
                  width: int | None = None) -> list[dict]:
    """`compare` in both modes on the stimulus features of a random-init classifier of `recipe` (its
    width, unless `width`, and layers; one stimulus batch of the recipe's size, or `n_stim`, of random
    36 x 64 images, centred by the mean over 4 such batches, as the running mean starts) against a
    random target with the spread of a neural one, on `device`."""
    from .network import ClassifierNet
    from .recipes import check_config, default_config
    from ..common.runtime import prepare_input, resolve_device
    dev = resolve_device(device)
    cfg = check_config(default_config(recipe))
    b = n_stim or cfg["stim_batch"]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ClassifierNet(cfg["arch"], 10, width or cfg["width"]).to(dev).train()
    images = torch.rand(4 * b, 1, 36, 64, generator=g).to(dev)
    with torch.no_grad():
        _, feats = net(prepare_input(images, dev), cfg["layers"])
    center = {k: v.reshape(len(v), -1).mean(dim=0) for k, v in feats.items()}
    features = {k: v[:b] for k, v in feats.items()}
    m = (torch.randn(b, b, generator=g) * 0.3).clamp(-0.9, 0.9)
    target = ((m + m.T) / 2).fill_diagonal_(1.0)
    logits = torch.randn(len(cfg["layers"]), generator=g) * 0.1
    return [{"recipe": recipe, "stim_batch": b, **compare(features, target, logits, center=center, clip=cfg["clip"],
                                                          mode=mode, device=dev)}
            for mode in ("features", "loss")]
