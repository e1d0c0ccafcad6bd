"""Tests for ensemble_diversity.ensemble: the averaged ensemble of K members."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ensemble_diversity.ensemble import Ensemble


def make_members(num_members: int, in_features: int = 4, num_classes: int = 3, seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [nn.Linear(in_features, num_classes) for _ in range(num_members)]


def reference_average(members, x, combine):
    """The paper's simple average, with explicit loops over members, samples and classes."""
    outputs = [member(x).tolist() for member in members]
    batch, num_classes = len(outputs[0]), len(outputs[0][0])
    result = []
    for b in range(batch):
        row = [0.0] * num_classes
        for out in outputs:
            values = out[b]
            if combine == "probabilities":
                top = max(values)
                exps = [math.exp(v - top) for v in values]
                values = [e / sum(exps) for e in exps]
            for c in range(num_classes):
                row[c] += values[c] / len(members)
        result.append(row)
    return torch.tensor(result)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.sampled_from(["probabilities", "logits"]), st.integers(0, 2**16))
def test_forward_matches_reference(num_members, batch, combine, seed):
    members = make_members(num_members, seed=seed)
    ensemble = Ensemble(members, combine=combine)
    x = torch.randn(batch, 4)
    with torch.no_grad():
        got = ensemble(x)
        expected = reference_average(members, x, combine)
    assert got.shape == (batch, 3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if combine == "probabilities":
        torch.testing.assert_close(got.sum(dim=1), torch.ones(batch))
        assert bool((got >= 0).all())


def test_member_logits_stacks_member_outputs():
    members = make_members(3)
    ensemble = Ensemble(members)
    x = torch.randn(5, 4)
    stacked = ensemble.member_logits(x)
    assert stacked.shape == (3, 5, 3)
    for k, member in enumerate(members):
        torch.testing.assert_close(stacked[k], member(x))


def test_log_probabilities_are_valid_logits_for_the_same_ensemble():
    # The docstring's advice for logit-based attacks: softmax(log(mean p)) == mean p.
    ensemble = Ensemble(make_members(3))
    x = torch.randn(6, 4)
    probs = ensemble(x)
    torch.testing.assert_close(torch.softmax(torch.log(probs), dim=1), probs)


def test_logits_mode_differs_from_probabilities_mode():
    members = make_members(3)
    x = torch.randn(6, 4)
    mean_logits = Ensemble(members, combine="logits")(x)
    torch.testing.assert_close(mean_logits, torch.stack([m(x) for m in members]).mean(0))
    assert not torch.allclose(torch.softmax(mean_logits, 1), Ensemble(members)(x))


def test_members_are_registered_and_gradients_reach_them():
    members = make_members(2)
    ensemble = Ensemble(members)
    assert isinstance(ensemble.members, nn.ModuleList)
    assert len(list(ensemble.parameters())) == 4
    assert set(ensemble.state_dict()) == {f"members.{k}.{p}" for k in range(2) for p in ("weight", "bias")}
    ensemble(torch.randn(3, 4)).log().sum().backward()
    assert all(p.grad is not None for p in ensemble.parameters())
    ensemble.eval()
    assert not any(m.training for m in ensemble.members)


def test_single_member_generator_and_module_list_accepted():
    members = make_members(1)
    x = torch.randn(2, 4)
    torch.testing.assert_close(Ensemble(members)(x), torch.softmax(members[0](x), 1))
    assert Ensemble(m for m in make_members(3)).num_members == 3
    assert Ensemble(nn.ModuleList(make_members(2))).num_members == 2


def test_extra_repr_shows_combine_and_k():
    text = repr(Ensemble(make_members(3), combine="logits"))
    assert "combine='logits'" in text and "num_members=3" in text


@pytest.mark.parametrize("combine", ["mean", "softmax", "", None])
def test_rejects_unknown_combine(combine):
    with pytest.raises(ValueError, match="combine"):
        Ensemble(make_members(2), combine=combine)


def test_rejects_empty_and_non_module_members():
    with pytest.raises(ValueError, match="models"):
        Ensemble([])
    with pytest.raises(TypeError, match="models.*model 1"):
        Ensemble([nn.Linear(2, 2), lambda x: x])
    with pytest.raises(TypeError, match="models"):
        Ensemble(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_rejects_member_outputs_of_different_shapes_naming_the_member():
    ensemble = Ensemble([nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 5)])
    with pytest.raises(ValueError, match="model 2"):
        ensemble(torch.randn(2, 4))


class _AddsAxis(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1)


class _ReturnsTuple(nn.Module):
    def forward(self, x):
        return x, x


def test_rejects_member_outputs_that_are_not_batch_by_classes():
    with pytest.raises(ValueError, match=r"model 1 of `models`.*\[B, L\].*\(2, 1, 4\)"):
        Ensemble([nn.Identity(), _AddsAxis()])(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"model 0 of `models`.*tuple"):
        Ensemble([_ReturnsTuple(), nn.Identity()])(torch.randn(2, 4))
