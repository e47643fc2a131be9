"""VGG19 features for the paper's 'VGG' control (Eq. 2 on the features of a pretrained VGG19).

The network is torchvision's VGG19 `features` stack (configuration E: 64, 64, M, 128, 128, M,
256 x 4, M, 512 x 4, M, 512 x 4, M; 3x3 convolutions with padding 1, ReLU, 2x2 max pooling) written
out here, because torchvision cannot be installed beside the CPU torch wheel. The parameter names are
torchvision's (`features.0.weight`, `features.2.weight`, `features.5.weight`, ...), so the ImageNet
weights file that torchvision downloads (VGG19_URL, a plain state dict) loads unchanged; only the
modules up to the requested layer are built, the rest of the file (deeper convolutions, classifier)
is ignored.

Layer names follow the RSA/neuroscience convention: "convB_C" is the rectified output (after the
ReLU) of the C-th convolution of block B, e.g. "conv3_1" = the first convolution of block 3 =
torchvision `features[11]` (the ReLU after `features[10]`); "poolB" is the max-pooling output that
ends block B.

Images are used at their native size (the paper's 36 x 64 stimuli): no upsampling to ImageNet's
224 x 224 unless `upsample` asks for it. At 36 x 64, conv3_1 has 256 channels x 9 x 16 = 36864
features per image.

Weights (`load_vgg19_state`), in this order: the file named by `path` or by the environment variable
NEURALREG_VGG19_WEIGHTS; the torch hub cache (<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth,
or `model_dir`); a download by torch.hub.load_state_dict_from_url with torch's sha256-prefix check.
Offline, put the file in one of the first two places.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from . import rsa

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
WEIGHTS_ENV = "NEURALREG_VGG19_WEIGHTS"

# torchvision's cfg "E"
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
        512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_table():
    """(name -> index of the last module of that layer in `features`, list of the convolutions as
    (features index, in channels, out channels))."""
    layers, convs = {}, []
    index, block, conv, channels = 0, 1, 1, 3
    for item in _CFG:
        if item == "M":
            layers[f"pool{block}"] = index
            index, block, conv = index + 1, block + 1, 1
        else:
            convs.append((index, channels, item))
            layers[f"conv{block}_{conv}"] = index + 1          # the ReLU after the convolution
            index, conv, channels = index + 2, conv + 1, item
    return layers, convs


LAYERS, _CONVS = _layer_table()     # LAYERS["conv3_1"] == 11, LAYERS["pool5"] == 36


class VGGWeightsError(RuntimeError):
    """The VGG19 weights could not be found, downloaded or used."""


def _check_layer(layer: str) -> int:
    if layer not in LAYERS:
        raise ValueError(f"unknown VGG19 layer {layer!r}; known: {', '.join(LAYERS)}")
    return LAYERS[layer]


def required_keys(layer: str = "conv3_1") -> dict[str, tuple[int, ...]]:
    """The torchvision state-dict keys (and shapes) that the network up to `layer` needs."""
    end = _check_layer(layer)
    keys = {}
    for index, c_in, c_out in _CONVS:
        if index <= end:
            keys[f"features.{index}.weight"] = (c_out, c_in, 3, 3)
            keys[f"features.{index}.bias"] = (c_out,)
    return keys


class VGG19Features(nn.Module):
    """torchvision's VGG19 `features`, built up to and including `layer` (see the module docstring
    for the names). Input (n, 3, H, W) ImageNet-normalised; output the layer's activation map."""

    def __init__(self, layer: str = "conv3_1"):
        super().__init__()
        end = _check_layer(layer)
        self.layer = layer
        modules, channels = [], 3
        for item in _CFG:
            if len(modules) > end:                  # build (and randomly initialise) no further
                break
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*modules[:end + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @classmethod
    def from_state(cls, state: Mapping, layer: str = "conv3_1") -> "VGG19Features":
        """The network with the torchvision weights in `state` (validated; extra keys ignored)."""
        validate_state(state, layer)
        model = cls(layer)
        result = model.load_state_dict({k: v for k, v in state.items() if k in required_keys(layer)},
                                       strict=False)
        if result.missing_keys:       # cannot happen after validate_state; kept as a guard
            raise VGGWeightsError(f"VGG19 weights lack {result.missing_keys[0]}")
        return model.eval()


def validate_state(state, layer: str = "conv3_1") -> None:
    """VGGWeightsError unless `state` maps every key that the network up to `layer` needs to a
    tensor of the right shape."""
    if not isinstance(state, Mapping):
        raise VGGWeightsError(f"VGG19 weights must be a state dict (a mapping of tensors), "
                              f"got {type(state).__name__}")
    for key, shape in required_keys(layer).items():
        if key not in state:
            raise VGGWeightsError(f"VGG19 weights lack the key {key!r} (needed up to {layer}; "
                                  f"expected torchvision's vgg19 state-dict names)")
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise VGGWeightsError(f"VGG19 weights: {key!r} has shape {got}, expected {shape}")
        if not torch.isfinite(value).all():
            raise VGGWeightsError(f"VGG19 weights: {key!r} contains NaN or inf")


def _load_file(path: str, origin: str):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:                          # noqa: BLE001 - reported with its cause
        raise VGGWeightsError(f"cannot read VGG19 weights file {path} ({origin}): "
                              f"{type(error).__name__}: {error}") from error
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return state


def load_vgg19_state(path: str | None = None, *, url: str = VGG19_URL, model_dir: str | None = None,
                     allow_download: bool = True, layer: str = "conv3_1", with_source: bool = False):
    """The torchvision VGG19 ImageNet state dict (CPU tensors), validated up to `layer`.

    Looked for in this order:
      1. `path`, else the file named by $NEURALREG_VGG19_WEIGHTS (an error if it does not exist);
      2. the torch hub cache: `model_dir`, default <torch.hub.get_dir()>/checkpoints, file name from
         `url` (vgg19-dcbb9e9d.pth);
      3. torch.hub.load_state_dict_from_url(url, model_dir, check_hash=True): torch's download into
         that cache, checked against the sha256 prefix in the file name (dcbb9e9d).
    No file and download failing (offline) or disallowed -> VGGWeightsError saying what was tried
    and where to put the file. Returns the dict, or (dict, a one-line description of where it came
    from) when with_source=True."""
    _check_layer(layer)
    origin = "path argument"
    if path is None and os.environ.get(WEIGHTS_ENV):
        path, origin = os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}"
    if path is not None:
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            raise VGGWeightsError(f"VGG19 weights file {path} (from the {origin}) does not exist; "
                                  f"download {url} and point {WEIGHTS_ENV} (or path=) at it")
        state, source = _load_file(path, origin), f"file {path} ({origin})"
    else:
        filename = os.path.basename(urlparse(url).path)
        cache_dir = model_dir if model_dir is not None else os.path.join(torch.hub.get_dir(), "checkpoints")
        cached = os.path.join(cache_dir, filename)
        if os.path.isfile(cached):
            state, source = _load_file(cached, "torch hub cache"), f"cache {cached}"
        else:
            tried = (f"Tried: ${WEIGHTS_ENV} (not set); the torch hub cache file {cached} (absent); ")
            fix = (f"Download {url} (torchvision's ImageNet VGG19 weights, ~550 MB) where there is a "
                   f"network, then either put it at {cached} or anywhere and set "
                   f"{WEIGHTS_ENV}=/path/to/{filename} (or pass path=...).")
            if not allow_download:
                raise VGGWeightsError(f"No VGG19 weights. {tried}downloading was not allowed "
                                      f"(allow_download=False). {fix}")
            try:
                state = torch.hub.load_state_dict_from_url(url, model_dir=cache_dir, check_hash=True,
                                                           map_location="cpu", progress=False,
                                                           weights_only=True)
            except Exception as error:                  # noqa: BLE001 - offline, bad hash, bad file
                raise VGGWeightsError(f"No VGG19 weights. {tried}downloading {url} failed: "
                                      f"{type(error).__name__}: {error}. {fix}") from error
            source = f"downloaded from {url} to {cached}"
    validate_state(state, layer)
    return (state, source) if with_source else state


