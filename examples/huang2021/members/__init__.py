"""The ensemble members of ``--arch``: each a ``features`` body and a linear ``head``.

- ``cnn`` (default for digits): the narrow CNN below;
- ``resnet18``, ``resnet34`` (default ``resnet18`` for the image data sets): :mod:`ed_examples.resnet`;
- ``vgg16``: :mod:`ed_examples.vgg`, the black-box surrogate of Table 4.

The paper's members are ResNet-18s whose 512 pooled, post-ReLU features feed the last linear
layer, and PDD acts on those features. These members keep that structure at a size that
trains in seconds on a CPU: three 3x3 convolutions (32, 64, ``width`` channels, BatchNorm and
ReLU after each), global average pooling to ``[B, width]``, and a linear head to the classes.
The head is each member's last ``nn.Linear`` and its last operation, so the library's
``Ensemble(members, pdd=pdd)`` splits every member there and applies PDD to the stacked
``[K, B, C]`` features between the bodies and the heads; ``features`` and ``head`` stay
separate attributes for Grad-CAM (``gradcam.py``) and the benchmarks.
"""

from __future__ import annotations

from torch import Tensor, nn

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
