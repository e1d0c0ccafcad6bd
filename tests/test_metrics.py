"""Tests for ensemble_diversity.metrics: eq. 5, eq. 6 and the Fig. 3 gradient angles."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_diversity import adp_regularizer, ensemble_cross_entropy
from ensemble_diversity.metrics import ambiguity_entropy, discrimination_score, gradient_angles

# ---------------------------------------------------------------------------------------------
# Brute-force references, written from the paper with plain Python loops and floats.


def reference_ambiguity_entropy(logits: list, targets: list) -> float:
    """Eq. 5: mean over samples of min(l, K - l) / (K - ceil(K/2))."""
    num_members, num_samples = len(logits), len(targets)
    total = 0.0
    for n in range(num_samples):
        correct = 0
        for k in range(num_members):
            row = logits[k][n]
            predicted = max(range(len(row)), key=lambda c: row[c])  # first maximum wins
            correct += predicted == targets[n]
        total += min(correct, num_members - correct) / (num_members - math.ceil(num_members / 2))
    return total / num_samples


def reference_discrimination_score(features: list) -> list:
    """Eq. 6 per sample; population variance; empty sets and zero scatter contribute 0."""
    num_members, num_samples = len(features), len(features[0])
    scores = []
    for n in range(num_samples):
        stats = []
        for k in range(num_members):
            active = [v for v in features[k][n] if v > 0]
            stats.append((statistics.fmean(active), statistics.pvariance(active)) if active else None)
        score = 0.0
        for i in range(num_members):
            for j in range(i + 1, num_members):
                if stats[i] is None or stats[j] is None:
                    continue
                within = stats[i][1] + stats[j][1]
                if within == 0:
                    continue
                score += (stats[i][0] - stats[j][0]) ** 2 / within
        scores.append(score)
    return scores


def reference_gradient_angles(grads: list) -> list:
    """Mean over pairs of the angle in degrees between flattened per-sample gradients."""
    num_members, num_samples = len(grads), len(grads[0])
    angles = []
    for n in range(num_samples):
        pair_angles = []
        for i in range(num_members):
            for j in range(i + 1, num_members):
                a, b = grads[i][n], grads[j][n]
                norm_a = math.sqrt(sum(x * x for x in a))
                norm_b = math.sqrt(sum(x * x for x in b))
                if norm_a == 0 or norm_b == 0:
                    cosine = 0.0
                else:
                    cosine = sum(x * y for x, y in zip(a, b)) / (norm_a * norm_b)
                pair_angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cosine)))))
        angles.append(sum(pair_angles) / len(pair_angles))
    return angles


# ---------------------------------------------------------------------------------------------
# Strategies: values on a grid of eighths, so that ties, zeros and constant sets occur often.

grid_values = st.integers(-16, 16).map(lambda v: v / 8)


@st.composite
def member_tensors(draw, min_members=2, max_members=5, max_samples=4, max_width=6, min_width=1):
    num_members = draw(st.integers(min_members, max_members))
    num_samples = draw(st.integers(1, max_samples))
    width = draw(st.integers(min_width, max_width))
    values = draw(st.lists(grid_values, min_size=num_members * num_samples * width, max_size=num_members * num_samples * width))
    return torch.tensor(values, dtype=torch.float64).reshape(num_members, num_samples, width)


@st.composite
def logits_and_targets(draw):
    logits = draw(member_tensors(min_width=2, max_width=5))
    targets = draw(st.lists(st.integers(0, logits.shape[2] - 1), min_size=logits.shape[1], max_size=logits.shape[1]))
    return logits, torch.tensor(targets)


def votes(correct_per_member: list[list[bool]], num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [K, N, L] whose argmax is right (class 0) or wrong (class 1) as given; targets all 0."""
    num_members, num_samples = len(correct_per_member), len(correct_per_member[0])
    logits = torch.zeros(num_members, num_samples, num_classes)
    for k, row in enumerate(correct_per_member):
        for n, correct in enumerate(row):
            logits[k, n, 0 if correct else 1] = 1.0
    return logits, torch.zeros(num_samples, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# ambiguity_entropy (eq. 5)


@pytest.mark.parametrize(("num_correct", "expected"), [(0, 0.0), (1, 1.0), (2, 1.0), (3, 0.0)])
def test_ambiguity_entropy_k3_hand_checked(num_correct, expected):
    # K = 3: K - ceil(K/2) = 1, so E = min(l, 3 - l).
    logits, targets = votes([[k < num_correct] for k in range(3)])
    assert ambiguity_entropy(logits, targets).item() == pytest.approx(expected)


@pytest.mark.parametrize(("num_correct", "expected"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.0), (4, 0.5), (5, 0.0)])
def test_ambiguity_entropy_k5_hand_checked(num_correct, expected):
    # K = 5: K - ceil(K/2) = 2, so E = min(l, 5 - l) / 2.
    logits, targets = votes([[k < num_correct] for k in range(5)])
    assert ambiguity_entropy(logits, targets).item() == pytest.approx(expected)


