"""Tests for ensemble_diversity.gal: GAL against a brute-force reference, its bounds and
invariants, and the model-level penalty sharing deg_penalty's forward/gradient code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from ensemble_diversity.deg import GradientPenalty, deg_penalty
from ensemble_diversity.gal import gal_penalty, gradient_alignment_loss

EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Brute-force reference: for each sample, log of the sum over pairs a < b of exp(cosine of the
# flattened gradients); then the mean over samples. Plain Python floats, no torch.


def cosine(u: list[float], v: list[float], eps: float = EPS) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    norm_u = math.sqrt(sum(a * a for a in u))
    norm_v = math.sqrt(sum(b * b for b in v))
    return dot / (max(norm_u, eps) * max(norm_v, eps))


def reference_alignment(grads: np.ndarray) -> float:
    num_members, batch = grads.shape[0], grads.shape[1]
    flat = grads.reshape(num_members, batch, -1).tolist()
    total = 0.0
    for b in range(batch):
        exp_sum = 0.0
        for i in range(num_members):
            for j in range(i + 1, num_members):
                exp_sum += math.exp(cosine(flat[i][b], flat[j][b]))
        total += math.log(exp_sum)
    return total / batch


def reference_mean_max_cosine(grads: np.ndarray) -> float:
    num_members, batch = grads.shape[0], grads.shape[1]
    flat = grads.reshape(num_members, batch, -1).tolist()
    pairs = [(i, j) for i in range(num_members) for j in range(i + 1, num_members)]
    return sum(max(cosine(flat[i][b], flat[j][b]) for i, j in pairs) for b in range(batch)) / batch


ENTRY = st.one_of(st.just(0.0), st.floats(1e-3, 10.0), st.floats(-10.0, -1e-3))


@st.composite
def gradient_arrays(draw) -> np.ndarray:
    shape = (draw(st.integers(2, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 6)))
    return draw(arrays(np.float64, shape, elements=ENTRY))


def num_pairs(num_members: int) -> int:
    return num_members * (num_members - 1) // 2


# ---------------------------------------------------------------------------------------------
# gradient_alignment_loss


def test_identical_gradients():
    grads = torch.tensor([0.5, -1.0, 2.0]).expand(3, 2, 3)
    assert gradient_alignment_loss(grads).item() == pytest.approx(math.log(3 * math.e))


def test_opposite_gradients_two_members():
    g = torch.randn(2, 7, dtype=torch.float64)
    assert gradient_alignment_loss(torch.stack([g, -g])).item() == pytest.approx(-1.0)


def test_orthogonal_gradients():
    grads = torch.eye(3, dtype=torch.float64).reshape(3, 1, 3)
    assert gradient_alignment_loss(grads).item() == pytest.approx(math.log(3.0))


def test_log_sum_exp_is_per_sample_then_batch_mean():
    # K=3. Sample 0: all aligned, log(3e). Sample 1: members 0, 1 aligned and 2 opposite,
    # cosines (1, -1, -1), log(e + 2/e). Averaging the cosines over the batch first would give
    # log(e + 2) instead.
    grads = torch.tensor(
        [
            [[1.0, 0.0], [1.0, 0.0]],
            [[1.0, 0.0], [1.0, 0.0]],
            [[1.0, 0.0], [-1.0, 0.0]],
        ],
        dtype=torch.float64,
    )
    expected = (math.log(3 * math.e) + math.log(math.e + 2 / math.e)) / 2
    assert gradient_alignment_loss(grads).item() == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(gradient_arrays())
def test_matches_reference(grads):
    value = gradient_alignment_loss(torch.from_numpy(grads)).item()
    assert value == pytest.approx(reference_alignment(grads), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(gradient_arrays())
def test_bounds(grads):
    value = gradient_alignment_loss(torch.from_numpy(grads)).item()
    pairs = num_pairs(grads.shape[0])
    assert math.log(pairs * math.exp(-1)) - 1e-9 <= value <= math.log(pairs * math.e) + 1e-9


@settings(max_examples=30, deadline=None)
@given(gradient_arrays())
def test_is_a_smooth_upper_bound_of_the_most_aligned_pair(grads):
    value = gradient_alignment_loss(torch.from_numpy(grads)).item()
    assert value >= reference_mean_max_cosine(grads) - 1e-9


@settings(max_examples=30, deadline=None)
@given(gradient_arrays(), st.randoms(use_true_random=False))
def test_invariant_under_member_permutation(grads, rnd):
    order = list(range(grads.shape[0]))
    rnd.shuffle(order)
    stacked = torch.from_numpy(grads)
    assert gradient_alignment_loss(stacked[order]).item() == pytest.approx(
        gradient_alignment_loss(stacked).item(), abs=1e-12
    )


def test_sequence_equals_stacked():
    stacked = torch.randn(3, 4, 5)
    assert torch.equal(gradient_alignment_loss(list(stacked.unbind(0))), gradient_alignment_loss(stacked))


def test_zero_gradients_give_finite_value_and_gradient():
    grads = torch.zeros(3, 2, 4, requires_grad=True)
    value = gradient_alignment_loss(grads)
    value.backward()
    assert value.item() == pytest.approx(math.log(3.0))
    assert torch.isfinite(grads.grad).all()


def test_gradient_matches_finite_differences():
    grads = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gradient_alignment_loss, (grads,))


@pytest.mark.parametrize(
    "grads, error",
    [
        (torch.randn(1, 2, 3), ValueError),
        (torch.randn(3, 0, 2), ValueError),
        (torch.ones(2, 2, 2, dtype=torch.int32), TypeError),
        (torch.tensor([[[float("nan")]], [[1.0]]]), ValueError),
        ("grads", TypeError),
    ],
)
def test_bad_grads_raise_naming_argument(grads, error):
    with pytest.raises(error, match="grads"):
        gradient_alignment_loss(grads)


def test_bad_eps_raises():
    with pytest.raises(ValueError, match="eps"):
        gradient_alignment_loss(torch.randn(2, 3, 4), eps=0.0)


# ---------------------------------------------------------------------------------------------
# gal_penalty


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.Tanh(), nn.Linear(hidden, 4))


@pytest.fixture
def ensemble():
    torch.manual_seed(0)
    models = [mlp(5), mlp(3), nn.Sequential(nn.Flatten(), nn.Linear(12, 4))]
    return models, torch.randn(5, 3, 4), torch.randint(0, 4, (5,))


def test_penalty_equals_gal_of_hand_computed_gradients(ensemble):
    models, x, y = ensemble
    grads = []
    for model in models:
        leaf = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)[0])
    out = gal_penalty(models, x, y)
    assert isinstance(out, GradientPenalty)
    assert out.penalty.item() == pytest.approx(reference_alignment(torch.stack(grads).double().numpy()), abs=1e-5)


def test_shares_logits_and_losses_with_deg(ensemble):
    models, x, y = ensemble
    gal, deg = gal_penalty(models, x, y), deg_penalty(models, x, y)
    assert torch.allclose(gal.logits, deg.logits)
    assert torch.allclose(gal.losses, deg.losses)
    assert gal.logits.shape == (3, 5, 4)


def test_gradients_reach_every_member(ensemble):
    models, x, y = ensemble
    out = gal_penalty(models, x, y)
    out.penalty.backward()
    for k, model in enumerate(models):
        for name, param in model.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, (k, name)
    assert not x.requires_grad


def test_create_graph_false_gives_detached_penalty(ensemble):
    models, x, y = ensemble
    assert not gal_penalty(models, x, y, create_graph=False).penalty.requires_grad


def test_custom_loss(ensemble):
    models, x, y = ensemble
    out = gal_penalty(models, x, y, loss_fn=lambda logits, t: F.nll_loss(F.log_softmax(logits, dim=1), t))
    assert out.penalty.item() == pytest.approx(gal_penalty(models, x, y).penalty.item(), abs=1e-5)


def test_validation_names_arguments(ensemble):
    models, x, y = ensemble
    with pytest.raises(ValueError, match="models"):
        gal_penalty(models[:1], x, y)
    with pytest.raises(TypeError, match="x"):
        gal_penalty(models, x.long(), y)
    with pytest.raises(ValueError, match="y"):
        gal_penalty(models, x, y[:2])


def test_penalty_fraction_computes_gal_on_the_first_samples(ensemble):
    models, x, y = ensemble
    part = gal_penalty(models, x, y, penalty_fraction=0.4)  # ceil(0.4 * 5) = 2 samples
    torch.testing.assert_close(part.penalty, gal_penalty(models, x[:2], y[:2]).penalty)
    torch.testing.assert_close(part.losses, gal_penalty(models, x, y).losses)
