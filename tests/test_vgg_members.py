"""The VGG-16 members are torchvision's VGG-16-BN convolutions with a pooled feature / linear head split."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchvision")
from huang2021.members import build_members, feature_size  # noqa: E402
from huang2021.members.vgg import VGGMember  # noqa: E402
from torchvision.models import vgg16_bn  # noqa: E402


def test_same_convolutions_as_torchvision_vgg16_bn():
    ours = VGGMember(in_channels=3, num_classes=100)
    with torch.device("meta"):  # shapes only: no 138M-parameter initialisation
        theirs = vgg16_bn(num_classes=100).features
    assert [tuple(p.shape) for p in ours.features.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert ours.feature_size == 512 and ours.head.in_features == 512


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 64)])
def test_features_are_pooled_post_relu_units_for_every_input_size(channels, size):
    torch.manual_seed(0)
    member = VGGMember(in_channels=channels, num_classes=10, width=4)
    x = torch.rand(2, channels, size, size)
    features = member.features(x)
    assert features.shape == (2, 32) and (features >= 0).all()
    torch.testing.assert_close(member(x), member.head(features))


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "resnet34", "vgg16"])
def test_build_members_gives_k_members_with_the_feature_size_pdd_sees(arch):
    members = build_members(2, 8, 7, arch=arch, in_channels=3)
    assert len(members) == 2 and members[0] is not members[1]
    assert members[0].features(torch.rand(1, 3, 32, 32)).shape == (1, feature_size(arch, 8))
    assert members[1](torch.rand(1, 3, 32, 32)).shape == (1, 7)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="--arch"):
        build_members(3, 8, 10, arch="resnet50")
