"""The ensemble members of ``--arch``, each split into ``features`` and ``head``, and their joint forward.

- ``cnn`` (default for digits): the narrow CNN below;
- ``resnet18``, ``resnet34`` (default ``resnet18`` for the image data sets): :mod:`ed_examples.resnet`;
- ``vgg16``: :mod:`ed_examples.vgg`, the black-box surrogate of Table 4.

The paper's members are ResNet-18s whose 512 pooled, post-ReLU features feed the last linear
layer, and PDD acts on those features. These members keep that structure at a size that
trains in seconds on a CPU: three 3x3 convolutions (32, 64, ``width`` channels, BatchNorm and
ReLU after each), global average pooling to ``[B, width]``, and a linear head to the classes.
Keeping ``features`` and ``head`` apart lets the training step stack all K members' features
to ``[K, B, C]`` and apply PDD between the two.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ensemble_diversity.pdd import PriorityDiversifiedDropout


ARCHITECTURES = ("cnn", "resnet18", "resnet34", "vgg16")
"""The member architectures of ``--arch``."""

DEFAULT_WIDTH = {"cnn": 128, "resnet18": 64, "resnet34": 64, "vgg16": 64}
"""``--width`` when not given: the CNN's penultimate units; the ResNets' and VGG's base width (64 = the real ones)."""

DESCRIPTION = {
    "cnn": "narrow CNNs (conv 32 -> conv 64 -> conv {width} -> global average pool -> linear), not the paper's ResNet-18, to fit a CPU time budget",
    "resnet18": "ResNet-18s (CIFAR stem, base width {width}; PDD on their {features} pooled units)",
    "resnet34": "ResNet-34s (CIFAR stem, base width {width}; PDD on their {features} pooled units)",
    "vgg16": "VGG-16s with BatchNorm (base width {width}; PDD on their {features} pooled units)",
}
"""How ``train.py`` names the members it trains, per architecture."""


class MemberCNN(nn.Module):
    """One member: ``features`` maps ``[B, in_channels, H, W]`` to ``[B, width]`` (post-ReLU, pooled), ``head`` to logits ``[B, L]``."""

    def __init__(self, width: int, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, 32, stride=1),
            _conv_block(32, 64, stride=2),
            _conv_block(64, width, stride=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _conv_block(in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def build_members(num_members: int, width: int, num_classes: int, *, arch: str = "cnn", in_channels: int = 1) -> nn.ModuleList:
    """K freshly initialised members of architecture ``arch`` (from the global torch RNG: seed it first)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Expected --arch to be one of {list(ARCHITECTURES)}, but got {arch!r}")

    def member() -> nn.Module:
        # torchvision only where its members are asked for: the digits main command runs
        # beside a torch build that has no torchvision.
        if arch == "cnn":
            return MemberCNN(width, num_classes, in_channels)
        if arch == "vgg16":
            from .vgg import VGGMember

            return VGGMember(in_channels=in_channels, num_classes=num_classes, width=width)
        from .resnet import ResNetMember

        return ResNetMember(int(arch.removeprefix("resnet")), in_channels=in_channels, num_classes=num_classes, width=width)

    return nn.ModuleList(member() for _ in range(num_members))


def feature_size(arch: str, width: int) -> int:
    """Units of each member's ``features`` output, where PDD acts: ``width`` for the CNN, ``8 * width`` otherwise."""
    return width if arch == "cnn" else 8 * width


class MemberOutputs(NamedTuple):
    features: Tensor
    """``[K, B, C]``: each member's penultimate features, after PDD when PDD was given."""
    logits: Tensor
    """``[K, B, L]``: each member's logits."""


def member_outputs(
    members: nn.ModuleList, x: Tensor, pdd: PriorityDiversifiedDropout | None = None, *, per_member: bool = False
) -> MemberOutputs:
    """Run every member on ``x`` ``[B, ...]``; with ``pdd``, drop units of the stacked features before the heads.

    With ``per_member``, ``x`` is ``[K, B, ...]`` and member k runs on ``x[k]`` (inputs from
    ``ensemble_diversity.member_inputs``, for one-pass input gradients). PDD needs all K
    members' features at once (eq. 2 compares them), hence the stack between the two halves of
    the members. In eval mode PDD is the identity.
    """
    inputs = x if per_member else [x] * len(members)
    features = torch.stack([member.features(member_input) for member, member_input in zip(members, inputs)])
    if pdd is not None:
        features = pdd(features)
    logits = torch.stack([member.head(member_features) for member, member_features in zip(members, features)])
    return MemberOutputs(features, logits)


class MemberStack(nn.Module):
    """The K members with PDD between their features and heads, as one module: the forward ``torchrun`` wraps in DDP.

    ``forward(x)`` is :func:`member_outputs`. PDD is held but not registered as a submodule:
    DDP would otherwise overwrite every rank's priority counts with rank 0's at each forward
    (the training loop sums the ranks' counts once per epoch instead).
    """

    def __init__(self, members: nn.ModuleList, pdd: PriorityDiversifiedDropout | None) -> None:
        super().__init__()
        self.members = members
        object.__setattr__(self, "pdd", pdd)

    def forward(self, x: Tensor, *, per_member: bool = False) -> MemberOutputs:
        return member_outputs(self.members, x, self.pdd, per_member=per_member)
