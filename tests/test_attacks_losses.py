"""The objectives of ``ensemble_diversity.attacks`` against independent formulas (hypothesis),
MORA's fallback where no member holds the label, and APGD's checkpoint schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from ensemble_diversity.attacks import (
    MORA_SCALES,
    averaged_logits_loss,
    averaged_probabilities_loss,
    checkpoints,
    difference_of_logits_ratio,
    dlr_loss,
    mora_loss,
)


def random_logits(seed: int, members: int, batch: int, classes: int, magnitude: float) -> tuple[Tensor, Tensor]:
    """Float64 logits ``[K, B, L]`` of standard deviation ``magnitude`` and labels ``[B]``."""
    generator = torch.Generator().manual_seed(seed)
    logits = magnitude * torch.randn(members, batch, classes, generator=generator, dtype=torch.float64)
    return logits, torch.randint(classes, (batch,), generator=generator)


shapes = {"seed": st.integers(0, 2**31 - 1), "members": st.integers(1, 4), "batch": st.integers(1, 4), "classes": st.integers(3, 6)}


two_or_more_classes = {**shapes, "classes": st.integers(2, 6)}


@settings(max_examples=50, deadline=None)
@given(magnitude=st.floats(0.01, 15.0), **two_or_more_classes)
def test_the_two_cross_entropies_against_their_formulas(seed, members, batch, classes, magnitude):
    logits, labels = random_logits(seed, members, batch, classes, magnitude)
    averaged = -torch.log(torch.softmax(logits, dim=-1).mean(dim=0)).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(averaged_probabilities_loss(logits, labels), averaged)
    mean = logits.sum(dim=0) / members
    torch.testing.assert_close(averaged_logits_loss(logits, labels), torch.log(torch.exp(mean).sum(dim=1)) - mean.gather(1, labels[:, None]).squeeze(1))


def dlr_by_hand(outputs: Tensor, labels: Tensor) -> Tensor:
    """DLR written out image by image: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)."""
    values = []
    for z, y in zip(outputs.tolist(), labels.tolist()):
        others = max(v for i, v in enumerate(z) if i != y)
        ranked = sorted(z, reverse=True)
        values.append(-(z[y] - others) / (ranked[0] - ranked[2] + 1e-12))
    return torch.tensor(values, dtype=outputs.dtype)


@settings(max_examples=50, deadline=None)
@given(magnitude=st.floats(0.01, 15.0), shift=st.floats(-50, 50), stretch=st.floats(0.1, 1e4), **shapes)
def test_dlr_against_its_formula_and_unchanged_by_shifting_or_scaling_the_logits(seed, members, batch, classes, magnitude, shift, stretch):
    logits, labels = random_logits(seed, members, batch, classes, magnitude)
    mean = logits.mean(dim=0)
    torch.testing.assert_close(difference_of_logits_ratio(mean, labels), dlr_by_hand(mean, labels))
    torch.testing.assert_close(dlr_loss(logits, labels), dlr_by_hand(mean, labels))
    torch.testing.assert_close(dlr_loss(stretch * logits + shift, labels), dlr_loss(logits, labels))
    # Positive exactly where the mean logits misclassify.
    wrong = mean.argmax(dim=1) != labels
    assert torch.equal(dlr_loss(logits, labels) > 0, wrong)


def test_dlr_needs_three_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        difference_of_logits_ratio(torch.zeros(2, 2), torch.tensor([0, 1]))


@settings(max_examples=50, deadline=None)
@given(magnitude=st.floats(0.01, 10.0), **shapes)
def test_mora_at_scale_0_is_the_cross_entropy_of_the_ensemble_at_unit_margin(seed, members, batch, classes, magnitude):
    logits, labels = random_logits(seed, members, batch, classes, magnitude)
    ensemble = torch.log(torch.softmax(logits, dim=-1).mean(dim=0))
    ranked = ensemble.sort(dim=1, descending=True).values
    unit = ensemble / (ranked[:, 0] - ranked[:, 1]).clamp_min(1e-3)[:, None]
    torch.testing.assert_close(mora_loss(logits, labels, scale=0.0), torch.logsumexp(unit, dim=1) - unit.gather(1, labels[:, None]).squeeze(1))


def mora_members_by_hand(logits: Tensor, labels: Tensor, temperature: float = 0.2) -> Tensor:
    """MORA at scale 1 written out image by image: the members predicting the label, or all where none does."""
    values = []
    for b, y in enumerate(labels.tolist()):
        z = logits[:, b]  # [K, L]
        right = [k for k in range(len(z)) if int(z[k].argmax()) == y] or list(range(len(z)))
        weights = {k: math.exp(temperature * z[k, y]) / sum(math.exp(temperature * v) for v in z[k].tolist()) for k in right}
        spread = max(1.0, max(float(member.topk(2).values[0] - member.topk(2).values[1]) for member in z) / 10)
        mixed = sum(weights[k] * z[k] for k in right) / sum(weights.values()) / spread
        values.append(float(torch.logsumexp(mixed, dim=0) - mixed[y]))
    return torch.tensor(values, dtype=logits.dtype)


@settings(max_examples=50, deadline=None)
@given(magnitude=st.floats(0.01, 30.0), **shapes)
def test_mora_at_scale_1_against_its_formula_including_no_member_right(seed, members, batch, classes, magnitude):
    logits, labels = random_logits(seed, members, batch, classes, magnitude)
    torch.testing.assert_close(mora_loss(logits, labels, scale=1.0), mora_members_by_hand(logits, labels))


def test_mora_has_a_gradient_where_the_ensemble_is_right_and_no_member_is():
    """Neither member predicts class 0, their averaged probabilities do: counting only right members would zero the weights."""
    logits = torch.tensor([[[2.0, 2.2, -5.0]], [[2.0, -5.0, 2.2]]], requires_grad=True)
    assert torch.softmax(logits, dim=-1).mean(dim=0).argmax().item() == 0 and (logits.argmax(dim=-1) != 0).all()
    for scale in MORA_SCALES:
        (gradient,) = torch.autograd.grad(mora_loss(logits, torch.tensor([0]), scale=scale).sum(), logits)
        assert gradient.abs().sum() > 0, scale


def test_apgd_checkpoints_follow_the_papers_schedule():
    """p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99: each gap 0.03 shorter than the last, at least 0.06; w_j = ceil(p_j N)."""
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


@settings(max_examples=30, deadline=None)
@given(**two_or_more_classes)
def test_averaged_probabilities_loss_and_its_gradient_stay_finite_for_huge_logits(seed, members, batch, classes):
    logits, labels = random_logits(seed, members, batch, classes, 1e4)
    logits = logits.float().requires_grad_(True)
    loss = averaged_probabilities_loss(logits, labels)
    (gradient,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(gradient).all()


def test_averaged_probabilities_loss_stays_finite_where_a_probability_underflows():
    logits = torch.tensor([[[1e4, -1e4]], [[2e4, 0.0]]], requires_grad=True)
    loss = averaged_probabilities_loss(logits, torch.tensor([1]))
    torch.testing.assert_close(loss.detach(), torch.tensor([2e4]))
    assert torch.isfinite(torch.autograd.grad(loss.sum(), logits)[0]).all()
    assert F.softmax(logits, dim=-1).mean(dim=0)[0, 1] == 0  # where the naive log would be -inf


@pytest.mark.parametrize("scale", MORA_SCALES)
def test_mora_stays_finite_where_every_members_confidence_in_the_label_underflows(scale):
    """Saturated members (logits ~1e6), none predicting the label: the weights are a softmax of log confidences, not 0 / 0."""
    logits = 1e6 * torch.tensor([[[2.0, 2.2, -5.0]], [[2.0, -5.0, 2.2]]])
    logits.requires_grad_(True)
    loss = mora_loss(logits, torch.tensor([0]), scale=scale)
    (gradient,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(gradient).all()
