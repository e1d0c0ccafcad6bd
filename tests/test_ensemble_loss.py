"""Tests for ensemble_diversity.ensemble_loss: the ensemble cross-entropy of eq. 1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_diversity.ensemble_loss import ensemble_cross_entropy


def reference_ece(logits: list, targets: list, member_reduction: str) -> float:
    """Eq. 1 with plain loops: per member, the batch mean of -log softmax(z)[y]."""
    per_member = []
    for member in logits:
        losses = []
        for row, target in zip(member, targets):
            top = max(row)
            log_norm = top + math.log(sum(math.exp(z - top) for z in row))
            losses.append(log_norm - row[target])
        per_member.append(sum(losses) / len(losses))
    total = sum(per_member)
    return total if member_reduction == "sum" else total / len(per_member)


@st.composite
def logits_and_targets(draw):
    num_members = draw(st.integers(1, 5))
    batch = draw(st.integers(1, 5))
    num_classes = draw(st.integers(1, 6))
    size = num_members * batch * num_classes
    values = draw(st.lists(st.floats(-20, 20, allow_nan=False), min_size=size, max_size=size))
    targets = draw(st.lists(st.integers(0, num_classes - 1), min_size=batch, max_size=batch))
    return torch.tensor(values, dtype=torch.float64).reshape(num_members, batch, num_classes), torch.tensor(targets)


@settings(max_examples=30, deadline=None)
@given(logits_and_targets(), st.sampled_from(["mean", "sum"]))
def test_ece_matches_reference(data, member_reduction):
    logits, targets = data
    got = ensemble_cross_entropy(logits, targets, member_reduction=member_reduction)
    expected = reference_ece(logits.tolist(), targets.tolist(), member_reduction)
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(logits_and_targets())
def test_ece_sum_is_k_times_mean_and_sum_of_member_ce(data):
    logits, targets = data
    summed = ensemble_cross_entropy(logits, targets, member_reduction="sum")
    mean = ensemble_cross_entropy(logits, targets)
    torch.testing.assert_close(summed, logits.shape[0] * mean)
    torch.testing.assert_close(summed, sum(F.cross_entropy(member, targets) for member in logits))


def test_ece_hand_checked_uniform_members():
    # Uniform logits: every CE term is log L, so "mean" gives log L and "sum" K log L.
    logits, targets = torch.zeros(3, 4, 5), torch.tensor([0, 1, 4, 2])
    assert ensemble_cross_entropy(logits, targets).item() == pytest.approx(math.log(5))
    assert ensemble_cross_entropy(logits, targets, member_reduction="sum").item() == pytest.approx(3 * math.log(5))


def test_ece_default_is_mean_over_members():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 6, 3), torch.randint(0, 3, (6,))
    expected = torch.stack([F.cross_entropy(member, targets) for member in logits]).mean()
    torch.testing.assert_close(ensemble_cross_entropy(logits, targets), expected)


def test_ece_accepts_sequence_single_member_and_backpropagates():
    torch.manual_seed(1)
    members = [torch.randn(5, 4, requires_grad=True) for _ in range(3)]
    targets = torch.randint(0, 4, (5,))
    loss = ensemble_cross_entropy(members, targets)
    torch.testing.assert_close(loss, ensemble_cross_entropy(torch.stack(members), targets))
    loss.backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in members)
    torch.testing.assert_close(
        ensemble_cross_entropy(members[0].detach().unsqueeze(0), targets), F.cross_entropy(members[0].detach(), targets)
    )


@pytest.mark.parametrize(
    ("logits", "targets", "error", "match"),
    [
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 2, 3, 1), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(0, 2, 3), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # K = 0
        ([], torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 0, 3), torch.zeros(0, dtype=torch.long), ValueError, "member_logits"),  # empty B
        (torch.zeros(3, 2, 0), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.long), TypeError, "member_logits"),
        ([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 2, 3), torch.zeros(3, dtype=torch.long), ValueError, "targets"),  # B mismatch
        (torch.zeros(3, 2, 3), torch.zeros(2), TypeError, "targets"),
        (torch.zeros(3, 2, 3), torch.tensor([0, 3]), ValueError, "targets"),
        (torch.zeros(3, 2, 3), torch.tensor([0, -1]), ValueError, "targets"),
        (torch.full((3, 2, 3), math.nan), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.full((3, 2, 3), -math.inf), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
    ],
)
def test_ece_rejects_bad_input(logits, targets, error, match):
    with pytest.raises(error, match=match):
        ensemble_cross_entropy(logits, targets)


@pytest.mark.parametrize("member_reduction", ["None", "Mean", None])
def test_ece_rejects_unknown_member_reduction(member_reduction):
    with pytest.raises(ValueError, match="member_reduction"):
        ensemble_cross_entropy(torch.zeros(2, 2, 3), torch.zeros(2, dtype=torch.long), member_reduction=member_reduction)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_targets_of_any_width_are_accepted(dtype):
    logits, targets = torch.randn(3, 4, 5), torch.tensor([0, 4, 2, 1])
    torch.testing.assert_close(ensemble_cross_entropy(logits, targets.to(dtype)), ensemble_cross_entropy(logits, targets))
