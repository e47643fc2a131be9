"""CIFAR-form ResNet18 / ResNet34 with numbered convolutional feature layers (paper Sec. 3, Fig. 3).

Architecture (He et al. 2016, the common CIFAR variant): a 3x3 stem convolution with stride 1,
BatchNorm and ReLU, no max-pooling; four stages of BasicBlocks ([2, 2, 2, 2] for ResNet18,
[3, 4, 6, 3] for ResNet34) with `width * (1, 2, 4, 8)` channels, stride 1 in the first stage and 2
in the first block of the others; global average pooling and one linear layer. Each BasicBlock is
conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut (identity, or 1x1 conv + BN where the
shape changes), then ReLU. Inputs default to one channel (grayscale CIFAR, like the stimuli).
A 32 x 32 input gives feature maps of 32, 32, 16, 8, 4 pixels in the stem and the four stages.

Convolution numbering ("layer k" in the paper: layers 1, 5, 9, 13, 17 of ResNet18)
---------------------------------------------------------------------------------
Convolutions on the main path are numbered 1, 2, ... in forward order: the stem is conv 1, then
each BasicBlock contributes its conv1 and conv2. The 1x1 shortcut (downsample) convolutions are NOT
counted; this is the usual count that makes ResNet18 "17 convolutions + 1 fully connected = 18"
(ResNet34: 33 + 1). `conv_layer_names(model)[k - 1]` is the module path of conv k.

"Layer k features" is the rectified output that follows conv k in the forward pass:
  * stem (k = 1):           relu(bn1(conv1(x)))
  * a block's conv1:        relu(bn1(conv1(block input)))
  * a block's conv2:        the block output, relu(bn2(conv2(.)) + shortcut(block input)), i.e. after
                            the residual addition and the final ReLU.
So every even-numbered layer-after-the-stem ends a block, and in ResNet18 layers 5, 9, 13, 17 are
the outputs of the four stages ("layer 5, the last layer of the first ResBlock group", paper
Sec. 3); `stage_output_layers` lists them (ResNet18: 1, 5, 9, 13, 17; ResNet34: 1, 7, 15, 27, 33).

Which layers enter the similarity loss: "K uniformly located convolutional layers" (paper Sec. 3)
----------------------------------------------------------------------------------------------
`uniform_layers(arch, k)` spaces K conv indices evenly from the first conv (1) to the last (n):
round(1 + m (n - 1) / (K - 1)), m = 0..K-1. For ResNet18 (n = 17) and K = 5 that is 1, 5, 9, 13,
17, exactly the paper's layers; for ResNet34 (n = 33) it is 1, 9, 17, 25, 33: the stem and the
outputs of blocks layer2.0, layer3.0, layer3.4 and layer4.2 (after the stem, an odd index is a
block's conv2, i.e. a block output; a spacing of (n - 1) / (K - 1) = 8 keeps every chosen index
odd), one layer every 8 convolutions, two of them in the long third stage that holds 12 of the 33.
The stage outputs (1/7/15/27/33, `stage_output_layers`) would be the other reading; the paper says
"uniformly located", and for ResNet18 both readings agree.

`model(x, feature_layers=(1, 5, 9, 13, 17))` returns `(logits, {k: feature})`; the features are the
very tensors of the forward pass (collected explicitly, no hooks and no second pass), so gradients
of a loss on them reach the network's parameters.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..common.runtime import as_nchw

STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
PAPER_LAYERS = (1, 5, 9, 13, 17)         # the paper's K = 5 layers of ResNet18 (Sec. 3, supplement)
PAPER_K = 5                              # the paper's number of similarity layers


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU. Its forward returns (after conv1, block output):
    the two numbered feature points of the block."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(mid)) + self.shortcut(x))
        return mid, out


class ResNet(nn.Module):
    """CIFAR-form ResNet; see the module docstring for the layer numbering."""

    def __init__(self, stages: Iterable[int], *, num_classes: int, in_channels: int = 1,
                 width: int = 64):
        super().__init__()
        stages = tuple(int(n) for n in stages)
        if len(stages) != 4 or min(stages) < 1:
            raise ValueError(f"stages must be 4 positive block counts, got {stages}")
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                            ("width", width)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.stages = stages
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        in_planes = width
        for s, n_blocks in enumerate(stages):
            planes = width * 2 ** s
            blocks = []
            for b in range(n_blocks):
                blocks.append(BasicBlock(in_planes, planes, stride=2 if (s > 0 and b == 0) else 1))
                in_planes = planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.n_conv_layers = 1 + 2 * sum(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def blocks(self) -> list[tuple[str, BasicBlock]]:
        """(module path, block) for every BasicBlock in forward order."""
        return [(f"layer{s + 1}.{b}", getattr(self, f"layer{s + 1}")[b])
                for s, n in enumerate(self.stages) for b in range(n)]

    def check_layers(self, feature_layers: Iterable[int]) -> tuple[int, ...]:
        """The requested conv indices as a sorted tuple of distinct ints; ValueError if any is not a
        conv of this network (valid: 1..n_conv_layers)."""
        layers = []
        for k in feature_layers:
            if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= self.n_conv_layers:
                raise ValueError(f"feature layer {k!r} does not exist: this network numbers its "
                                 f"convolutions 1..{self.n_conv_layers} (shortcut convs not counted)")
            layers.append(int(k))
        return tuple(sorted(set(layers)))

    def forward(self, x: torch.Tensor, feature_layers: Iterable[int] = ()
                ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(logits (B, num_classes), {k: layer-k feature map (B, C_k, H_k, W_k)}) for the requested
        conv indices k (see the module docstring for what layer k is)."""
        wanted = set(self.check_layers(feature_layers))
        features: dict[int, torch.Tensor] = {}
        if not x.is_cuda:
            x = as_nchw(x)      # never channels-last on the CPU (oneDNN defect; compute/common/runtime.py)
        out = self.relu(self.bn1(self.conv1(x)))
        k = 1
        if k in wanted:
            features[k] = out
        for _, block in self.blocks():
            mid, out = block(out)
            if k + 1 in wanted:
                features[k + 1] = mid
            if k + 2 in wanted:
                features[k + 2] = out
            k += 2
        logits = self.fc(torch.flatten(self.avgpool(out), 1))
        return logits, features


