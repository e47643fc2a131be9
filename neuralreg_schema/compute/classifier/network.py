"""The classifier network: a ResNet (resnet.py) on [0, 1] grey images, its serialization and its clean
accuracy. Pure PyTorch; never imports datajoint.

Inputs: pixel values in [0, 1] (uint8 / 255 for the data set, gray level / 255 for the stimuli),
standardised inside the network by the training set's mean and sd (`ClassifierNet`), so that the
saved network takes [0, 1] images: the bounds the robustness evaluation uses.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from . import similarity_loss
from ..common.runtime import autocast, prepare_input
from ..common.serialization import CLASSIFIER_NETWORK_FORMAT, torch_bytes, torch_payload
from .resnet import ResNet, build_resnet


class ClassifierNet(nn.Module):
    """A ResNet on [0, 1] images, standardised inside by fixed (mean, sd) buffers."""

    def __init__(self, arch: str, num_classes: int, width: int, mean: float = 0.5, sd: float = 0.25):
        super().__init__()
        self.arch, self.num_classes, self.width = arch, int(num_classes), int(width)
        self.resnet: ResNet = build_resnet(arch, num_classes=num_classes, in_channels=1, width=width)
        self.register_buffer("input_mean", torch.tensor(float(mean)))
        self.register_buffer("input_sd", torch.tensor(float(sd)))

    def forward(self, x: torch.Tensor, feature_layers=()):
        """(logits, {layer: features}) for images x (B, 1, H, W) in [0, 1]."""
        return self.resnet((x - self.input_mean) / self.input_sd, feature_layers)


def serialize_classifier(net: ClassifierNet, layer_weights: similarity_loss.LayerWeights | None = None,
                         feature_mean: similarity_loss.RunningFeatureMean | None = None) -> bytes:
    """torch.save bytes of the network (CPU tensors) and, if given, the layer logits and the final
    running feature mean (Eq. 9's f_bar per layer, `load_feature_mean`)."""
    return torch_bytes({
        "format": CLASSIFIER_NETWORK_FORMAT, "arch": net.arch, "num_classes": net.num_classes, "width": net.width,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "layers": list(layer_weights.layers) if layer_weights is not None else None,
        "layer_logits": layer_weights.logits.detach().cpu().clone() if layer_weights is not None else None,
        "feature_mean": ({k: v.detach().cpu().clone() for k, v in feature_mean.center().items()}
                         if feature_mean is not None and feature_mean.ready else None)})


def load_feature_mean(state: bytes) -> dict[int, torch.Tensor] | None:
    """{k: (D_k,)} the running f_bar a regularized classifier ended training with (the centre of its
    held-out loss), from `ClassifierResult.state`; None for an unregularized one or an older state."""
    blob = torch_payload(state)
    mean = blob.get("feature_mean")
    return {int(k): v for k, v in mean.items()} if mean is not None else None


def load_classifier(state: bytes, device: Union[str, torch.device] = "cpu") -> ClassifierNet:
    """The trained network from `ClassifierResult.state`, in eval mode on `device`."""
    blob = torch_payload(state)
    net = ClassifierNet(blob["arch"], blob["num_classes"], blob["width"])
    net.load_state_dict(blob["state_dict"])
    return net.to(device).eval()


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def accuracy(net: ClassifierNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of `images` (N, 1, H, W) in [0, 1] classified as `labels`, in eval mode."""
    was = net.training
    net.eval()
    dev = next(net.parameters()).device
    correct = 0
    try:
        for s in range(0, len(images), batch_size):
            with autocast(dev):
                logits, _ = net(prepare_input(images[s:s + batch_size].to(dev), dev))
            correct += int((logits.argmax(1) == labels[s:s + batch_size].to(dev)).sum())
    finally:
        net.train(was)
    return correct / max(1, len(images))
