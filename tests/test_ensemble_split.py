"""Ensemble(models, pdd=..., head=...): any K classifiers split before their final linear layer,
PDD between bodies and heads (Algorithm 1), DEG through it (Algorithm 2)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ensemble_diversity import (
    Ensemble,
    PriorityDiversifiedDropout,
    deg_penalty,
    dispersed_gradient_loss,
    gal_penalty,
    gradient_alignment_loss,
    member_input_gradients,
    member_inputs,
)


def mlp(seed: int, *, batch_norm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    norm = nn.BatchNorm1d(16) if batch_norm else nn.Identity()
    return nn.Sequential(nn.Linear(6, 16), norm, nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


def mlps(num_members: int = 3, **kwargs) -> list[nn.Sequential]:
    return [mlp(seed, **kwargs) for seed in range(num_members)]


# --- where the split goes -----------------------------------------------------------------


class TwoLinears(nn.Module):
    """Registers its head ``fc`` before ``aux``, which runs first: the last registered Linear is not the head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.aux = nn.Linear(5, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.aux(x)))


def test_the_last_registered_linear_is_the_default_head_and_the_split_keeps_the_model():
    models = mlps()
    x = torch.randn(5, 6)
    before = [model(x) for model in models]
    weights = [model[-1].weight for model in models]
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(3)).eval()
    assert ensemble.heads == ("6", "6", "6")
    for k, model in enumerate(models):
        # same Parameter objects (an optimiser built before keeps working), same keys, same output
        assert model[-1].weight is weights[k] and isinstance(model[-1], nn.Linear)
        torch.testing.assert_close(model(x), before[k])
    assert set(models[0].state_dict()) == set(mlp(0).state_dict())
    outputs = ensemble.member_outputs(x)
    torch.testing.assert_close(outputs.logits, torch.stack(before))
    torch.testing.assert_close(outputs.features, torch.stack([model[:-1](x) for model in models]))


def test_a_named_head_is_used_and_a_wrong_default_is_reported():
    x = torch.randn(4, 5)
    wrong = Ensemble([TwoLinears(), TwoLinears()], pdd=PriorityDiversifiedDropout(2, num_intervals=3))
    assert wrong.heads == ("aux", "aux")
    with pytest.raises(ValueError, match=r"model 0 to run up to its head .aux. on `x`.*head="):
        wrong.member_outputs(x)
    models = [TwoLinears(), TwoLinears()]
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(2, num_intervals=3), head="fc").eval()
    assert ensemble.heads == ("fc", "fc")
    outputs = ensemble.member_outputs(x)
    torch.testing.assert_close(outputs.features[1], torch.relu(models[1].aux(x)))
    torch.testing.assert_close(outputs.logits[1], models[1](x))


def test_a_model_that_is_a_linear_layer_has_an_empty_body():
    models = [nn.Linear(4, 3), nn.Linear(4, 3)]
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(2, num_intervals=3))
    assert ensemble.heads == ("", "")
    x = torch.randn(2, 4)
    torch.testing.assert_close(ensemble.member_outputs(x).features, torch.stack([x, x]))
    assert set(ensemble.state_dict()) >= {"members.0.weight", "members.1.bias", "pdd.priority_counts"}


# torchvision is an optional extra: the library's tests also run on the torch floor without it.
needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="needs torchvision")


def tvm():
    from torchvision import models

    return models


def tiny_vit(num_classes: int) -> nn.Module:
    return tvm().VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=num_classes)


def tiny_densenet(num_classes: int) -> nn.Module:
    return tvm().DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, num_classes=num_classes)


@needs_torchvision
@pytest.mark.parametrize(
    ("build", "head"),
    [
        (lambda **kw: tvm().resnet18(**kw), "fc"),
        (lambda **kw: tvm().mobilenet_v2(**kw), "classifier.1"),
        (lambda **kw: tvm().mobilenet_v3_small(**kw), "classifier.3"),
        (tiny_densenet, "classifier"),
        (tiny_vit, "heads.head"),
    ],
    ids=["resnet18", "mobilenet_v2", "mobilenet_v3_small", "densenet", "vit"],
)
def test_torchvision_heads_are_found_and_bodies_feed_them(build, head):
    torch.manual_seed(0)
    models = [build(num_classes=7) for _ in range(2)]
    x = torch.randn(2, 3, 32, 32)
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(2, num_intervals=3)).eval()
    assert ensemble.heads == (head, head)
    with torch.no_grad():
        outputs = ensemble.member_outputs(x)
        expected = torch.stack([model(x) for model in models])
    in_features = models[0].get_submodule(head).in_features
    assert outputs.features.shape == (2, 2, in_features)
    torch.testing.assert_close(outputs.logits, expected)
    # training mode goes through PDD: K bodies, one mask, K heads
    ensemble.train()
    assert ensemble.member_logits(x).shape == (2, 2, 7)
    assert ensemble.pdd.priority_counts.sum().item() == 2 * 2


