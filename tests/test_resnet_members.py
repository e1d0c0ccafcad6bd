"""The ResNet members are torchvision's ResNet-18/34 with the CIFAR stem, split for PDD."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")
from huang2021.members.resnet import ResNetMember  # noqa: E402
from torchvision.models import resnet18, resnet34  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


@pytest.mark.parametrize("size", [7, 8])
def test_the_shortcut_is_torchvisions_strided_1x1_convolution(size):
    """Same function, gradients and parameter names as torchvision's ``Conv2d(c, p, 1, stride=2)``."""
    torch.manual_seed(0)
    member = ResNetMember(18, in_channels=1, num_classes=10, width=2)
    ours = member.features[5].downsample[0]  # the first stage that halves the maps
    theirs = torch.nn.Conv2d(ours.in_channels, ours.out_channels, 1, stride=2, bias=False)
    theirs.weight = ours.weight
    x = torch.rand(3, ours.in_channels, size, size, requires_grad=True)
    ours_out, theirs_out = ours(x), theirs(x)
    torch.testing.assert_close(ours_out, theirs_out, rtol=0, atol=0)
    gradients = [torch.autograd.grad(out.square().sum(), (x, ours.weight)) for out in (ours_out, theirs_out)]
    for mine, reference in zip(*gradients):
        torch.testing.assert_close(mine, reference)
    assert "features.5.downsample.0.weight" in member.state_dict()


def test_the_shortcut_of_tiny_members_does_not_corrupt_the_heap_on_one_thread():
    """oneDNN's strided 1x1 backward_weights overruns its workspace for a channels-last source with
    fewer input channels than its block (uxlfoundation/oneDNN#6035; double backprop, as in TRS,
    gives such sources): with torch's Conv2d(stride=2) this aborts ("corrupted size vs.
    prev_size") or segfaults on one thread on an AVX2 machine, so it runs in a child process."""
    script = textwrap.dedent("""
        import torch
        from huang2021.members.resnet import ResNetMember
        torch.set_num_threads(1)
        member = ResNetMember(18, in_channels=1, num_classes=10, width=2)
        shortcuts = [block.downsample[0] for block in member.features if getattr(block, "downsample", None) is not None]
        assert [s.in_channels for s in shortcuts] == [2, 4, 8]
        for shortcut in shortcuts:
            for _ in range(50):
                x = torch.rand(64, shortcut.in_channels, 8, 8).contiguous(memory_format=torch.channels_last)
                shortcut(x.requires_grad_()).square().sum().backward()
        print("ok")
    """)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
