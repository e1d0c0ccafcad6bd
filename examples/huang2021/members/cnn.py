"""The digits members: a narrow CNN with the paper's member structure at a size that trains in seconds on a CPU.

Three 3x3 convolutions (32, 64, ``width`` channels, BatchNorm and ReLU after each), global
average pooling to ``[B, width]`` (post-ReLU, where PDD acts) and a linear head to the classes.
"""

from __future__ import annotations

from torch import Tensor, nn


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