def weights_location(url: str = VGG19_URL) -> str:
    """Where the weights are looked for: $NEURALREG_VGG19_WEIGHTS, else the torch hub cache file."""
    if os.environ.get(WEIGHTS_ENV):
        return os.path.expanduser(os.environ[WEIGHTS_ENV])
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def weights_available(url: str = VGG19_URL) -> bool:
    """Whether the VGG19 weights are on this machine already (no download is tried)."""
    return os.path.isfile(weights_location(url))


def _as_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[0] < 1:
        raise ValueError(f"images must be (n, height, width) gray levels, got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or inf")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise ValueError(f"images must be gray levels in 0..255, got values in [{low:g}, {high:g}]")
    return images


def vgg_features(images: np.ndarray, state: Mapping, layer: str = "conv3_1", *, batch_size: int = 256,
                 device: str | torch.device = "cpu", upsample: float | None = None) -> np.ndarray:
    """Flattened VGG19 activations at `layer`: float32 (n, D), D = channels x height x width in
    torch's (C, H, W) order.

    images: (n, H, W) (or (n, 1, H, W)) gray levels 0..255. Each image is scaled to [0, 1], copied
    into the 3 colour channels, normalised with the ImageNet mean/std per channel (as torchvision's
    training did), and run at its native size (36 x 64 for the stimuli: conv3_1 gives 256 x 9 x 16 =
    36864 features). `upsample` (e.g. 2.0) resizes bilinearly first; default None = native size."""
    images = _as_images(images)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if upsample is not None and not upsample > 0:
        raise ValueError(f"upsample must be a positive factor or None, got {upsample!r}")
    model = VGG19Features.from_state(state, layer).to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = None
    with torch.inference_mode():
        for start in range(0, len(images), int(batch_size)):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
            x = (x.to(device) / 255.0).unsqueeze(1)
            if upsample is not None:
                x = nn.functional.interpolate(x, scale_factor=float(upsample), mode="bilinear",
                                              align_corners=False)
            x = (x.expand(-1, 3, -1, -1) - mean) / std
            y = model(x).flatten(1).cpu().numpy()
            if out is None:
                out = np.empty((len(images), y.shape[1]), dtype=np.float32)
            out[start:start + len(y)] = y
    return out


def vgg_similarity(images: np.ndarray, state: Mapping, layer: str = "conv3_1", *, block: int = 1024,
                   **kw) -> np.ndarray:
    """Eq. 2 on the flattened VGG19 features at `layer` (no SNR weights): float32 (n, n), exactly
    symmetric, unit diagonal. `kw` goes to `vgg_features` (batch_size, device, upsample). The feature
    array is overwritten by its unit vectors (one n x D float32 array in memory, not two)."""
    features = vgg_features(images, state, layer, **kw)
    return rsa.similarity(features, block=block, overwrite_input=True)
