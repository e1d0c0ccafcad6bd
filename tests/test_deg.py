"""Tests for ensemble_diversity.deg: eq. 3 against a brute-force reference, its invariants, and
the model-level penalty (double backprop, caller's input untouched, validation)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from ensemble_diversity.deg import (
    GradientPenalty,
    deg_penalty,
    dispersed_gradient_loss,
    member_input_gradients,
    member_inputs,
)
from ensemble_diversity.pdd import PriorityDiversifiedDropout

EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# Brute-force reference, written from the paper's eq. 3 plus the authors' batch convention:
# for each pair i < j, the cosine of the flattened gradients of each sample, averaged over the
# batch; the pair values summed. Plain Python floats, no torch.


def reference_dispersion(grads: np.ndarray, eps: float = EPS) -> float:
    num_members, batch = grads.shape[0], grads.shape[1]
    flat = grads.reshape(num_members, batch, -1).tolist()
    total = 0.0
    for i in range(num_members):
        for j in range(i + 1, num_members):
            pair = 0.0
            for b in range(batch):
                u, v = flat[i][b], flat[j][b]
                dot = sum(a * c for a, c in zip(u, v))
                norm_u = math.sqrt(sum(a * a for a in u))
                norm_v = math.sqrt(sum(c * c for c in v))
                pair += dot / (max(norm_u, eps) * max(norm_v, eps))
            total += pair / batch
    return total


# Entries are 0 or at least 1e-3 in magnitude, so every gradient is either exactly zero or has a
# norm far above eps (scaling it keeps it on the same side of eps).
ENTRY = st.one_of(st.just(0.0), st.floats(1e-3, 10.0), st.floats(-10.0, -1e-3))


@st.composite
def gradient_arrays(draw, min_members: int = 2, max_members: int = 4) -> np.ndarray:
    shape = (
        draw(st.integers(min_members, max_members)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
    )
    return draw(arrays(np.float64, shape, elements=ENTRY))


def num_pairs(num_members: int) -> int:
    return num_members * (num_members - 1) // 2


# ---------------------------------------------------------------------------------------------
# dispersed_gradient_loss: hand-checked values


def test_identical_gradients_give_one_per_pair():
    grads = torch.tensor([1.0, -2.0, 0.5]).expand(3, 2, 3)  # K=3, B=2
    assert dispersed_gradient_loss(grads).item() == pytest.approx(3.0)


def test_opposite_gradients_give_minus_one():
    g = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    assert dispersed_gradient_loss(torch.stack([g, -3.0 * g])).item() == pytest.approx(-1.0)


def test_orthogonal_gradients_give_zero():
    grads = torch.eye(3, dtype=torch.float64).reshape(3, 1, 3)
    assert dispersed_gradient_loss(grads).item() == pytest.approx(0.0, abs=1e-15)


def test_mixed_pairs_are_summed():
    # e1, -e1, e2: pairs (0,1) -> -1, (0,2) -> 0, (1,2) -> 0
    grads = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]], [[0.0, 1.0]]])
    assert dispersed_gradient_loss(grads).item() == pytest.approx(-1.0)


def test_cosine_is_per_sample_then_batch_mean():
    # Sample 0 agrees (cos 1), sample 1 opposes (cos -1): the mean is 0. A cosine of the whole
    # flattened batch would be dominated by the large sample 0 and give about 0.9998.
    grads = torch.tensor([[[100.0, 0.0], [1.0, 0.0]], [[100.0, 0.0], [-1.0, 0.0]]])
    assert dispersed_gradient_loss(grads).item() == pytest.approx(0.0, abs=1e-7)


def test_matches_reference_on_fixed_case():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(4, 3, 2, 5))
    value = dispersed_gradient_loss(torch.from_numpy(grads)).item()
    assert value == pytest.approx(reference_dispersion(grads), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# dispersed_gradient_loss: reference and properties on generated tensors


@settings(max_examples=30, deadline=None)
@given(gradient_arrays())
def test_matches_reference(grads):
    value = dispersed_gradient_loss(torch.from_numpy(grads)).item()
    assert value == pytest.approx(reference_dispersion(grads), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(gradient_arrays())
def test_value_within_pair_count(grads):
    value = dispersed_gradient_loss(torch.from_numpy(grads)).item()
    bound = num_pairs(grads.shape[0])
    assert -bound - 1e-9 <= value <= bound + 1e-9


@settings(max_examples=30, deadline=None)
@given(gradient_arrays(), st.randoms(use_true_random=False))
def test_invariant_under_member_permutation(grads, rnd):
    order = list(range(grads.shape[0]))
    rnd.shuffle(order)
    stacked = torch.from_numpy(grads)
    assert dispersed_gradient_loss(stacked[order]).item() == pytest.approx(
        dispersed_gradient_loss(stacked).item(), abs=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(gradient_arrays(), st.data())
def test_invariant_under_positive_scaling(grads, data):
    shape = (grads.shape[0], grads.shape[1], 1, 1)
    scales = data.draw(arrays(np.float64, shape, elements=st.floats(0.01, 100.0)))
    stacked = torch.from_numpy(grads)
    assert dispersed_gradient_loss(stacked * torch.from_numpy(scales)).item() == pytest.approx(
        dispersed_gradient_loss(stacked).item(), abs=1e-9
    )


@settings(max_examples=20, deadline=None)
@given(gradient_arrays())
def test_sequence_equals_stacked(grads):
    stacked = torch.from_numpy(grads)
    assert torch.equal(dispersed_gradient_loss(list(stacked.unbind(0))), dispersed_gradient_loss(stacked))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_gradients_give_finite_value_and_gradient(dtype):
    grads = torch.zeros(3, 2, 4, dtype=dtype, requires_grad=True)
    value = dispersed_gradient_loss(grads)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(grads.grad).all()


def test_one_zero_member_counts_as_orthogonal():
    grads = torch.tensor([[[1.0, 2.0]], [[1.0, 2.0]], [[0.0, 0.0]]], requires_grad=True)
    value = dispersed_gradient_loss(grads)
    value.backward()
    assert value.item() == pytest.approx(1.0)
    assert torch.isfinite(grads.grad).all()


def test_gradient_matches_finite_differences():
    grads = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dispersed_gradient_loss, (grads,))


# ---------------------------------------------------------------------------------------------
# dispersed_gradient_loss: validation


@pytest.mark.parametrize(
    "grads, error",
    [
        (torch.randn(1, 2, 3), ValueError),  # K=1
        (torch.randn(3), ValueError),  # no batch axis
        (torch.randn(3, 0, 4), ValueError),  # empty batch
        (torch.ones(3, 2, 4, dtype=torch.int64), TypeError),
        (torch.tensor([[[1.0, float("nan")]], [[1.0, 0.0]]]), ValueError),
        (torch.tensor([[[1.0, float("inf")]], [[1.0, 0.0]]]), ValueError),
        ([torch.randn(2, 3), torch.randn(2, 4)], ValueError),  # members of different shapes
        ([[1.0, 2.0], [3.0, 4.0]], TypeError),  # not tensors
        ([], ValueError),
    ],
)
def test_bad_grads_raise_naming_argument(grads, error):
    with pytest.raises(error, match="grads"):
        dispersed_gradient_loss(grads)


@pytest.mark.parametrize("eps", [0.0, -1e-12, float("nan"), float("inf"), True, "1e-12"])
def test_bad_eps_raises(eps):
    with pytest.raises(ValueError, match="eps"):
        dispersed_gradient_loss(torch.randn(2, 3, 4), eps=eps)


# ---------------------------------------------------------------------------------------------
# member_input_gradients


def test_member_input_gradients_match_autograd():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    losses = [(x**2).sum(), torch.sin(x).mean(), (x[:, 0] * x[:, 1]).sum()]
    grads = member_input_gradients(losses, x)
    assert grads.shape == (3, 3, 4)
    for k, loss in enumerate(losses):
        (expected,) = torch.autograd.grad(loss, x, retain_graph=True)
        assert torch.allclose(grads[k], expected)


def test_member_input_gradients_accept_stacked_losses():
    x = torch.randn(2, 3, requires_grad=True)
    losses = [(x**3).sum(), x.exp().sum()]
    from_sequence = member_input_gradients(losses, x)
    from_stacked = member_input_gradients(torch.stack(losses), x)
    assert torch.allclose(from_sequence, from_stacked)


def test_member_input_gradients_graph_follows_create_graph():
    x = torch.randn(2, 3, requires_grad=True)
    losses = [(x**2).sum(), (x**3).sum()]
    assert member_input_gradients(losses, x, create_graph=True).requires_grad
    assert not member_input_gradients(losses, x, create_graph=False).requires_grad
    # The losses' graph is retained either way.
    torch.stack(losses).sum().backward()
    assert x.grad is not None


def test_member_input_gradients_require_inputs_with_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"inputs.*requires_grad_\(\)"):
        member_input_gradients([x.sum(), x.mean()], x)


def test_member_input_gradients_reject_loss_without_input():
    x = torch.randn(2, 3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="member 1"):
        member_input_gradients([(x * w).sum(), w.sum()], x)
    with pytest.raises(ValueError, match="member 0"):
        member_input_gradients([torch.tensor(1.0), x.sum()], x)


# ---------------------------------------------------------------------------------------------
# member_inputs + per_member=True: one backward pass, the same gradients as one pass per member


def _split_members(num_members: int, seed: int) -> tuple[list[nn.Module], list[nn.Module]]:
    torch.manual_seed(seed)
    bodies = [nn.Sequential(nn.Linear(6, 5), nn.Tanh()) for _ in range(num_members)]
    heads = [nn.Linear(5, 3) for _ in range(num_members)]
    return bodies, heads


@settings(max_examples=15, deadline=None)
@given(num_members=st.integers(2, 4), batch=st.integers(1, 5), seed=st.integers(0, 2**16), with_pdd=st.booleans())
def test_per_member_inputs_give_the_shared_input_gradients(num_members, batch, seed, with_pdd):
    """Losses entangled in one stacked cross-entropy (the costly case for one pass per member),
    PDD between bodies and heads or not: both modes give the same [K, B, ...] gradients."""
    bodies, heads = _split_members(num_members, seed)
    pdd = PriorityDiversifiedDropout(num_members, num_members + 2) if with_pdd else None
    x = torch.randn(batch, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (batch,))
    for module in [*bodies, *heads]:
        module.double()

    def losses_for(member_input: list[torch.Tensor]) -> torch.Tensor:
        features = torch.stack([body(xk) for body, xk in zip(bodies, member_input)])
        if pdd is not None:
            torch.manual_seed(seed)  # the same keep mask in both modes
            features = pdd(features)
        logits = torch.stack([head(f) for head, f in zip(heads, features)])
        per_sample = F.cross_entropy(logits.flatten(0, 1), y.repeat(num_members), reduction="none")
        return per_sample.view(num_members, batch).mean(dim=1)

    shared = x.clone().requires_grad_(True)
    expected = member_input_gradients(losses_for([shared] * num_members), shared)
    inputs = member_inputs(x, num_members)
    got = member_input_gradients(losses_for(list(inputs)), inputs, per_member=True)
    assert got.shape == (num_members, batch, 6)
    torch.testing.assert_close(got, expected)


def test_per_member_gradients_keep_the_graph_for_double_backprop():
    bodies, heads = _split_members(3, 0)
    inputs = member_inputs(torch.randn(4, 6), 3)
    losses = torch.stack([head(body(xk)).logsumexp(-1).mean() for body, head, xk in zip(bodies, heads, inputs)])
    assert not member_input_gradients(losses, inputs, per_member=True, create_graph=False).requires_grad
    grads = member_input_gradients(losses, inputs, per_member=True)
    dispersed_gradient_loss(grads).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bodies[0].parameters())


def test_member_inputs_are_views_and_leave_x_alone():
    x = torch.randn(3, 2)
    inputs = member_inputs(x, 4)
    assert inputs.shape == (4, 3, 2) and inputs.requires_grad and inputs.is_leaf
    assert inputs.data_ptr() == x.data_ptr() and not x.requires_grad
    # An x that requires grad (output of a trainable module) still receives gradients.
    w = torch.randn(2, requires_grad=True)
    upstream = x * w
    through = member_inputs(upstream, 2)
    (through[0].sum() + 2 * through[1].sum()).backward()
    torch.testing.assert_close(w.grad, 3 * x.sum(0))


@pytest.mark.parametrize("num_members", [0, -1, 2.0, True, None])
def test_member_inputs_reject_bad_member_counts(num_members):
    with pytest.raises(ValueError, match="num_members"):
        member_inputs(torch.randn(2, 3), num_members)


def test_member_inputs_reject_integer_inputs():
    with pytest.raises(TypeError, match="x"):
        member_inputs(torch.ones(2, 3, dtype=torch.long), 2)


def test_per_member_mode_checks_its_inputs():
    inputs = member_inputs(torch.randn(2, 3), 3)
    losses = [inputs[k].sum() for k in range(3)]
    with pytest.raises(ValueError, match=r"\[K=2, B, \.\.\.\]"):
        member_input_gradients(losses[:2], inputs, per_member=True)
    with pytest.raises(ValueError, match="require grad"):
        member_input_gradients(losses, torch.randn(3, 2, 3), per_member=True)
    with pytest.raises(ValueError, match="depend"):
        member_input_gradients([torch.tensor(1.0)] * 3, inputs, per_member=True)


@pytest.mark.parametrize(
    "losses, error",
    [
        (torch.randn(2, 3), ValueError),  # not [K]
        ([torch.randn(3), torch.randn(3)], ValueError),  # not scalars
        (torch.tensor([1, 2]), TypeError),
        ("loss", TypeError),
    ],
)
def test_member_input_gradients_bad_losses(losses, error):
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(error, match="losses"):
        member_input_gradients(losses, x)


def test_member_input_gradients_bad_inputs():
    with pytest.raises(TypeError, match="inputs"):
        member_input_gradients([torch.tensor(1.0, requires_grad=True)], [1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# deg_penalty


class SmallConvNet(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=3, padding=1)
        self.head = nn.Linear(3 * 4 * 4, num_classes)

    def forward(self, x):
        return self.head(F.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def mlp(num_inputs: int = 64, num_classes: int = 5, hidden: int = 6, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, hidden), act(), nn.Linear(hidden, num_classes))


@pytest.fixture
def mixed_ensemble():
    torch.manual_seed(0)
    models = [mlp(), SmallConvNet(), mlp(hidden=4, act=nn.Tanh)]
    x = torch.randn(6, 1, 8, 8)
    y = torch.randint(0, 5, (6,))
    return models, x, y


def hand_gradients(models, x, y, loss_fn=F.cross_entropy):
    grads = []
    for model in models:
        leaf = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(leaf), y), leaf)
        grads.append(grad)
    return torch.stack(grads)


def test_returns_gradient_penalty_with_shapes(mixed_ensemble):
    models, x, y = mixed_ensemble
    out = deg_penalty(models, x, y)
    assert isinstance(out, GradientPenalty)
    assert out.penalty.shape == ()
    assert out.logits.shape == (3, 6, 5)
    assert out.losses.shape == (3,)


def test_penalty_equals_eq3_of_hand_computed_gradients(mixed_ensemble):
    models, x, y = mixed_ensemble
    out = deg_penalty(models, x, y)
    expected = reference_dispersion(hand_gradients(models, x, y).double().numpy())
    assert out.penalty.item() == pytest.approx(expected, abs=1e-5)


def test_logits_and_losses_match_a_separate_forward(mixed_ensemble):
    models, x, y = mixed_ensemble
    out = deg_penalty(models, x, y)
    with torch.no_grad():
        for k, model in enumerate(models):
            logits = model(x)
            assert torch.allclose(out.logits[k], logits)
            assert torch.allclose(out.losses[k], F.cross_entropy(logits, y))


def test_penalty_reaches_every_members_parameters(mixed_ensemble):
    models, x, y = mixed_ensemble
    deg_penalty(models, x, y).penalty.backward()
    for k, model in enumerate(models):
        for name, param in model.named_parameters():
            assert param.grad is not None, (k, name)
            assert torch.isfinite(param.grad).all(), (k, name)
            assert param.grad.abs().sum() > 0, (k, name)


def test_eq4_objective_backpropagates(mixed_ensemble):
    """The gradient of eq. 4's objective is the losses' plus lambda times the penalty's, and the penalty's is not zero."""
    models, x, y = mixed_ensemble
    out = deg_penalty(models, x, y)
    params = [p for model in models for p in model.parameters()]
    objective = torch.autograd.grad(out.losses.mean() + 0.01 * out.penalty, params, retain_graph=True)
    losses = torch.autograd.grad(out.losses.mean(), params, retain_graph=True)
    penalty = torch.autograd.grad(out.penalty, params)
    for total, loss_part, penalty_part in zip(objective, losses, penalty):
        torch.testing.assert_close(total, loss_part + 0.01 * penalty_part)
    assert all(part.abs().sum() > 0 for part in penalty)


def test_callers_x_is_left_alone(mixed_ensemble):
    models, x, y = mixed_ensemble
    before = x.clone()
    out = deg_penalty(models, x, y)
    (out.losses.sum() + out.penalty).backward()
    assert not x.requires_grad
    assert x.grad is None
    assert torch.equal(x, before)


def test_x_that_requires_grad_is_used_as_is(mixed_ensemble):
    models, x, y = mixed_ensemble
    expected = deg_penalty(models, x, y).penalty.item()
    x_grad = x.clone().requires_grad_(True)
    out = deg_penalty(models, x_grad, y)
    assert out.penalty.item() == pytest.approx(expected, abs=1e-6)
    out.penalty.backward()
    assert x_grad.requires_grad
    assert x_grad.grad is not None and torch.isfinite(x_grad.grad).all()


def test_x_from_a_trainable_module_is_used_as_is():
    torch.manual_seed(1)
    stem = nn.Linear(3, 4)
    models = [mlp(4, 3, 5, nn.Tanh), mlp(4, 3, 5, nn.Tanh)]
    features = stem(torch.randn(5, 3))  # non-leaf, requires grad
    labels = torch.randint(0, 3, (5,))
    out = deg_penalty(models, features, labels)
    expected = reference_dispersion(hand_gradients(models, features, labels).double().numpy())
    assert out.penalty.item() == pytest.approx(expected, abs=1e-5)
    out.penalty.backward()
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0


def test_one_forward_per_member(mixed_ensemble):
    models, x, y = mixed_ensemble
    calls = [0] * len(models)
    for k, model in enumerate(models):
        model.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    out = deg_penalty(models, x, y)
    (out.losses.mean() + 0.01 * out.penalty).backward()
    assert calls == [1, 1, 1]


def test_create_graph_false_gives_detached_penalty(mixed_ensemble):
    models, x, y = mixed_ensemble
    out = deg_penalty(models, x, y, create_graph=False)
    expected = deg_penalty(models, x, y).penalty.item()
    assert not out.penalty.requires_grad
    assert out.losses.requires_grad and out.logits.requires_grad
    assert out.penalty.item() == pytest.approx(expected, abs=1e-6)


def test_accepts_tuple_and_module_list(mixed_ensemble):
    models, x, y = mixed_ensemble
    expected = deg_penalty(models, x, y).penalty.item()
    assert deg_penalty(tuple(models), x, y).penalty.item() == pytest.approx(expected, abs=1e-6)
    assert deg_penalty(nn.ModuleList(models), x, y).penalty.item() == pytest.approx(expected, abs=1e-6)


def test_gradcheck_wrt_one_members_parameters():
    torch.manual_seed(2)
    models = [mlp(3, 3, 4, nn.Tanh).double(), mlp(3, 3, 4, nn.Tanh).double()]
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    first_weight = models[0][1].weight

    def penalty_of_weight(weight):
        class WithWeight(nn.Module):
            def forward(self, inputs):
                return torch.func.functional_call(models[0], {"1.weight": weight}, (inputs,))

        return deg_penalty([WithWeight(), models[1]], x, y).penalty

    weight = first_weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(penalty_of_weight, (weight,))


def test_gradcheck_wrt_input():
    torch.manual_seed(3)
    models = [mlp(3, 3, 4, nn.Tanh).double(), mlp(3, 3, 5, nn.Tanh).double()]
    y = torch.randint(0, 3, (4,))
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inputs: deg_penalty(models, inputs, y).penalty, (x,))


def test_custom_loss_nll_of_log_softmax_equals_cross_entropy(mixed_ensemble):
    models, x, y = mixed_ensemble
    out = deg_penalty(models, x, y, loss_fn=lambda logits, t: F.nll_loss(F.log_softmax(logits, dim=1), t))
    expected = deg_penalty(models, x, y)
    assert out.penalty.item() == pytest.approx(expected.penalty.item(), abs=1e-5)
    assert torch.allclose(out.losses, expected.losses)


def test_custom_loss_mse_to_one_hot(mixed_ensemble):
    models, x, y = mixed_ensemble
    targets = F.one_hot(y, 5).float()
    out = deg_penalty(models, x, targets, loss_fn=F.mse_loss)
    expected = reference_dispersion(hand_gradients(models, x, targets, F.mse_loss).double().numpy())
    assert out.penalty.item() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(out.losses[0], F.mse_loss(models[0](x), targets))


def test_default_loss_accepts_class_probabilities(mixed_ensemble):
    models, x, y = mixed_ensemble
    soft = F.one_hot(y, 5).float()
    out = deg_penalty(models, x, soft)
    assert out.penalty.item() == pytest.approx(deg_penalty(models, x, y).penalty.item(), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# deg_penalty: validation


class ConstantLogits(nn.Module):
    """Ignores its input: its loss has no gradient with respect to x."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.logits = nn.Parameter(torch.randn(num_classes))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_rejects_fewer_than_two_models(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match="models"):
        deg_penalty(models[:1], x, y)
    with pytest.raises(ValueError, match="models"):
        deg_penalty([], x, y)


