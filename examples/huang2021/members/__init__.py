"""The ensemble members of ``--arch``, each a ``features`` body and a linear ``head``: :func:`build_members`.

- ``cnn`` (default for digits): :mod:`.cnn`, a narrow CNN for a CPU time budget;
- ``resnet18``, ``resnet34`` (default ``resnet18`` for the image data sets): :mod:`.resnet`;
- ``vgg16``: :mod:`.vgg`, the black-box surrogate of Table 4.

The paper's members are ResNet-18s whose 512 pooled, post-ReLU features feed the last linear
layer, and PDD acts on those features. Every member here keeps that structure: its head is its
last ``nn.Linear`` and its last operation, so the library's ``Ensemble(members, pdd=pdd)``
splits every member there and applies PDD to the stacked ``[K, B, C]`` features between the
bodies and the heads; ``features`` and ``head`` stay separate attributes for Grad-CAM
(``evaluation/gradcam.py``) and the benchmarks.
"""

from __future__ import annotations

from torch import nn

from .cnn import MemberCNN

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