@needs_torchvision
def test_vgg_head_is_its_last_classifier_layer():
    with torch.device("meta"):  # VGG's 4096-unit classifier is 120M parameters: shapes suffice
        models = [tvm().vgg11(num_classes=7), tvm().vgg11(num_classes=7)]
        ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(2, num_intervals=3)).eval()
        outputs = ensemble.member_outputs(torch.empty(1, 3, 32, 32))
    assert ensemble.heads == ("classifier.6", "classifier.6")
    assert outputs.features.shape == (2, 1, 4096) and outputs.logits.shape == (2, 1, 7)


# --- state: .to(), deepcopy, state_dict ---------------------------------------------------


def test_pdd_is_a_registered_submodule_that_moves_and_saves():
    ensemble = Ensemble(mlps(), pdd=PriorityDiversifiedDropout(3))
    assert ensemble.pdd in list(ensemble.modules())
    ensemble(torch.randn(5, 6))
    assert ensemble.state_dict()["pdd.priority_counts"].sum().item() == 3 * 5
    ensemble.to(torch.float64)
    assert ensemble.members[0][0].weight.dtype == torch.float64
    assert ensemble.member_logits(torch.randn(2, 6, dtype=torch.float64)).dtype == torch.float64
    ensemble.to("meta")
    assert ensemble.pdd.priority_counts.device.type == "meta"


def test_deepcopy_gives_an_independent_ensemble_with_its_own_pdd():
    ensemble = Ensemble(mlps(), pdd=PriorityDiversifiedDropout(3))
    twin = copy.deepcopy(ensemble)
    assert twin.pdd is not ensemble.pdd
    twin(torch.randn(4, 6))
    assert ensemble.pdd.priority_counts.sum() == 0 and twin.pdd.priority_counts.sum() == 3 * 4
    with torch.no_grad():
        twin.members[0][-1].weight.add_(1.0)
    twin.eval(), ensemble.eval()
    x = torch.randn(3, 6)
    # the copy's split heads belong to the copy's members
    torch.testing.assert_close(twin.member_outputs(x).logits[0], twin.members[0](x))
    assert not torch.allclose(twin.member_logits(x)[0], ensemble.member_logits(x)[0])


def test_state_dict_round_trip_restores_members_and_priority_counts():
    ensemble = Ensemble(mlps(), pdd=PriorityDiversifiedDropout(3))
    ensemble(torch.randn(8, 6))
    fresh = Ensemble([mlp(seed + 10) for seed in range(3)], pdd=PriorityDiversifiedDropout(3))
    fresh.load_state_dict(ensemble.state_dict())
    x = torch.randn(4, 6)
    torch.testing.assert_close(fresh.eval()(x), ensemble.eval()(x))
    torch.testing.assert_close(fresh.pdd.priority_counts, ensemble.pdd.priority_counts)
    other = Ensemble(mlps(), pdd=PriorityDiversifiedDropout(3, rescale=False))
    with pytest.raises(ValueError, match="rescale"):
        other.load_state_dict(ensemble.state_dict())


# --- the forward: PDD between bodies and heads, DEG through it --------------------------------


def hand_written_pdd_deg(models: list[nn.Sequential], pdd: PriorityDiversifiedDropout, x, y):
    """README's loop before Ensemble: bodies, PDD on the stacked features, heads, eq. 3 by hand."""
    inputs = member_inputs(x, len(models))
    features = torch.stack([model[:-1](inputs[k]) for k, model in enumerate(models)])
    dropped = pdd(features)
    logits = torch.stack([model[-1](dropped[k]) for k, model in enumerate(models)])
    losses = torch.stack([F.cross_entropy(logits[k], y) for k in range(len(models))])
    grads = member_input_gradients(losses, inputs, per_member=True)
    return losses, grads


@pytest.mark.parametrize("batch_norm", [False, True])
def test_pdd_deg_through_the_ensemble_equals_the_hand_written_loop(batch_norm):
    models = mlps(batch_norm=batch_norm)
    twins = copy.deepcopy(models)
    x, y = torch.randn(9, 6), torch.randint(0, 4, (9,))

    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(3))
    torch.manual_seed(5)
    out = deg_penalty(ensemble, x, y)
    (out.losses.mean() + 0.01 * out.penalty).backward()

    pdd = PriorityDiversifiedDropout(3)
    torch.manual_seed(5)
    losses, grads = hand_written_pdd_deg(twins, pdd, x, y)
    penalty = dispersed_gradient_loss(grads)
    (losses.mean() + 0.01 * penalty).backward()

    torch.testing.assert_close(out.losses, losses)
    torch.testing.assert_close(out.penalty, penalty)
    for model, twin in zip(models, twins):
        for (name, param), twin_param in zip(model.named_parameters(), twin.parameters()):
            torch.testing.assert_close(param.grad, twin_param.grad, msg=name)
        for buffer, twin_buffer in zip(model.buffers(), twin.buffers()):
            torch.testing.assert_close(buffer, twin_buffer)
    torch.testing.assert_close(ensemble.pdd.priority_counts, pdd.priority_counts)


