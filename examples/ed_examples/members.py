"""The ensemble members: narrow CNNs for 1x8x8 images, split into ``features`` and ``head``.

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

DESCRIPTION = "narrow CNNs (conv 32 -> conv 64 -> conv {width} -> global average pool -> linear), not the paper's ResNet-18, to fit a CPU time budget"


class MemberCNN(nn.Module):
    """One member: ``features`` maps ``[B, 1, 8, 8]`` to ``[B, width]`` (post-ReLU, pooled), ``head`` to logits ``[B, L]``."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(1, 32, stride=1),
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


def build_members(num_members: int, width: int, num_classes: int) -> nn.ModuleList:
    """K freshly initialised members (from the global torch RNG: seed it first)."""
    return nn.ModuleList(MemberCNN(width, num_classes) for _ in range(num_members))


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
