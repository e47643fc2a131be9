"""The classifier recipes (named configs), their checks and the learning-rate schedule; the training
loop that uses them is train.py. Pure Python; never imports datajoint.

Learning rate (the paper, Sec. 4): SGD, lr 0.1 decayed by 0.3 every 4 epochs and reset to 0.1
after epoch 20 (`learning_rate`). Momentum 0.9 and weight decay 5e-4 (not on the layer logits) are
the usual CIFAR ResNet settings; the paper does not state them.

Layers: `layers: "uniform"` (the default) is resolved by `check_config` into K = 5 uniformly located
convolutions of the arch (models/resnet.uniform_layers: ResNet18 1/5/9/13/17, the paper's;
ResNet34 1/9/17/25/33), so stored, content-addressed configs always list the layers explicitly.
"""
from __future__ import annotations

import math

from ..common.training import named_config, with_defaults
from .resnet import build_resnet, uniform_layers


_COMMON = dict(
    arch="resnet18",          # resnet18 | resnet34 (CIFAR form, resnet.py)
    width=64,                 # channels of the first stage (64: the standard ResNet)
    epochs=40,
    batch_size=64,            # classification images per step
    lr=0.1,                   # initial SGD learning rate
    lr_decay=0.3,             # multiplied every lr_step epochs ...
    lr_step=4,
    lr_reset_epoch=20,        # ... and reset to lr after this many epochs (0: never)
    momentum=0.9,
    weight_decay=5e-4,        # on the network's weights; not on the layer logits
    alpha=20.0,               # Eq. 7: weight of the similarity loss
    layers="uniform",         # conv indices whose features enter Eq. 10, or "uniform": K = 5 uniformly
    #                           located convs (models/resnet.uniform_layers; resolved by check_config:
    #                           ResNet18 1/5/9/13/17 as in the paper, ResNet34 1/9/17/25/33)
    stim_batch=64,            # stimulus images per step: stim_batch (stim_batch - 1) / 2 pairs (2016)
    center_momentum=0.1,      # Eq. 9's f_bar: running mean of the stimulus features, EMA momentum per step
    clip=0.999,               # similarities clamped to [-clip, clip] before the arctanh (similarity_loss)
    stimulus_bn="batch",      # BatchNorm in the stimulus pass: 'batch' (the stimulus batch's statistics)
    #                           or 'eval' (the running ones); neither updates the running statistics
    augment=True,             # random crop (zero padding crop_padding) + horizontal flip
    crop_padding=4,
    heldout_fraction=0.1,     # of the target's images kept out of training (held-out pairs) ...
    heldout_max=256,          # ... at most this many
    max_train=0,              # use only the first max_train training images (0: all); tests/demo
    eval_batch_size=500,
)

CONFIGS: dict[str, dict] = {
    # the paper (Sec. 4): ResNet18, SGD 40 epochs, batch 64, lr 0.1 x 0.3 every 4 epochs, reset
    # after epoch 20, alpha 20, layers 1/5/9/13/17; as many stimulus images as classification images
    # per step (64), all 2016 pairs among them; for a GPU (about 4.5 h per model in the paper)
    "paper": {**_COMMON},
    # two CPU cores: a narrow ResNet18 (width 16), 8 epochs with the paper's schedule compressed
    # (decay every 2 epochs, reset after 4), 12 stimuli (66 pairs) per step
    "demo": {**_COMMON, "width": 16, "epochs": 8, "lr": 0.05, "lr_step": 2, "lr_reset_epoch": 4,
             "stim_batch": 12, "heldout_max": 128, "eval_batch_size": 400},
    # tests: seconds
    "tiny": {**_COMMON, "width": 4, "epochs": 2, "batch_size": 32, "lr": 0.05, "lr_step": 1,
             "lr_reset_epoch": 0, "stim_batch": 8, "heldout_max": 32, "max_train": 256,
             "eval_batch_size": 256},
}


def default_config(name: str = "demo") -> dict:
    """A copy of a named recipe of CONFIGS."""
    return named_config(CONFIGS, name, "classifier")


def check_config(config: dict) -> dict:
    """`config` completed with the defaults and checked; ValueError names a bad or unknown key."""
    cfg = with_defaults(config, _COMMON, "classifier")
    if str(cfg["arch"]).lower() not in ("resnet18", "resnet34"):
        raise ValueError(f"config arch must be resnet18 or resnet34, got {cfg['arch']!r}")
    cfg["arch"] = str(cfg["arch"]).lower()
    for k in ("width", "epochs", "batch_size", "lr_step", "stim_batch", "eval_batch_size"):
        if isinstance(cfg[k], bool) or int(cfg[k]) != cfg[k] or cfg[k] < 1:
            raise ValueError(f"config {k} must be a positive integer, got {cfg[k]!r}")
        cfg[k] = int(cfg[k])
    for k in ("lr_reset_epoch", "crop_padding", "heldout_max", "max_train"):
        if isinstance(cfg[k], bool) or int(cfg[k]) != cfg[k] or cfg[k] < 0:
            raise ValueError(f"config {k} must be an integer >= 0, got {cfg[k]!r}")
        cfg[k] = int(cfg[k])
    if cfg["stim_batch"] < 2:
        raise ValueError("config stim_batch must be >= 2 (a pair)")
    for k in ("lr", "lr_decay"):
        if not float(cfg[k]) > 0:
            raise ValueError(f"config {k} must be positive, got {cfg[k]!r}")
    for k in ("momentum", "weight_decay", "alpha"):
        if not float(cfg[k]) >= 0 or not math.isfinite(float(cfg[k])):
            raise ValueError(f"config {k} must be a finite number >= 0, got {cfg[k]!r}")
    if not 0 < float(cfg["clip"]) < 1:
        raise ValueError(f"config clip must be in (0, 1), got {cfg['clip']!r}")
    if not 0 <= float(cfg["heldout_fraction"]) < 1:
        raise ValueError(f"config heldout_fraction must be in [0, 1), got {cfg['heldout_fraction']!r}")
    if isinstance(cfg["center_momentum"], bool) or not 0 < float(cfg["center_momentum"]) <= 1:
        raise ValueError(f"config center_momentum must be in (0, 1], got {cfg['center_momentum']!r}")
    layers = cfg["layers"]
    if layers == "uniform":                 # resolved here, so that stored configs list the layers
        layers = list(uniform_layers(cfg["arch"]))
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"config layers must be 'uniform' or a non-empty list of conv indices, got {layers!r}")
    cfg["layers"] = sorted({int(k) for k in layers})
    net = build_resnet(cfg["arch"], num_classes=2, width=1)
    net.check_layers(cfg["layers"])
    cfg["augment"] = bool(cfg["augment"])
    if cfg["stimulus_bn"] not in ("eval", "batch"):
        raise ValueError(f"config stimulus_bn must be 'eval' or 'batch', got {cfg['stimulus_bn']!r}")
    for k in ("lr", "lr_decay", "momentum", "weight_decay", "alpha", "clip", "heldout_fraction", "center_momentum"):
        cfg[k] = float(cfg[k])
    return cfg


def learning_rate(config: dict, epoch: int) -> float:
    """The paper's schedule for 0-based `epoch`: lr * lr_decay ** (e // lr_step), where e counts
    from the last reset (every lr_reset_epoch epochs; 0 = never)."""
    reset = config["lr_reset_epoch"]
    e = epoch % reset if reset else epoch
    return config["lr"] * config["lr_decay"] ** (e // config["lr_step"])