def test_ambiguity_entropy_averages_over_samples_k4():
    # K = 4: K - ceil(K/2) = 2; samples with l = 0, 1, 2, 4 give 0, 1/2, 1, 0 -> mean 3/8.
    pattern = [[False, True, True, True], [False, False, True, True], [False, False, False, True], [False, False, False, True]]
    logits, targets = votes(pattern)
    assert ambiguity_entropy(logits, targets).item() == pytest.approx(3 / 8)
    assert ambiguity_entropy(logits, targets).item() == pytest.approx(
        reference_ambiguity_entropy(logits.tolist(), targets.tolist())
    )


@settings(max_examples=30, deadline=None)
@given(logits_and_targets())
def test_ambiguity_entropy_matches_reference(data):
    logits, targets = data
    got = ambiguity_entropy(logits, targets).item()
    assert got == pytest.approx(reference_ambiguity_entropy(logits.tolist(), targets.tolist()), abs=1e-12)
    assert 0.0 <= got <= 1.0


@settings(max_examples=30, deadline=None)
@given(logits_and_targets(), st.randoms(use_true_random=False))
def test_ambiguity_entropy_member_permutation_invariant(data, rng):
    logits, targets = data
    order = list(range(logits.shape[0]))
    rng.shuffle(order)
    assert ambiguity_entropy(logits[order], targets).item() == pytest.approx(ambiguity_entropy(logits, targets).item())


def test_ambiguity_entropy_accepts_sequence_and_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 4)
    targets = torch.randint(0, 4, (7,))
    stacked = ambiguity_entropy(logits, targets)
    assert torch.equal(ambiguity_entropy(list(logits), targets), stacked)
    assert torch.equal(ambiguity_entropy(logits.softmax(-1), targets), stacked)