def conv_layer_names(model: ResNet) -> list[str]:
    """Module path of every numbered convolution: element k - 1 is conv k ('conv1',
    'layer1.0.conv1', 'layer1.0.conv2', ...). Shortcut convolutions are not listed."""
    names = ["conv1"]
    for path, _ in model.blocks():
        names += [f"{path}.conv1", f"{path}.conv2"]
    return names


def stage_output_layers(model: ResNet) -> tuple[int, ...]:
    """The stem (1) and the last conv of each stage (the stage outputs): (1, 5, 9, 13, 17) for
    ResNet18, the paper's selection; (1, 7, 15, 27, 33) for ResNet34."""
    layers, k = [1], 1
    for n in model.stages:
        k += 2 * n
        layers.append(k)
    return tuple(layers)


def n_conv_layers(arch: str) -> int:
    """Numbered convolutions of `arch` (shortcuts not counted): 17 for ResNet18, 33 for ResNet34."""
    key = arch.lower()
    if key not in STAGES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(STAGES)}")
    return 1 + 2 * sum(STAGES[key])


def uniform_layers(arch: str | ResNet, k: int = PAPER_K) -> tuple[int, ...]:
    """K uniformly located conv indices of `arch` (a name or a ResNet), first and last included:
    round(1 + m (n - 1) / (K - 1)) for m = 0..K-1, halves rounded up (see the module docstring).
    ResNet18: (1, 5, 9, 13, 17), the paper's; ResNet34: (1, 9, 17, 25, 33). K = 1 gives the last."""
    n = arch.n_conv_layers if isinstance(arch, ResNet) else n_conv_layers(arch)
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= n:
        raise ValueError(f"k must be an integer in 1..{n}, got {k!r}")
    k = int(k)
    if k == 1:
        return (n,)
    return tuple(1 + (2 * m * (n - 1) + (k - 1)) // (2 * (k - 1)) for m in range(k))


def build_resnet(arch: str = "resnet18", *, num_classes: int, in_channels: int = 1,
                 width: int = 64) -> ResNet:
    """ResNet18 or ResNet34 (CIFAR form), randomly initialised."""
    key = arch.lower()
    if key not in STAGES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(STAGES)}")
    return ResNet(STAGES[key], num_classes=num_classes, in_channels=in_channels, width=width)
