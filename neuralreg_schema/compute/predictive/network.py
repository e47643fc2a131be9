"""The neural predictive model of Li et al. (2019), section 2.2: images (+ eye position, pupil and
running) -> the responses of every neuron of one scan.

Pure PyTorch. The design follows the sinzlab `neuralpredictors` library (Sinz et al. 2018, Walker
et al. 2019, Lurz et al. 2021), rewritten for current PyTorch; the pieces and how they differ:

Input normalisation
    Images (gray levels 0..255), behavior (pupil, dpupil, running) and eye position arrive raw;
    the network standardises them with training-set statistics held in buffers (`image_mean`,
    `image_std`: one scalar each; `behavior_mean/std`, `eye_mean/std`: per column), so a loaded
    state_dict is self-contained. neuralpredictors does this in the data loader's transforms.
    Optionally (`downsample` > 1) the standardised image is average-pooled before the core: a
    cheap way to give the three conv layers a larger receptive field on a CPU (not in
    neuralpredictors).
Core (`Core`, as `Stacked2dCore`)
    `layers` conv layers, conv -> BatchNorm2d -> ELU each (the ELU also after the last layer,
    neuralpredictors' `final_nonlinearity=True`). Layer 0: `input_kern` x `input_kern`, padded to
    keep the size only if `pad_input`; later layers: `hidden_kern`, 'same' padding, optionally
    depth-separable (1x1 -> depthwise k x k -> 1x1, like `DepthSeparableConv2d`). Skip
    connections as `Stacked2dCore(skip=...)`: with `skip` > 1, layer l >= 1 takes the channel
    concatenation of the outputs of the previous min(skip, l) layers. The core output is the
    concatenation of all layers' outputs (neuralpredictors' `stack=None`), so the readout sees
    every depth, i.e. `layers * hidden_channels` channels.
    Regulariser: `gamma_input` * LaplaceL2norm of the first layer's filters (each filter
    convolved with the 3x3 Laplacian [[0,-1,0],[-1,4,-1],[0,-1,0]], zero padding 1 -
    the padding neuralpredictors recommends, which also penalises mass at the kernel border -
    squared and summed, divided by the summed squared filter weights) + `gamma_hidden` * group
    sparsity of the hidden layers (mean over (out, in) channel pairs of the L2 norm of each
    spatial kernel, averaged over the hidden layers), as `Stacked2dCore.regularizer`.
Readout (`GaussianReadout`, as `FullGaussian2d(gauss_type='uncorrelated')`)
    Per neuron a position mu in [-1, 1]^2 on the core's feature map (x = width, y = height,
    `grid_sample` convention, `align_corners` configurable; True is neuralpredictors' default),
    a per-axis sd sigma, feature weights over the core channels and a bias. While training
    (`sample=None` in train mode, or `sample=True`) each batch element draws its own position
    mu + sigma * N(0, I), clamped to [-1, 1] (neuralpredictors' `batch_sample=True`); in eval
    mode the position is mu. The eye-position shift (from the shifter, in the same grid units)
    is added after the clamp, as in neuralpredictors. The feature vector is bilinearly
    interpolated at the position (`F.grid_sample`, zero padding outside) and dotted with the
    weights; + bias. Positions start uniform in [-init_mu_range, init_mu_range]^2; the trainer
    usually overwrites them with a data-driven start (`init_positions`, `pixel_to_grid`).
    Regulariser: `gamma_readout` * sum |weights| (L1). mu is kept in [-1, 1] and sigma is used
    as |sigma|.
Shifter (`Shifter`, as `MLPShifter`)
    Standardised eye position (x, y) -> `shifter_layers` (Linear, Tanh) blocks of
    `shifter_hidden` units -> Linear -> Tanh: a 2-d shift in grid units (+-1 = half the feature
    map) added to every neuron's read position. The last Linear starts at zero, so the shift is
    exactly 0 at initialisation (neuralpredictors uses its default init).
Modulator (`Modulator`, the MLP modulator of Sinz et al. 2018)
    Standardised (pupil, dpupil, running) -> `modulator_layers` (Linear, ELU) blocks of
    `modulator_hidden` units -> Linear -> per neuron a log gain g; the gain exp(g) > 0 multiplies
    the model's rate AFTER the output nonlinearity: rate = exp(g) * (elu(drive) + 1). (In the
    simulated data, as in the cortex, behavior scales the firing rate, and this keeps the rate
    positive whatever the gain. neuralpredictors' modulators multiply the readout's drive before
    the nonlinearity.) With `modulator_offset`, the MLP also outputs a per-neuron additive term to
    the drive (behavior-related activity that is not a gain). The last Linear starts at zero:
    gain exactly 1 and offset 0 at initialisation.
Output
    rate = modulator_gain * (elu(readout drive [+ offset]) + 1) * `response_scale`, positive.
    `response_scale` (buffer, per neuron) is 1 unless the trainer normalises responses by their
    sd (then the network is trained on responses / sd and reports rates in the original units).

`poisson_loss` is the Poisson negative log-likelihood without the log(k!) term,
pred - target * log(pred + eps), summed over neurons and averaged over trials (see
`train_predictive` for how it is combined with `PredictiveNetwork.regularizer`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.runtime import prepare_input

IMAGE_SHAPE = (36, 64)
LAPLACE_3X3 = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))


# ---------------------------------------------------------------------------------------------
# losses and regularisers


def elu1(x: torch.Tensor) -> torch.Tensor:
    """The output nonlinearity elu(x) + 1: x + 1 for x > 0, exp(x) below. Computed in that form
    (not as F.elu(x) + 1, which rounds to exactly 0 in float32 below x ~ -17), so the rate stays
    strictly positive down to x ~ -87."""
    return torch.where(x > 0, x + 1.0, torch.exp(x.clamp(max=0.0)))


def elu1_inverse(rate: torch.Tensor) -> torch.Tensor:
    """x with elu(x) + 1 = rate (rate > 0): rate - 1 where rate >= 1, log(rate) below."""
    rate = rate.clamp_min(1e-6)
    return torch.where(rate >= 1.0, rate - 1.0, torch.log(rate))


def poisson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8,
                 reduction: str = "mean_trials") -> torch.Tensor:
    """Poisson negative log-likelihood up to the target-only log(k!) term:
    pred - target * log(pred + eps), elementwise on (trials, neurons).

    reduction: 'mean_trials' sums over neurons and averages over trials (the per-trial
    negative log-likelihood of the population; default), 'sum', 'mean' (over all elements) or
    'none'."""
    loss = pred - target * torch.log(pred + eps)
    if reduction == "mean_trials":
        return loss.sum(dim=-1).mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")


def laplace_l2norm(weight: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """neuralpredictors' LaplaceL2norm: sum over all (out, in) filters of the squared 3x3-Laplacian
    filtered kernels (zero `padding`), divided by the summed squared weights. weight: conv weight
    (out, in, k, k). Scale-free: only the kernels' roughness counts."""
    oc, ic, k1, k2 = weight.shape
    w = weight.reshape(oc * ic, 1, k1, k2)
    lap = torch.tensor(LAPLACE_3X3, dtype=w.dtype, device=w.device)[None, None]
    return F.conv2d(w, lap, padding=padding).pow(2).sum() / w.pow(2).sum().clamp_min(1e-12)


