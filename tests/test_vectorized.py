"""VectorizedMembers equals the loop over its members: outputs, gradients (double backprop
included), BatchNorm running statistics, modes, and the modules it gives back."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ensemble_diversity.deg import dispersed_gradient_loss, member_input_gradients, member_inputs
from ensemble_diversity.vectorized import VectorizedMembers


def conv_member() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def members_and_copy(num_members: int, seed: int) -> tuple[list[nn.Module], VectorizedMembers]:
    torch.manual_seed(seed)
    members = [conv_member().double() for _ in range(num_members)]
    return members, VectorizedMembers(copy.deepcopy(members))


@settings(max_examples=10, deadline=None)
@given(num_members=st.integers(1, 4), batch=st.integers(2, 4), seed=st.integers(0, 2**16), per_member=st.booleans())
def test_training_step_equals_the_loop(num_members, batch, seed, per_member):
    members, vectorized = members_and_copy(num_members, seed)
    x = torch.randn(batch, 2, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (batch,))
    inputs = member_inputs(x, num_members) if per_member else x
    expected_logits = torch.stack([m(inputs[k] if per_member else x) for k, m in enumerate(members)])
    logits = vectorized(inputs, per_member=per_member)
    torch.testing.assert_close(logits, expected_logits)

    def loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.flatten(0, 1), y.repeat(num_members))

    loss(expected_logits).backward()
    loss(logits).backward()
    for k, member in enumerate(members):
        for name, param in member.named_parameters():
            stacked = getattr(vectorized, "stacked__" + name.replace(".", "__"))
            torch.testing.assert_close(stacked.grad[k], param.grad)
        torch.testing.assert_close(vectorized.stacked__1__running_mean[k], member[1].running_mean)
        torch.testing.assert_close(vectorized.stacked__1__running_var[k], member[1].running_var)


def test_double_backprop_deg_equals_the_loop():
    members, vectorized = members_and_copy(3, 0)
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))

    def deg(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(3), reduction="none").view(3, 4).mean(1)
        return dispersed_gradient_loss(member_input_gradients(losses, inputs, per_member=True))

    loop_inputs = member_inputs(x, 3)
    expected = deg(torch.stack([m(xk) for m, xk in zip(members, loop_inputs)]), loop_inputs)
    vector_inputs = member_inputs(x, 3)
    got = deg(vectorized(vector_inputs, per_member=True), vector_inputs)
    torch.testing.assert_close(got, expected)
    expected.backward()
    got.backward()
    torch.testing.assert_close(vectorized.stacked__0__weight.grad[2], members[2][0].weight.grad)


def test_eval_mode_uses_running_statistics_and_unstack_round_trips():
    members, vectorized = members_and_copy(2, 1)
    vectorized(torch.randn(6, 2, 5, 5, dtype=torch.float64))  # update the running statistics
    vectorized.eval()
    back = vectorized.unstack()
    assert not back.training and all(not m.training for m in back)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(vectorized(x), torch.stack([m(x) for m in back]))
    assert not torch.equal(back[0][1].running_mean, members[0][1].running_mean)  # they moved


def test_dropout_masks_differ_between_members():
    torch.manual_seed(0)
    member = nn.Sequential(nn.Linear(64, 64), nn.Dropout(0.5))
    vectorized = VectorizedMembers([member, copy.deepcopy(member)])
    out = vectorized(torch.ones(1, 64))
    assert not torch.equal(out[0], out[1])


def test_state_dict_round_trips():
    _, vectorized = members_and_copy(2, 2)
    _, other = members_and_copy(2, 3)
    other.load_state_dict(vectorized.state_dict())
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(other.eval()(x), vectorized.eval()(x))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="members"):
        VectorizedMembers([])
    with pytest.raises(ValueError, match=r"members\[1\]"):
        VectorizedMembers([nn.Linear(3, 2), nn.Linear(3, 4)])
    with pytest.raises(TypeError, match="members"):
        VectorizedMembers(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="parameters or buffers"):
        VectorizedMembers([nn.ReLU(), nn.ReLU()])
    vectorized = VectorizedMembers([nn.Linear(3, 2), nn.Linear(3, 2)])
    with pytest.raises(ValueError, match=r"\[K=2, B, \.\.\.\]"):
        vectorized(torch.randn(3, 4, 3), per_member=True)
