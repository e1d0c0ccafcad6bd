"""ResNet members, the paper's architecture, split into ``features`` and ``head`` for PDD.

The paper trains K ResNet-18s and applies PDD to the 512 pooled units before the last linear
layer (Algorithm 1). These members are torchvision's ResNets, assembled from its
``BasicBlock`` with the CIFAR-style stem (one 3x3 convolution, stride 1, no max-pooling)
that 32x32 inputs need; the same stem serves 28x28 grey Fashion-MNIST (``in_channels=1``,
4x4 maps before pooling) and 64x64 Tiny-ImageNet (8x8 maps), the global average pool
making the feature size independent of the image size. ``width`` scales every stage
(64 is the real ResNet; smaller widths are for CPU benchmarks and tests).
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""torchvision's ``resnet18`` / ``resnet34`` layouts: BasicBlocks per stage."""


class ResNetMember(nn.Module):
    """One member: ``features`` maps ``[B, in_channels, H, W]`` to ``[B, 8 * width]``, ``head`` to ``[B, L]``.

    >>> import torch
    >>> member = ResNetMember(18, in_channels=3, num_classes=100, width=8)
    >>> member.features(torch.zeros(2, 3, 32, 32)).shape, member(torch.zeros(2, 3, 32, 32)).shape
    (torch.Size([2, 64]), torch.Size([2, 100]))
    """

    def __init__(self, depth: int, *, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"Expected depth to be one of {sorted(BLOCKS_PER_STAGE)}, but got {depth}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for stage, blocks in enumerate(BLOCKS_PER_STAGE[depth]):
            planes = width * 2**stage
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, planes, stride, _downsample(channels, planes, stride)))
                channels = planes
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)
        self.feature_size = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _downsample(channels: int, planes: int, stride: int) -> nn.Module | None:
    """torchvision's projection shortcut (1x1 convolution and BatchNorm) where the shape changes."""
    if stride == 1 and channels == planes:
        return None
    return nn.Sequential(SubsampledPointwiseConv(channels, planes, stride), nn.BatchNorm2d(planes))


class SubsampledPointwiseConv(nn.Conv2d):
    """A strided 1x1 convolution computed as every ``stride``-th pixel through an unstrided one.

    The same function and parameters as ``nn.Conv2d(in_channels, out_channels, 1, stride=stride,
    bias=False)``, but never oneDNN's strided 1x1 kernel: on x86 CPUs its backward_weights with a
    channels-last source (which double backprop, TRS's and DEG's, produces) and fewer input
    channels than its block (8 with AVX2, 16 with AVX-512) writes past its workspace
    (uxlfoundation/oneDNN#6035): heap corruption, a crash with one thread (docs/performance.md).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, 1, bias=False)
        self.subsample = stride

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x[..., :: self.subsample, :: self.subsample])