def group_sparsity(weight: torch.Tensor) -> torch.Tensor:
    """Mean over (out, in) channel pairs of the L2 norm of each spatial kernel (Stacked2dCore's
    group sparsity for one layer)."""
    return weight.pow(2).sum(dim=(2, 3)).clamp_min(1e-12).sqrt().mean()


# ---------------------------------------------------------------------------------------------
# core


class DepthSeparableConv2d(nn.Sequential):
    """1x1 (in -> out), depthwise k x k (groups = out, 'same' padding), 1x1 (out -> out), no biases
    (a BatchNorm follows), as neuralpredictors' DepthSeparableConv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2,
                      groups=out_channels, bias=False),
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
        )

    @property
    def spatial_weight(self) -> torch.Tensor:
        return self[1].weight


class Core(nn.Module):
    """Stacked 2-d conv core with skip connections (neuralpredictors' Stacked2dCore); see the
    module docstring. Input (B, 1, h, w) standardised images; output (B, layers *
    hidden_channels, h', w') with h' = h - input_kern + 1 unless `pad_input`."""

    def __init__(self, hidden_channels: int, input_kern: int, hidden_kern: int, layers: int = 3,
                 skip: int = 2, pad_input: bool = False, depth_separable: bool = False,
                 momentum: float = 0.1):
        super().__init__()
        if layers < 1:
            raise ValueError(f"the core needs at least one layer, got layers={layers}")
        self.layers, self.skip, self.hidden_channels = int(layers), int(skip), int(hidden_channels)
        convs = [nn.Conv2d(1, hidden_channels, input_kern, bias=False,
                           padding=input_kern // 2 if pad_input else 0)]
        for l in range(1, layers):
            c_in = hidden_channels * (min(skip, l) if skip > 1 else 1)
            if depth_separable:
                convs.append(DepthSeparableConv2d(c_in, hidden_channels, hidden_kern))
            else:
                convs.append(nn.Conv2d(c_in, hidden_channels, hidden_kern,
                                       padding=hidden_kern // 2, bias=False))
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.BatchNorm2d(hidden_channels, momentum=momentum)
                                   for _ in range(layers))

    @property
    def out_channels(self) -> int:
        return self.layers * self.hidden_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for l, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if l >= 1 and self.skip > 1:
                x = torch.cat(outputs[-min(self.skip, l):], dim=1)
            x = F.elu(norm(conv(x)))
            outputs.append(x)
        return torch.cat(outputs, dim=1)

    def hidden_spatial_weights(self) -> list[torch.Tensor]:
        return [c.spatial_weight if isinstance(c, DepthSeparableConv2d) else c.weight
                for c in self.convs[1:]]

    def regularizer(self, gamma_input: float, gamma_hidden: float) -> torch.Tensor:
        reg = gamma_input * laplace_l2norm(self.convs[0].weight)
        hidden = self.hidden_spatial_weights()
        if gamma_hidden and hidden:
            reg = reg + gamma_hidden * sum(group_sparsity(w) for w in hidden) / len(hidden)
        return reg


# ---------------------------------------------------------------------------------------------
# readout, shifter, modulator


class GaussianReadout(nn.Module):
    """Per-neuron Gaussian position readout (neuralpredictors' FullGaussian2d with
    gauss_type='uncorrelated'); see the module docstring.

    Parameters: mu (n, 2) in [-1, 1] (x, y grid coordinates), sigma (n, 2), features (c, n),
    bias (n,)."""

    def __init__(self, in_channels: int, n_neurons: int, init_mu_range: float = 0.5,
                 init_sigma: float = 0.5, align_corners: bool = True):
        super().__init__()
        if not 0.0 < init_mu_range <= 1.0 or init_sigma <= 0.0:
            raise ValueError(f"init_mu_range must be in (0, 1] and init_sigma > 0, got "
                             f"{init_mu_range}, {init_sigma}")
        self.in_channels, self.n_neurons, self.align_corners = in_channels, n_neurons, align_corners
        self.mu = nn.Parameter(torch.empty(n_neurons, 2).uniform_(-init_mu_range, init_mu_range))
        self.sigma = nn.Parameter(torch.full((n_neurons, 2), float(init_sigma)))
        self.features = nn.Parameter(torch.full((in_channels, n_neurons), 1.0 / in_channels))
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def grid(self, batch_size: int, sample: bool) -> torch.Tensor:
        """Read positions (batch_size, n, 2): mu, or mu + |sigma| * N(0, I) per batch element,
        clamped to [-1, 1]."""
        mu = self.mu.unsqueeze(0).expand(batch_size, -1, -1)
        if sample:
            mu = mu + self.sigma.abs() * torch.randn_like(mu)
        return mu.clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor, shift: Optional[torch.Tensor] = None,
                sample: bool = False) -> torch.Tensor:
        """x (B, c, h, w) core features, shift (B, 2) grid units or None -> drive (B, n)."""
        b, c = x.shape[:2]
        if c != self.in_channels:
            raise ValueError(f"readout expects {self.in_channels} channels, got {c}")
        grid = self.grid(b, sample)
        if shift is not None:
            grid = grid + shift[:, None, :]
        feat = F.grid_sample(x, grid.unsqueeze(2), mode="bilinear", padding_mode="zeros",
                             align_corners=self.align_corners)        # (B, c, n, 1)
        return (feat.squeeze(3) * self.features).sum(dim=1) + self.bias

    def l1(self) -> torch.Tensor:
        return self.features.abs().sum()

    @torch.no_grad()
    def constrain(self) -> None:
        """Keep mu in [-1, 1] (called after each optimiser step)."""
        self.mu.clamp_(-1.0, 1.0)


def _mlp(n_in: int, n_hidden: int, n_layers: int, n_out: int, activation: type) -> nn.Sequential:
    """n_layers (Linear, activation) blocks then a Linear to n_out, which starts at zero."""
    blocks: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        blocks += [nn.Linear(width, n_hidden), activation()]
        width = n_hidden
    last = nn.Linear(width, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    blocks.append(last)
    return nn.Sequential(*blocks)


class Shifter(nn.Module):
    """Standardised eye position (B, 2) -> read-position shift (B, 2) in grid units, in (-1, 1);
    exactly 0 at initialisation."""

    def __init__(self, hidden: int = 5, layers: int = 2):
        super().__init__()
        self.mlp = _mlp(2, hidden, layers, 2, nn.Tanh)

    def forward(self, eye: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp(eye))


class Modulator(nn.Module):
    """Standardised behavior (B, 3) -> per-neuron gain exp(g) (B, n), and with `offset` a
    per-neuron additive drive (B, n) (else None); gain 1 and offset 0 at initialisation."""

    def __init__(self, n_neurons: int, hidden: int = 16, layers: int = 1, offset: bool = False,
                 n_inputs: int = 3):
        super().__init__()
        self.n_neurons, self.offset = n_neurons, bool(offset)
        self.mlp = _mlp(n_inputs, hidden, layers, n_neurons * (2 if offset else 1), nn.ELU)

    def forward(self, behavior: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.mlp(behavior)
        log_gain = out[:, :self.n_neurons].clamp(-10.0, 10.0)
        return torch.exp(log_gain), (out[:, self.n_neurons:] if self.offset else None)


# ---------------------------------------------------------------------------------------------
# the network


class PredictiveNetwork(nn.Module):
    """Core + Gaussian readout + shifter + modulator for one scan; see the module docstring.

    `config` holds the architecture keys of `train_predictive.CONFIGS` (hidden_channels,
    input_kern, hidden_kern, layers, skip, pad_input, depth_separable, downsample, bn_momentum,
    init_mu_range, init_sigma, align_corners, shifter, shifter_hidden, shifter_layers,
    modulator, modulator_hidden, modulator_layers, modulator_offset, gamma_input, gamma_hidden,
    gamma_readout); unknown keys are ignored. Inputs are raw: images (B, 36, 64) or (B, 1, 36, 64)
    gray levels, behavior (B, 3), eye (B, 2)."""

    def __init__(self, config: dict, n_neurons: int, image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__()
        self.config = dict(config)
        self.n_neurons = int(n_neurons)
        self.image_shape = tuple(int(s) for s in image_shape)
        c = self.config
        self.downsample = int(c.get("downsample", 1))
        self.core = Core(c["hidden_channels"], c["input_kern"], c["hidden_kern"], c["layers"],
                         c.get("skip", 2), c.get("pad_input", False), c.get("depth_separable", False),
                         c.get("bn_momentum", 0.1))
        self.readout = GaussianReadout(self.core.out_channels, n_neurons, c.get("init_mu_range", 0.5),
                                       c.get("init_sigma", 0.5), c.get("align_corners", True))
        self.shifter = Shifter(c.get("shifter_hidden", 5), c.get("shifter_layers", 2)) \
            if c.get("shifter", True) else None
        self.modulator = Modulator(n_neurons, c.get("modulator_hidden", 16),
                                   c.get("modulator_layers", 1), c.get("modulator_offset", False)) \
            if c.get("modulator", True) else None
        self.register_buffer("image_mean", torch.zeros(()))
        self.register_buffer("image_std", torch.ones(()))
        self.register_buffer("behavior_mean", torch.zeros(3))
        self.register_buffer("behavior_std", torch.ones(3))
        self.register_buffer("eye_mean", torch.zeros(2))
        self.register_buffer("eye_std", torch.ones(2))
        self.register_buffer("response_scale", torch.ones(n_neurons))
        # the core's output size, for sanity checks and for the readout's documentation
        h, w = self.image_shape
        h, w = h // self.downsample, w // self.downsample
        if not c.get("pad_input", False):
            h, w = h - c["input_kern"] + 1, w - c["input_kern"] + 1
        if h < 1 or w < 1:
            raise ValueError(f"input_kern {c['input_kern']} is larger than the "
                             f"{self.image_shape} image after downsample {self.downsample}")
        self.feature_shape = (self.core.out_channels, h, w)

    # -- statistics -----------------------------------------------------------------------------

    @torch.no_grad()
    def set_statistics(self, image_mean: float, image_std: float, behavior_mean, behavior_std,
                       eye_mean, eye_std, response_scale=None) -> None:
        """Store the training-set statistics the forward pass standardises with (stds below 1e-6
        are replaced by 1, so constant inputs become 0)."""
        def put(buf: torch.Tensor, value, is_std: bool = False) -> None:
            v = torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape)
            if is_std:
                v = torch.where(v > 1e-6, v, torch.ones_like(v))
            buf.copy_(v)
        put(self.image_mean, image_mean)
        put(self.image_std, image_std, True)
        put(self.behavior_mean, behavior_mean)
        put(self.behavior_std, behavior_std, True)
        put(self.eye_mean, eye_mean)
        put(self.eye_std, eye_std, True)
        if response_scale is not None:
            put(self.response_scale, response_scale, True)

    @torch.no_grad()
    def init_bias(self, mean_response: torch.Tensor) -> None:
        """Set the readout bias so that, at zero readout drive, the rate equals `mean_response`
        (per neuron, original units): bias = elu1^-1(mean / response_scale)."""
        target = torch.as_tensor(mean_response, dtype=self.readout.bias.dtype,
                                 device=self.readout.bias.device) / self.response_scale
        self.readout.bias.copy_(elu1_inverse(target))

    @torch.no_grad()
    def pixel_to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        """Image pixel coordinates (..., 2: column x, row y of the 36x64 image, pixel centres at
        integers) -> readout grid coordinates (x, y) on the core's feature map, accounting for
        the downsampling, the first layer's cropping (no `pad_input`) and `align_corners`.
        Positions beyond the map fall outside [-1, 1] (the caller clamps)."""
        ds = float(self.downsample)
        crop = 0.0 if self.config.get("pad_input", False) else (self.config["input_kern"] - 1) / 2
        _, h, w = self.feature_shape
        size = torch.tensor([w, h], dtype=torch.float32, device=xy.device)
        j = (xy.float() + 0.5) / ds - 0.5 - crop          # feature-map index (fractional)
        if self.readout.align_corners:
            return -1.0 + 2.0 * j / (size - 1).clamp_min(1.0)
        return -1.0 + (2.0 * j + 1.0) / size

    @torch.no_grad()
    def init_positions(self, xy: torch.Tensor) -> None:
        """Start the readout positions mu at image pixel coordinates xy (n_neurons, 2), clamped
        to the feature map."""
        self.readout.mu.copy_(self.pixel_to_grid(xy.to(self.readout.mu.device)).clamp(-1.0, 1.0))

    # -- forward --------------------------------------------------------------------------------

    def standardize_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        x = (images.to(self.image_mean.dtype) - self.image_mean) / self.image_std
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        return x

    def core_features(self, images: torch.Tensor) -> torch.Tensor:
        """Raw images (B, [1,] h, w) -> core feature map (B, c, h', w'), float32."""
        x = prepare_input(self.standardize_images(images))   # channels-last on a GPU, NCHW on the CPU
        return self.core(x).float()

    def shift(self, eye: torch.Tensor) -> Optional[torch.Tensor]:
        """Raw eye positions (B, 2) -> read-position shift (B, 2) in grid units, or None without a
        shifter."""
        if self.shifter is None:
            return None
        return self.shifter((eye.float() - self.eye_mean) / self.eye_std)

    def forward(self, images: torch.Tensor, behavior: torch.Tensor, eye: torch.Tensor,
                sample: Optional[bool] = None) -> torch.Tensor:
        """Predicted rates (B, n_neurons), positive, in the responses' units. `sample`: draw read
        positions from the Gaussians (default: in train mode only)."""
        sample = self.training if sample is None else bool(sample)
        with torch.autocast("cuda", dtype=torch.bfloat16,
                            enabled=images.is_cuda and bool(self.config.get("amp_bf16", False))):
            feat = self.core_features(images)
        drive = self.readout(feat, self.shift(eye), sample=sample)
        gain = None
        if self.modulator is not None:
            gain, offset = self.modulator((behavior.float() - self.behavior_mean) / self.behavior_std)
            if offset is not None:
                drive = drive + offset
        rate = elu1(drive)
        if gain is not None:
            rate = rate * gain
        return rate * self.response_scale

    # -- regularisation -------------------------------------------------------------------------

    def regularizer(self) -> torch.Tensor:
        """gamma_input * Laplace smoothness of the first-layer filters + gamma_hidden * group
        sparsity of the hidden layers + gamma_readout * L1 of the readout weights."""
        c = self.config
        return (self.core.regularizer(c.get("gamma_input", 0.0), c.get("gamma_hidden", 0.0))
                + c.get("gamma_readout", 0.0) * self.readout.l1())

    def constrain(self) -> None:
        """Project parameters back into their domain after an optimiser step."""
        self.readout.constrain()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["PredictiveNetwork", "Core", "GaussianReadout", "Shifter", "Modulator",
           "DepthSeparableConv2d", "poisson_loss", "laplace_l2norm", "group_sparsity", "elu1",
           "elu1_inverse", "IMAGE_SHAPE", "LAPLACE_3X3"]

