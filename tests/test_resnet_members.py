"""The ResNet members are torchvision's ResNet-18/34 with the CIFAR stem, split for PDD."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision")
from huang2021.members.resnet import ResNetMember  # noqa: E402
from torchvision.models import resnet18, resnet34  # noqa: E402


@pytest.mark.parametrize(("depth", "reference"), [(18, resnet18), (34, resnet34)])
def test_same_blocks_as_torchvision_except_the_stem(depth, reference):
    ours = ResNetMember(depth, in_channels=3, num_classes=100)
    theirs = reference(num_classes=100)
    # Ours: 3x3 stem (the CIFAR variant); theirs: 7x7. Every other tensor has the same shape, in order.
    our_shapes = [tuple(p.shape) for p in ours.parameters()]
    their_shapes = [tuple(p.shape) for p in theirs.parameters()]
    assert our_shapes[0] == (64, 3, 3, 3) and their_shapes[0] == (64, 3, 7, 7)
    assert our_shapes[1:] == their_shapes[1:]
    assert ours.feature_size == 512


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 64)])
def test_features_are_pooled_post_relu_units(channels, size):
    torch.manual_seed(0)
    member = ResNetMember(18, in_channels=channels, num_classes=10, width=4)
    x = torch.rand(2, channels, size, size)
    features = member.features(x)
    assert features.shape == (2, 32)
    assert (features >= 0).all()  # PDD bins non-negative activations, as after the last ReLU
    torch.testing.assert_close(member(x), member.head(features))


def test_unknown_depth_is_refused():
    with pytest.raises(ValueError, match="depth"):
        ResNetMember(50, in_channels=3, num_classes=10)
