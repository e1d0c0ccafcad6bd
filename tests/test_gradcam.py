"""Grad-CAM maps and the distance between the members' hottest regions (``huang2021/evaluation/gradcam.py``, Fig. 1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from huang2021.evaluation.gradcam import centre_distances, grad_cam, hottest_centre, member_grad_cams
from huang2021.members import build_members
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn


pytestmark = pytest.mark.usefixtures("one_thread")

class QuadrantMember(nn.Module):
    """Features: 2x2 average pooling of a 1x4x4 image (each cell is one quadrant), then the
    global pool; head: class 0 reads the pooled value, class 1 its negative."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))


def test_the_map_peaks_on_the_decisive_quadrant_and_is_empty_for_the_opposing_class():
    image = torch.full((1, 1, 4, 4), 0.1)
    image[0, 0, 2:, :2] = 1.0  # bottom-left quadrant bright: cell (1, 0) of the 2x2 map dominates
    member = QuadrantMember().eval()

    cam = grad_cam(member, image, torch.tensor([0]))[0]

    # Cell values 1.0 (bottom-left) and 0.1 elsewhere, upsampled bilinearly (half-pixel centres):
    # the outer pixels of the quadrant equal its cell, the inner ones mix in the neighbours.
    assert cam.shape == (4, 4)
    assert cam[3, 0] == 1.0 and cam.max() == 1.0
    assert torch.isclose(cam[2, 1], torch.tensor((0.75 * 0.75 * 1.0 + (1 - 0.75 * 0.75) * 0.1) / 1.0))
    assert cam[:2, 2:].max() < 0.2
    assert torch.equal(hottest_centre(cam, threshold=1.0), torch.tensor([3.0, 0.0]))
    # Class 1's score falls with every cell: no positive evidence anywhere, the ReLU leaves zeros.
    assert torch.equal(grad_cam(member, image, torch.tensor([1]))[0], torch.zeros(4, 4))


def test_maps_of_trained_members_have_the_input_size_peak_one_and_match_the_cam_formula():
    torch.manual_seed(0)
    members = build_members(2, 8, 10).eval()
    images, targets = torch.rand(5, 1, 8, 8), torch.arange(5)

    maps = member_grad_cams(members, images, targets)

    assert maps.shape == (2, 5, 8, 8)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    peaks = maps.amax(dim=(-2, -1))
    assert torch.all((peaks == 1.0) | (peaks == 0.0))
    # With a linear head after average pooling, Grad-CAM's channel weights are the head's row
    # divided by h*w: the map is ReLU(sum_k W[c, k] A_k), the class activation map.
    for member, member_maps in zip(members, maps):
        feature_map = member.features[:-2](images)
        cam = F.relu(torch.einsum("bk,bkhw->bhw", member.head.weight[targets], feature_map))
        cam = F.interpolate(cam[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
        peak = cam.amax(dim=(-2, -1), keepdim=True)
        expected = torch.where(peak > 0, cam / peak.clamp_min(1e-30), torch.zeros_like(cam))
        assert torch.allclose(member_maps, expected, atol=1e-5)


def test_a_map_does_not_depend_on_the_other_images_of_the_batch():
    torch.manual_seed(1)
    member = build_members(1, 8, 10)[0].eval()
    images, targets = torch.rand(4, 1, 8, 8), torch.tensor([3, 1, 4, 1])
    assert torch.allclose(grad_cam(member, images, targets)[2], grad_cam(member, images[2:3], targets[2:3])[0], atol=1e-6)


def test_grad_cam_refuses_a_member_in_training_mode_or_without_features_and_head():
    member = build_members(1, 8, 10)[0]
    with pytest.raises(ValueError, match="eval mode"):
        grad_cam(member.train(), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d and Flatten"):
        grad_cam(nn.Linear(64, 10).eval(), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        grad_cam(member.eval(), torch.rand(2, 1, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="images"):
        grad_cam(member.eval(), torch.rand(2, 64), torch.tensor([0, 1]))


def test_the_hottest_region_is_the_centroid_of_the_pixels_above_the_threshold():
    heat = torch.zeros(5, 5)
    heat[1, 1], heat[1, 3], heat[4, 0] = 1.0, 0.95, 0.85
    assert torch.equal(hottest_centre(heat), torch.tensor([1.0, 2.0]))  # 0.85 < 0.9: left out
    assert torch.allclose(hottest_centre(heat, threshold=0.8), torch.tensor([2.0, 4.0 / 3.0]))
    assert torch.equal(hottest_centre(heat, threshold=1.0), torch.tensor([1.0, 1.0]))  # the argmax
    other = torch.zeros(5, 5)
    other[4, 2] = 0.3  # the peak counts, whatever its height
    assert torch.equal(centre_distances(torch.stack([heat, other])[:, None]), torch.tensor([[3.0]]))


def test_a_map_without_positive_evidence_has_no_centre_and_no_distance():
    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, 0, 0] = maps[1, 0, 3, 3] = 1.0
    assert hottest_centre(maps[2, 0]).isnan().all()
    distances = centre_distances(maps)[0]  # pairs (0, 1), (0, 2), (1, 2)
    assert distances[0] == pytest.approx(3 * math.sqrt(2)) and distances[1:].isnan().all()


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5, float("nan"), True])
def test_bad_thresholds_are_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        hottest_centre(torch.rand(4, 4), threshold=threshold)


def test_centre_distances_need_two_members():
    with pytest.raises(ValueError, match="K >= 2"):
        centre_distances(torch.rand(1, 2, 4, 4))


def _maps(side: int = 6):
    # Non-negative maps with a positive maximum, as Grad-CAM gives after its ReLU.
    return arrays("float64", (side, side), elements=st.floats(0.0, 10.0)).filter(lambda a: a.max() > 0)


@settings(max_examples=20, deadline=None)
@given(first=_maps(), second=_maps(), threshold=st.floats(0.05, 1.0))
def test_centre_distance_is_symmetric(first, second, threshold):
    pair = torch.stack([torch.from_numpy(first), torch.from_numpy(second)])[:, None]
    assert torch.equal(centre_distances(pair, threshold=threshold), centre_distances(pair.flip(0), threshold=threshold))


@settings(max_examples=20, deadline=None)
@given(heat=_maps(), threshold=st.floats(0.05, 1.0))
def test_centre_distance_of_identical_maps_is_zero(heat, threshold):
    pair = torch.from_numpy(heat).expand(2, 1, -1, -1)
    assert torch.equal(centre_distances(pair, threshold=threshold), torch.zeros(1, 1, dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(first=_maps(), second=_maps(), exponent=st.integers(-20, 20))
def test_centre_distance_is_invariant_to_scaling_a_map(first, second, exponent):
    # Powers of two scale floats exactly, so no pixel at the threshold can round across it.
    pair = torch.stack([torch.from_numpy(first), torch.from_numpy(second)])[:, None]
    scaled = pair * torch.tensor([2.0**exponent, 1.0], dtype=torch.float64)[:, None, None, None]
    assert torch.equal(centre_distances(scaled), centre_distances(pair))


def test_resnet_members_get_maps_of_the_input_size():
    from huang2021.members.resnet import ResNetMember

    torch.manual_seed(2)
    members = nn.ModuleList(ResNetMember(18, in_channels=3, num_classes=5, width=4) for _ in range(2)).eval()
    maps = member_grad_cams(members, torch.rand(2, 3, 16, 16), torch.tensor([0, 4]))
    assert maps.shape == (2, 2, 16, 16) and maps.min() >= 0.0 and maps.max() <= 1.0