def test_ambiguity_entropy_maximal_disagreement_is_one():
    logits, targets = votes([[True, False], [False, True], [True, False], [False, True]])
    assert ambiguity_entropy(logits, targets).item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("logits", "targets", "error", "match"),
    [
        (torch.zeros(1, 2, 3), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # K = 1
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # 2-D
        (torch.zeros(3, 2, 3, 1), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # 4-D
        (torch.zeros(3, 0, 3), torch.zeros(0, dtype=torch.long), ValueError, "member_logits"),  # empty N
        (torch.zeros(3, 2, 0), torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),  # no classes
        (torch.zeros(3, 2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long), TypeError, "member_logits"),
        (torch.zeros(3, 2, 3), torch.zeros(3, dtype=torch.long), ValueError, "targets"),  # N mismatch
        (torch.zeros(3, 2, 3), torch.zeros(2, 1, dtype=torch.long), ValueError, "targets"),
        (torch.zeros(3, 2, 3), torch.zeros(2), TypeError, "targets"),  # float targets
        (torch.zeros(3, 2, 3), torch.tensor([0, 3]), ValueError, "targets"),  # out of range
        (torch.zeros(3, 2, 3), torch.tensor([-1, 0]), ValueError, "targets"),
        (torch.zeros(3, 2, 3), [0, 1], TypeError, "targets"),
        ([torch.zeros(2, 3), torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long), ValueError, "member_logits"),
        ("logits", torch.zeros(2, dtype=torch.long), TypeError, "member_logits"),
    ],
)
def test_ambiguity_entropy_rejects_bad_input(logits, targets, error, match):
    with pytest.raises(error, match=match):
        ambiguity_entropy(logits, targets)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_ambiguity_entropy_rejects_non_finite(bad):
    logits = torch.zeros(3, 2, 3)
    logits[1, 0, 2] = bad
    with pytest.raises(ValueError, match="member_logits"):
        ambiguity_entropy(logits, torch.zeros(2, dtype=torch.long))
    # The check can be switched off (e.g. on a hot path); the result is then still computed.
    assert ambiguity_entropy(logits, torch.zeros(2, dtype=torch.long), check_finite=False).dim() == 0


# ---------------------------------------------------------------------------------------------
# discrimination_score (eq. 6)


def test_discrimination_score_hand_computed():
    features = torch.tensor(
        [
            # sample 0: A_1 = {1, 3} (mean 2, var 1); sample 1: A_1 = {2} (mean 2, var 0)
            [[1.0, 3.0, 0.0, -1.0], [2.0, 0.0, 0.0, 0.0]],
            # sample 0: A_2 = {4, 6} (mean 5, var 1); sample 1: A_2 = {5} (mean 5, var 0)
            [[4.0, 0.0, 6.0, 0.0], [5.0, 0.0, -3.0, 0.0]],
            # sample 0: nothing activated; sample 1: A_3 = {1, 2, 3} (mean 2, var 2/3)
            [[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.0]],
        ]
    )
    # sample 0: only pair (1, 2) is defined: (2 - 5)^2 / (1 + 1) = 4.5.
    # sample 1: pair (1, 2) has zero scatter -> 0; (1, 3): 0 / (2/3) = 0; (2, 3): 9 / (2/3) = 13.5.
    got = discrimination_score(features)
    assert got.tolist() == pytest.approx([4.5, 13.5])
    assert got.tolist() == pytest.approx(reference_discrimination_score(features.tolist()))


@settings(max_examples=30, deadline=None)
@given(member_tensors(max_width=8))
def test_discrimination_score_matches_reference(features):
    got = discrimination_score(features)
    assert got.shape == (features.shape[1],)
    assert got.tolist() == pytest.approx(reference_discrimination_score(features.tolist()), rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(member_tensors(max_width=8), st.randoms(use_true_random=False))
def test_discrimination_score_permutation_invariances(features, rng):
    base = discrimination_score(features)
    assert bool((base >= 0).all())
    members = list(range(features.shape[0]))
    rng.shuffle(members)
    torch.testing.assert_close(discrimination_score(features[members]), base)
    # The sets A_k are unordered: shuffle the units of each member (and sample) independently.
    shuffled = features.clone()
    for k in range(features.shape[0]):
        for n in range(features.shape[1]):
            units = list(range(features.shape[2]))
            rng.shuffle(units)
            shuffled[k, n] = features[k, n, units]
    torch.testing.assert_close(discrimination_score(shuffled), base)


def test_discrimination_score_is_scale_invariant():
    torch.manual_seed(1)
    features = torch.randn(4, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(discrimination_score(3.5 * features), discrimination_score(features))


@pytest.mark.parametrize(
    "features",
    [
        torch.zeros(3, 2, 5),  # nothing activated anywhere
        -torch.ones(3, 2, 5),  # only negative values
        torch.tensor([[[0.0, 2.0, 0.0]], [[7.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]),  # one active unit each
        torch.full((3, 2, 512), 0.1),  # constant sets whose float32 mean is not exact
        torch.rand(1, 2, 5).expand(3, 2, 5).contiguous(),  # identical members
    ],
)
def test_discrimination_score_degenerate_inputs_give_zero(features):
    features = features.clone().requires_grad_(True)
    score = discrimination_score(features)
    assert torch.equal(score, torch.zeros(features.shape[1]))
    score.sum().backward()
    assert bool(torch.isfinite(features.grad).all())


def test_discrimination_score_constant_members_despite_rounding():
    # In float32 the mean of seven 0.1s (or 512 0.3s) is not exactly 0.1 (0.3), so a computed
    # variance would be ~1e-16 and the ratio ~1e14; constant sets must count as zero scatter.
    constant = torch.stack([torch.full((1, 512), 0.1), torch.full((1, 512), 0.3)])
    constant[0, 0, 7:] = 0.0
    assert discrimination_score(constant).item() == 0.0
    # Against a member with real spread, the constant member's variance is exactly 0.
    spread = torch.stack([constant[0], torch.tensor([[1.0, 3.0] + [0.0] * 510])])
    assert discrimination_score(spread).item() == pytest.approx(1.9**2, rel=1e-6)


def test_discrimination_score_accepts_sequence_and_has_gradients():
    torch.manual_seed(2)
    features = torch.randn(3, 4, 10, requires_grad=True)
    score = discrimination_score(list(features.unbind(0)))
    torch.testing.assert_close(score, discrimination_score(features))
    score.sum().backward()
    assert features.grad is not None and bool(torch.isfinite(features.grad).all())
    assert features.grad.abs().sum() > 0


def test_discrimination_score_promotes_half_precision():
    features = torch.tensor([[[1.0, 3.0]], [[4.0, 6.0]]], dtype=torch.float16)
    got = discrimination_score(features)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(4.5)


@pytest.mark.parametrize(
    ("features", "error"),
    [
        (torch.zeros(1, 2, 3), ValueError),  # K = 1
        (torch.zeros(3, 2), ValueError),
        (torch.zeros(3, 2, 3, 4), ValueError),
        (torch.zeros(3, 0, 3), ValueError),  # empty N
        (torch.zeros(3, 2, 0), ValueError),  # no units
        (torch.zeros(3, 2, 3, dtype=torch.int64), TypeError),
        ([torch.zeros(2, 3), torch.zeros(2, 4)], ValueError),
        ([], ValueError),
        (torch.tensor([[[0.0, math.nan]], [[1.0, 1.0]]]), ValueError),
        (torch.tensor([[[0.0, math.inf]], [[1.0, 1.0]]]), ValueError),
    ],
)
def test_discrimination_score_rejects_bad_input(features, error):
    with pytest.raises(error, match="features"):
        discrimination_score(features)


# ---------------------------------------------------------------------------------------------
# gradient_angles (Fig. 3)


@settings(max_examples=30, deadline=None)
@given(member_tensors(max_width=6))
def test_gradient_angles_matches_reference(grads):
    got = gradient_angles(grads)
    assert got.shape == (grads.shape[1],)
    assert got.tolist() == pytest.approx(reference_gradient_angles(grads.tolist()), abs=1e-5)
    assert bool(((got >= 0) & (got <= 180)).all())


def test_gradient_angles_hand_checked():
    grads = torch.tensor(
        [
            [[1.0, 0.0], [1.0, 1.0]],
            [[0.0, 1.0], [1.0, 0.0]],
            [[-1.0, 0.0], [0.0, 0.0]],
        ]
    )
    # sample 0: 90, 180, 90 -> 120; sample 1: 45, 90 (zero gradient), 90 -> 75.
    assert gradient_angles(grads).tolist() == pytest.approx([120.0, 75.0], abs=1e-4)


def test_gradient_angles_identical_opposite_and_zero():
    torch.manual_seed(3)
    g = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    assert gradient_angles(torch.stack([g, g, g])).tolist() == pytest.approx([0.0] * 5, abs=1e-5)
    assert gradient_angles(torch.stack([g, -g])).tolist() == pytest.approx([180.0] * 5, abs=1e-5)
    assert gradient_angles(torch.zeros(3, 5, 3, 4, 4)).tolist() == pytest.approx([90.0] * 5)
    # float32: arccos near 1 is ill-conditioned, so identical gradients read as nearly 0.
    g32 = g.float()
    assert gradient_angles(torch.stack([g32, g32])).max().item() < 0.1


@settings(max_examples=30, deadline=None)
@given(member_tensors(max_width=6), st.randoms(use_true_random=False))
def test_gradient_angles_member_permutation_invariant(grads, rng):
    order = list(range(grads.shape[0]))
    rng.shuffle(order)
    torch.testing.assert_close(gradient_angles(grads[order]), gradient_angles(grads))


def test_gradient_angles_accepts_sequence():
    torch.manual_seed(4)
    grads = torch.randn(3, 2, 5)
    torch.testing.assert_close(gradient_angles(list(grads)), gradient_angles(grads))


@pytest.mark.parametrize(
    ("grads", "error"),
    [
        (torch.zeros(1, 2, 3), ValueError),  # K = 1
        (torch.zeros(3, 2), ValueError),  # no input dimensions
        (torch.zeros(3, 0, 3), ValueError),  # empty N
        (torch.zeros(3, 2, 0), ValueError),  # empty input dimensions
        (torch.zeros(3, 2, 3, dtype=torch.int32), TypeError),
        (torch.tensor([[[0.0, math.nan]], [[1.0, 1.0]]]), ValueError),
        (torch.tensor([[[0.0, -math.inf]], [[1.0, 1.0]]]), ValueError),
        ([torch.zeros(2, 3), torch.zeros(3, 3)], ValueError),
    ],
)
def test_gradient_angles_rejects_bad_input(grads, error):
    with pytest.raises(error, match="grads"):
        gradient_angles(grads)


# --- the members-first layout -------------------------------------------------------------------


def test_transposed_logits_are_named_before_the_labels():
    logits = torch.randn(8, 3, 4)  # [B, K, L] by mistake
    targets = torch.randint(0, 4, (8,))
    for function in (ambiguity_entropy, ensemble_cross_entropy, adp_regularizer):
        with pytest.raises(ValueError, match=r"`member_logits` to have layout \[K, B, L\].*transpose\(0, 1\)"):
            function(logits, targets)


@pytest.mark.parametrize("function", [discrimination_score, gradient_angles])
def test_transposed_members_are_reported_when_k_is_given(function):
    values = torch.rand(6, 3, 5)  # [N, K, ...] by mistake
    with pytest.raises(ValueError, match=r"num_members=3.*transpose\(0, 1\)"):
        function(values, num_members=3)
    assert function(values.transpose(0, 1), num_members=3).shape == (6,)


def test_num_members_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="`num_members`"):
        gradient_angles(torch.rand(3, 2, 4), num_members=0)
