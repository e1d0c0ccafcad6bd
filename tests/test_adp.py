"""Tests for ensemble_diversity.adp: the ADP regulariser of Pang et al. (2019)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_diversity.adp import ADPRegularizer, adp_regularizer

# ---------------------------------------------------------------------------------------------
# Brute-force reference: numpy, one sample at a time, explicit matrices and np.linalg.det.


def reference_adp(logits: np.ndarray, targets: np.ndarray, alpha=2.0, beta=0.5, det_offset=1e-6, log_offset=1e-20):
    num_members, batch, num_classes = logits.shape
    entropies, log_dets = [], []
    for b in range(batch):
        probs = []
        for k in range(num_members):
            z = logits[k, b] - logits[k, b].max()
            probs.append(np.exp(z) / np.exp(z).sum())
        mean = sum(probs) / num_members
        entropies.append(-sum(p * math.log(p + log_offset) for p in mean))
        rows = []
        for k in range(num_members):
            non_maximal = np.array([probs[k][c] for c in range(num_classes) if c != targets[b]])
            rows.append(non_maximal / np.linalg.norm(non_maximal))
        matrix = np.array(rows)
        gram = matrix @ matrix.T + det_offset * np.eye(num_members)
        log_dets.append(math.log(np.linalg.det(gram)))
    entropy, log_det = float(np.mean(entropies)), float(np.mean(log_dets))
    return -alpha * entropy - beta * log_det, entropy, log_det


@st.composite
def logits_and_targets(draw):
    num_members = draw(st.integers(2, 5))
    batch = draw(st.integers(1, 4))
    num_classes = draw(st.integers(2, 7))
    size = num_members * batch * num_classes
    values = draw(st.lists(st.floats(-6, 6, allow_nan=False), min_size=size, max_size=size))
    targets = draw(st.lists(st.integers(0, num_classes - 1), min_size=batch, max_size=batch))
    logits = torch.tensor(values, dtype=torch.float64).reshape(num_members, batch, num_classes)
    return logits, torch.tensor(targets)


# ---------------------------------------------------------------------------------------------
# Values


@settings(max_examples=30, deadline=None)
@given(logits_and_targets(), st.sampled_from([(2.0, 0.5), (1.0, 0.0), (0.0, 1.0)]))
def test_adp_matches_reference(data, weights):
    logits, targets = data
    alpha, beta = weights
    out = adp_regularizer(logits, targets, alpha=alpha, beta=beta)
    value, entropy, log_det = reference_adp(logits.numpy(), targets.numpy(), alpha, beta)
    assert out.ensemble_entropy.item() == pytest.approx(entropy, rel=1e-9, abs=1e-9)
    # Near-singular Gram matrices (L - 1 < K, near-identical members) lose digits in det().
    assert out.log_det.item() == pytest.approx(log_det, rel=1e-6, abs=1e-6)
    assert out.value.item() == pytest.approx(value, rel=1e-6, abs=1e-6)


def test_adp_identical_members_hand_checked():
    # Identical members: the K normalised rows coincide, the Gram matrix is all ones with
    # eigenvalues K, 0, ..., 0, so log det(J + eps I) = (K - 1) log eps + log(K + eps).
    # Uniform predictions: the ensemble entropy is log L.
    num_members, num_classes, eps = 3, 4, 1e-6
    logits = torch.zeros(num_members, 2, num_classes, dtype=torch.float64)
    out = adp_regularizer(logits, torch.tensor([0, 3]))
    expected_log_det = (num_members - 1) * math.log(eps) + math.log(num_members + eps)
    assert out.log_det.item() == pytest.approx(expected_log_det, rel=1e-9)
    assert out.ensemble_entropy.item() == pytest.approx(math.log(num_classes), rel=1e-12)
    assert out.value.item() == pytest.approx(-2.0 * math.log(num_classes) - 0.5 * expected_log_det, rel=1e-9)


def test_adp_two_classes_is_singular_but_finite():
    # L = 2: each member's non-maximal vector has one entry, so all rows are (1,) after
    # normalisation, whatever the logits: the same all-ones Gram matrix as above.
    torch.manual_seed(0)
    out = adp_regularizer(torch.randn(3, 5, 2), torch.randint(0, 2, (5,)))
    assert out.log_det.item() == pytest.approx(2 * math.log(1e-6) + math.log(3 + 1e-6), rel=1e-5)


def test_adp_two_members_hand_checked():
    # K = 2, L = 3, target 0: rows u = (1, 1)/sqrt 2 and v = (e^2, 1)/|.|; det = 1 - cos^2 (+ offset).
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]], dtype=torch.float64)
    e2 = math.exp(2)
    cosine = (e2 + 1) / (math.sqrt(2) * math.sqrt(e2**2 + 1))
    expected_log_det = math.log((1 + 1e-6) ** 2 - cosine**2)
    p_big, p_small = e2 / (e2 + 2), 1 / (e2 + 2)
    mean = [(p_big + p_small) / 2, (p_small + p_big) / 2, p_small]
    expected_entropy = -sum(p * math.log(p) for p in mean)
    out = adp_regularizer(logits, torch.tensor([0]))
    assert out.log_det.item() == pytest.approx(expected_log_det, rel=1e-9)
    assert out.ensemble_entropy.item() == pytest.approx(expected_entropy, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(logits_and_targets())
def test_adp_bounds(data):
    logits, targets = data
    out = adp_regularizer(logits, targets)
    num_members, _, num_classes = logits.shape
    assert all(math.isfinite(t.item()) for t in out)
    # Entropy of a distribution over L classes lies in [0, log L].
    assert -1e-12 <= out.ensemble_entropy.item() <= math.log(num_classes) + 1e-12
    # Hadamard: the Gram matrix of unit vectors has det <= prod of diagonals = (1 + offset)^K.
    assert out.log_det.item() <= num_members * math.log(1 + 1e-6) + 1e-9


@settings(max_examples=30, deadline=None)
@given(logits_and_targets(), st.randoms(use_true_random=False))
def test_adp_member_permutation_invariant(data, rng):
    logits, targets = data
    order = list(range(logits.shape[0]))
    rng.shuffle(order)
    base, permuted = adp_regularizer(logits, targets), adp_regularizer(logits[order], targets)
    for a, b in zip(base, permuted):
        assert a.item() == pytest.approx(b.item(), rel=1e-9, abs=1e-9)


def test_adp_gradient_flows_to_logits():
    torch.manual_seed(1)
    logits = torch.randn(3, 8, 10, requires_grad=True)
    out = adp_regularizer(logits, torch.randint(0, 10, (8,)))
    out.value.backward()
    assert logits.grad is not None
    assert bool(torch.isfinite(logits.grad).all())
    assert logits.grad.abs().sum().item() > 0


def test_adp_gradient_finite_when_non_maximal_probabilities_underflow():
    # Member 0 puts all float32 mass on the target: its non-maximal row underflows to zeros.
    # (The authors' code would divide 0 by 0 here.)
    logits = torch.tensor([[[200.0, 0.0, 0.0]], [[0.0, 1.0, 2.0]]], requires_grad=True)
    out = adp_regularizer(logits, torch.tensor([0]))
    assert all(math.isfinite(t.item()) for t in out)
    out.value.backward()
    assert bool(torch.isfinite(logits.grad).all())


def test_adp_returns_named_tuple_and_accepts_sequence():
    torch.manual_seed(2)
    logits = torch.randn(4, 6, 5)
    targets = torch.randint(0, 5, (6,))
    out = adp_regularizer(logits, targets)
    assert isinstance(out, ADPRegularizer)
    assert all(t.dim() == 0 and t.dtype == torch.float32 for t in out)
    torch.testing.assert_close(out.value, -2.0 * out.ensemble_entropy - 0.5 * out.log_det)
    for a, b in zip(out, adp_regularizer(list(logits), targets)):
        torch.testing.assert_close(a, b)


def test_adp_more_diverse_members_have_larger_log_det():
    # Members that agree on the non-maximal classes span less volume than members that differ.
    agree = torch.tensor([[[3.0, 2.0, 0.0, 0.0]], [[3.0, 2.0, 0.0, 0.0]]])
    differ = torch.tensor([[[3.0, 2.0, 0.0, 0.0]], [[3.0, 0.0, 0.0, 2.0]]])
    target = torch.tensor([0])
    assert adp_regularizer(differ, target).log_det > adp_regularizer(agree, target).log_det


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("logits", "targets", "error", "match"),
    [
        (torch.zeros(1, 2, 3), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # K = 1
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 2, 3, 1), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 0, 3), torch.zeros(0, dtype=torch.long), ValueError, "member_logits"),  # empty B
        (torch.zeros(3, 2, 1), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # L = 1
        (torch.zeros(3, 2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.long), TypeError, "member_logits"),
        ([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        (torch.zeros(3, 2, 3), torch.zeros(3, dtype=torch.long), ValueError, "targets"),  # B mismatch
        (torch.zeros(3, 2, 3), torch.zeros(2), TypeError, "targets"),
        (torch.zeros(3, 2, 3), torch.tensor([0, 3]), ValueError, "targets"),
        (torch.zeros(3, 2, 3), torch.tensor([-1, 0]), ValueError, "targets"),
    ],
)
def test_adp_rejects_bad_input(logits, targets, error, match):
    with pytest.raises(error, match=match):
        adp_regularizer(logits, targets)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_adp_rejects_non_finite_logits(bad):
    logits = torch.zeros(2, 2, 3)
    logits[0, 1, 1] = bad
    with pytest.raises(ValueError, match="member_logits"):
        adp_regularizer(logits, torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("alpha", -1.0),
        ("alpha", math.nan),
        ("alpha", math.inf),
        ("alpha", True),
        ("alpha", "2"),
        ("beta", -0.5),
        ("log_det_offset", 0.0),
        ("log_det_offset", -1e-6),
        ("log_offset", 0.0),
    ],
)
def test_adp_rejects_bad_weights(name, value):
    with pytest.raises(ValueError, match=name):
        adp_regularizer(torch.zeros(2, 2, 3), torch.zeros(2, dtype=torch.long), **{name: value})


def test_adp_accepts_zero_weights():
    out = adp_regularizer(torch.zeros(2, 2, 3), torch.zeros(2, dtype=torch.long), alpha=0, beta=0)
    assert out.value.item() == 0.0