def test_rejects_non_module_member(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(TypeError, match=r"models\[1\]"):
        deg_penalty([models[0], lambda t: t, models[2]], x, y)


@pytest.mark.parametrize("models", [mlp(), nn.Sequential(mlp(), mlp()), "mlp"])
def test_rejects_models_that_are_not_a_sequence(models):
    with pytest.raises(TypeError, match="models"):
        deg_penalty(models, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


def test_rejects_bad_x(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match="x"):
        deg_penalty(models, x[:0], y[:0])
    with pytest.raises(TypeError, match="x"):
        deg_penalty(models, x.long(), y)
    with pytest.raises(TypeError, match="x"):
        deg_penalty(models, x.numpy(), y)
    with pytest.raises(ValueError, match="x"):
        deg_penalty(models, torch.tensor(1.0), y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x"):
        deg_penalty(models, bad, y)


def test_rejects_bad_labels(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match="y"):
        deg_penalty(models, x, y[:-1])
    with pytest.raises(ValueError, match="y"):
        deg_penalty(models, x, y[:, None])
    with pytest.raises(ValueError, match="y"):
        deg_penalty(models, x, torch.rand(6, 4))  # probabilities with the wrong number of classes
    with pytest.raises(TypeError, match="y"):
        deg_penalty(models, x, [0, 1, 2, 3, 4, 0])


def test_rejects_mismatched_logits_shapes(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match=r"member 1 returned \(6, 7\)"):
        deg_penalty([models[0], SmallConvNet(num_classes=7)], x, y)


def test_rejects_logits_without_the_batch_axis(mixed_ensemble):
    models, x, y = mixed_ensemble

    class Pooled(nn.Module):
        def forward(self, inputs):
            return inputs.sum(0)

    with pytest.raises(ValueError, match=r"models\[1\]"):
        deg_penalty([models[0], Pooled()], x, y, loss_fn=lambda out, t: out.sum())


def test_rejects_member_that_ignores_x(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match=r"models\[1\]"):
        deg_penalty([models[0], ConstantLogits()], x, y)


def test_rejects_non_scalar_loss(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match="loss_fn"):
        deg_penalty(models, x, y, loss_fn=lambda logits, t: F.cross_entropy(logits, t, reduction="none"))


def test_rejects_nan_gradients(mixed_ensemble):
    models, x, y = mixed_ensemble
    with torch.no_grad():
        models[1].head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="models"):
        deg_penalty(models, x, y)


# --- what deg_penalty feeds its loss, and members it cannot train -----------------------------


def test_labels_outside_the_members_classes_name_y(mixed_ensemble):
    models, x, _ = mixed_ensemble
    with pytest.raises(ValueError, match=r"`y`.*\[0, 5\).*from 0 to 5"):
        deg_penalty(models, x, torch.tensor([0, 5, 1, 2, 0, 4]))


def test_member_outputs_that_are_not_batch_by_classes_are_named(mixed_ensemble):
    models, x, y = mixed_ensemble

    class ExtraAxis(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(inputs).unsqueeze(-1)

    with pytest.raises(ValueError, match=r"logits \[B, L\] for the default cross-entropy.*loss_fn"):
        deg_penalty([ExtraAxis(m) for m in models], x, y)


def test_a_member_of_another_dtype_is_named(mixed_ensemble):
    models, x, y = mixed_ensemble
    with pytest.raises(TypeError, match=r"`models\[1\]` are torch.float64.*\.to\(x\.dtype\)"):
        deg_penalty([models[0], copy.deepcopy(models[1]).double()], x, y)


def test_members_without_double_backward_are_refused_unless_only_measured():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 6), nn.Hardsigmoid(), nn.Linear(6, 3)) for _ in range(2)]
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match=r"double backward.*`models\[0\]` holds Hardsigmoid at '1'.*create_graph=False"):
        deg_penalty(models, x, y)
    assert torch.isfinite(deg_penalty(models, x, y, create_graph=False).penalty)