def test_gal_through_the_ensemble_uses_the_same_pdd_forward():
    models = mlps()
    x, y = torch.randn(7, 6), torch.randint(0, 4, (7,))
    torch.manual_seed(2)
    out = gal_penalty(Ensemble(copy.deepcopy(models), pdd=PriorityDiversifiedDropout(3)), x, y)
    torch.manual_seed(2)
    _, grads = hand_written_pdd_deg(models, PriorityDiversifiedDropout(3), x, y)
    torch.testing.assert_close(out.penalty, gradient_alignment_loss(grads))


def test_one_forward_per_member_and_batch_norm_updated_once():
    models = mlps(batch_norm=True)
    calls = [0] * 3
    for k, model in enumerate(models):
        model.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(3))
    deg_penalty(ensemble, torch.randn(5, 6), torch.randint(0, 4, (5,)))
    assert calls == [1, 1, 1]
    assert all(model[1].num_batches_tracked.item() == 1 for model in models)


def test_eval_mode_runs_whole_members_and_leaves_pdd_alone():
    models = mlps(dropout=0.5)
    ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(3)).eval()
    x = torch.randn(4, 6)
    torch.testing.assert_close(ensemble.member_logits(x), torch.stack([model(x) for model in models]))
    assert ensemble.pdd.priority_counts.sum() == 0


def test_without_pdd_the_members_run_whole_in_training_mode_too():
    models = mlps()
    ensemble = Ensemble(models)
    x = torch.randn(4, 6)
    torch.testing.assert_close(ensemble.member_logits(x), torch.stack([model(x) for model in models]))


@settings(max_examples=20, deadline=None)
@given(st.permutations(range(4)), st.integers(0, 2**16))
def test_the_average_does_not_depend_on_member_order(order, seed):
    """In any order, the forward is the mean of the members' softmax, computed here by hand from each model alone."""
    models = [mlp(seed + k) for k in range(4)]
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = [model.eval()(x) for model in models]
        by_hand = sum(torch.exp(z) / torch.exp(z).sum(dim=1, keepdim=True) for z in logits) / len(models)
        forward = Ensemble(models).eval()(x)
        permuted = Ensemble([models[k] for k in order]).eval()(x)
    torch.testing.assert_close(forward, by_hand)
    torch.testing.assert_close(permuted, by_hand)


def test_per_member_inputs_are_checked():
    ensemble = Ensemble(mlps(), pdd=PriorityDiversifiedDropout(3))
    with pytest.raises(ValueError, match=r"x.*\[K=3, B, \.\.\.\].*\(2, 5, 6\)"):
        ensemble.member_outputs(torch.randn(2, 5, 6), per_member=True)


# --- bad input --------------------------------------------------------------------------------


def test_bad_construction_is_reported_naming_the_argument():
    with pytest.raises(ValueError, match=r"`pdd`.*K=2.*num_members=3"):
        Ensemble(mlps(2), pdd=PriorityDiversifiedDropout(3))
    with pytest.raises(ValueError, match=r"nn\.Linear.*model 1 \(Sequential\) has none.*head="):
        Ensemble([mlp(0), nn.Sequential(nn.ReLU())], pdd=PriorityDiversifiedDropout(2, num_intervals=3))
    with pytest.raises(ValueError, match=r"`head`.*model 0 \(Sequential\) has no 'fc'.*\['0', '4', '6'\]"):
        Ensemble(mlps(2), head="fc")
    with pytest.raises(ValueError, match=r"`head` to name an nn.Linear.*'2' of model 0 is ReLU"):
        Ensemble(mlps(2), head="2")
    with pytest.raises(TypeError, match="`pdd`"):
        Ensemble(mlps(2), pdd=nn.Dropout())
    with pytest.raises(TypeError, match="`head`"):
        Ensemble(mlps(2), head=6)


def test_models_without_a_linear_can_be_averaged_but_not_split():
    ensemble = Ensemble([nn.Identity(), nn.Identity()])
    assert ensemble.heads is None
    assert ensemble(torch.randn(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="head="):
        ensemble.member_outputs(torch.randn(2, 3))