def test_transposed_gradients_are_reported_when_k_is_given():
    grads = torch.randn(5, 3, 4)  # [B, K, ...] by mistake
    with pytest.raises(ValueError, match=r"num_members=3.*got 5.*grads\.transpose\(0, 1\)"):
        dispersed_gradient_loss(grads, num_members=3)
    dispersed_gradient_loss(grads.transpose(0, 1), num_members=3)


# --- the penalty on part of the batch ---------------------------------------------------------


def test_penalty_fraction_penalises_the_first_samples_and_keeps_the_full_batch_losses(mixed_ensemble):
    models, x, y = mixed_ensemble
    part = deg_penalty(models, x, y, penalty_fraction=0.5)  # ceil(0.5 * 6) = 3 samples
    on_sub_batch = deg_penalty(models, x[:3], y[:3])
    full = deg_penalty(models, x, y)
    torch.testing.assert_close(part.penalty, on_sub_batch.penalty)
    torch.testing.assert_close(part.logits, full.logits)
    torch.testing.assert_close(part.losses, full.losses)
    # eq. 4's gradient: the full batch's CE plus lambda times the sub-batch's penalty
    params = [p for model in models for p in model.parameters()]
    got = torch.autograd.grad(part.losses.mean() + 0.01 * part.penalty, params)
    expected = torch.autograd.grad(full.losses.mean() + 0.01 * on_sub_batch.penalty, params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_penalty_fraction_one_is_the_plain_penalty(mixed_ensemble):
    models, x, y = mixed_ensemble
    torch.testing.assert_close(deg_penalty(models, x, y, penalty_fraction=1.0).penalty, deg_penalty(models, x, y).penalty)
    tiny = deg_penalty(models, x, y, penalty_fraction=1e-6)  # at least one sample
    torch.testing.assert_close(tiny.penalty, deg_penalty(models, x[:1], y[:1]).penalty)


def test_penalty_fraction_through_an_ensemble_with_pdd_counts_every_sample():
    from ensemble_diversity import Ensemble, PriorityDiversifiedDropout

    torch.manual_seed(0)
    ensemble = Ensemble([nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3)], pdd=PriorityDiversifiedDropout(3))
    out = deg_penalty(ensemble, torch.randn(8, 4), torch.randint(0, 3, (8,)), penalty_fraction=0.25)
    assert out.logits.shape == (3, 8, 3) and torch.isfinite(out.penalty)
    assert ensemble.pdd.priority_counts.sum().item() == 3 * 8


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, math.nan, True, "half"])
def test_penalty_fraction_must_be_in_the_unit_interval(mixed_ensemble, fraction):
    models, x, y = mixed_ensemble
    with pytest.raises(ValueError, match="`penalty_fraction`"):
        deg_penalty(models, x, y, penalty_fraction=fraction)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_labels_of_any_width_are_accepted(mixed_ensemble, dtype):
    models, x, y = mixed_ensemble
    torch.testing.assert_close(deg_penalty(models, x, y.to(dtype)).losses, deg_penalty(models, x, y).losses)


def test_non_finite_values_raise_the_catchable_non_finite_error(mixed_ensemble):
    from ensemble_diversity import NonFiniteError

    models, x, y = mixed_ensemble
    with pytest.raises(NonFiniteError, match="`x`"):
        deg_penalty(models, x.clone().fill_(math.nan), y)
    with pytest.raises(NonFiniteError, match="`grads`"):
        dispersed_gradient_loss(torch.full((2, 3, 4), math.inf))
    assert issubclass(NonFiniteError, ValueError)
