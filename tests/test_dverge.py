"""Tests for ensemble_diversity.dverge: feature distillation and the cross-training loss against
hand-written references that follow the official code's operation order (zjysteven/DVERGE,
``distillation.py``: ``Linf_distillation``; ``train/train_dverge.py``: ``DVERGE_Trainer.train``),
any K, gradient flow, the constraints of the distilled images, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from ensemble_diversity import CrossTraining, Ensemble, distillation_features, draw_layer, dverge_loss, feature_distillation


def member(seed: int, features: int = 6, classes: int = 4) -> nn.Sequential:
    """Body ``[0:3]`` (post-activation features, what the head takes) and head ``[3]``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 9), nn.Tanh(), nn.Linear(9, 5), nn.Linear(5, classes)).double()


def images(seed: int, size: int = 6, features: int = 6) -> Tensor:
    return torch.rand(size, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# The official Linf_distillation for one member, step by step: target features recomputed at
# every step, MSE, per-sample L1 normalisation, momentum mu = 1, a signed step *down*, projection
# onto the ball, clamp to [0, 1]; no random start.


def official_distillation(features, source: Tensor, target: Tensor, eps: float, alpha: float, steps: int, mu: float = 1.0) -> Tensor:
    x_nat = source.clone().detach()
    x_adv = torch.clamp(source.clone().detach(), 0.0, 1.0)
    g = torch.zeros_like(x_adv)
    for _ in range(steps):
        x_adv.requires_grad = True
        out = features(x_adv)
        goal = features(target).data.clone().detach()
        loss = nn.MSELoss()(out, goal)
        loss.backward()
        grad = x_adv.grad.data.clone().detach()
        with torch.no_grad():
            l1 = torch.norm(grad.view(grad.shape[0], -1), 1, dim=1)
            grad = grad / torch.clamp(l1, min=1e-12).view(grad.shape[0], 1)
            g = mu * g + grad
            x_adv = x_adv - alpha * g.sign()
            x_adv = torch.max(torch.min(x_adv, x_nat + eps), x_nat - eps)
            x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.clone().detach()


def official_cross_training(models: list[nn.Module], distilled: list[Tensor], labels: Tensor) -> list[Tensor]:
    losses = []
    for i, model in enumerate(models):
        loss = 0
        for j, data in enumerate(distilled):
            if i == j:
                continue
            loss = loss + nn.CrossEntropyLoss()(model(data), labels)
        losses.append(loss)
    return losses


@pytest.mark.parametrize(("layer", "cut"), [(None, 3), ("1", 2), ("0", 1)])
def test_distillation_matches_the_official_order_for_k3(layer: str | None, cut: int) -> None:
    models = [member(seed) for seed in range(3)]
    source, target = images(0), images(1)
    got = feature_distillation(models, source, target, eps=0.07, step_size=0.007, steps=10, layer=layer)
    assert got.shape == (3, *source.shape)
    for k, model in enumerate(models):
        expected = official_distillation(model[:cut], source, target, 0.07, 0.007, 10)
        torch.testing.assert_close(got[k], expected)


def test_cross_training_matches_the_official_loop_for_k3() -> None:
    models = [member(seed) for seed in range(3)]
    distilled = feature_distillation(models, images(0), images(1), eps=0.1, step_size=0.01)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    out = dverge_loss(models, distilled, labels)
    assert isinstance(out, CrossTraining) and out.logits.shape == (3, 2, 6, 4)
    expected = official_cross_training(models, list(distilled), labels)
    torch.testing.assert_close(out.losses, torch.stack(expected))


def test_an_ensemble_gives_the_list_values() -> None:
    models = [member(seed) for seed in range(3)]
    source, target = images(2), images(3)
    listed = feature_distillation(models, source, target, eps=0.1, step_size=0.02, steps=4)
    ensembled = feature_distillation(Ensemble(models), source, target, eps=0.1, step_size=0.02, steps=4)
    torch.testing.assert_close(ensembled, listed)
    labels = torch.zeros(6, dtype=torch.long)
    torch.testing.assert_close(dverge_loss(Ensemble(models), listed, labels).losses, dverge_loss(models, listed, labels).losses)


# ---------------------------------------------------------------------------------------------
# Any K; the constraints; the distance it is for.


@settings(max_examples=12, deadline=None)
@given(num_members=st.integers(2, 5), size=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_any_k_matches_the_references(num_members: int, size: int, seed: int) -> None:
    models = [member(seed + k) for k in range(num_members)]
    source, target = images(seed, size), images(seed + 1, size)
    distilled = feature_distillation(models, source, target, eps=0.05, step_size=0.01, steps=3)
    for k, model in enumerate(models):
        torch.testing.assert_close(distilled[k], official_distillation(model[:3], source, target, 0.05, 0.01, 3))
    labels = torch.randint(0, 4, (size,), generator=torch.Generator().manual_seed(seed))
    out = dverge_loss(models, distilled, labels)
    assert out.logits.shape == (num_members, num_members - 1, size, 4)
    torch.testing.assert_close(out.losses, torch.stack(official_cross_training(models, list(distilled), labels)))


def bn_member(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("random_start", [False, True])
def test_distilled_images_stay_in_the_ball_and_lower_the_feature_distance(random_start: bool) -> None:
    models = [bn_member(seed) for seed in range(3)]
    source, target = torch.rand(16, 6), torch.rand(16, 6)
    stats = [model[1].running_mean.clone() for model in models]
    distilled = feature_distillation(models, source, target, eps=0.1, step_size=0.01, steps=10, random_start=random_start)
    assert not distilled.requires_grad
    assert float((distilled - source).abs().max()) <= 0.1 + 1e-6
    assert float(distilled.min()) >= 0.0 and float(distilled.max()) <= 1.0
    assert all(torch.equal(model[1].running_mean, saved) for model, saved in zip(models, stats))
    assert all(p.grad is None for model in models for p in model.parameters())
    with torch.no_grad():
        for k, model in enumerate(models):
            goal = model[:3](target)
            assert F.mse_loss(model[:3](distilled[k]), goal) < F.mse_loss(model[:3](source), goal), k
    feature_distillation(models, source, target, eps=0.1, step_size=0.01, steps=2, update_buffers=True)
    assert all(not torch.equal(model[1].running_mean, saved) for model, saved in zip(models, stats))


def test_features_stop_before_an_inplace_relu() -> None:
    """A named BatchNorm gives its pre-activation even where an in-place ReLU follows (torchvision's blocks)."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(inplace=True), nn.Linear(8, 3)) for _ in range(2)]
    x = torch.rand(2, 10, 6)
    features = distillation_features(models, x, layer="1")
    assert features.shape == (2, 10, 8) and float(features.detach().min()) < 0
    torch.testing.assert_close(distillation_features(models, x), torch.relu(features))


def test_torchvision_resnet_layers() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    models = [torchvision.models.resnet18(num_classes=5) for _ in range(2)]
    for model in models:
        model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert distillation_features(models, torch.stack([x, x]), layer="layer1.0.bn2").shape == (2, 2, 64, 8, 8)
    assert distillation_features(models, torch.stack([x, x])).shape == (2, 2, 512)  # fc's input


# ---------------------------------------------------------------------------------------------
# Cross-training: member i sees the other members' images only, and trains itself only.


def test_cross_training_uses_only_the_other_members_images() -> None:
    models = [member(seed) for seed in range(4)]
    distilled = torch.stack([images(seed) for seed in range(4)])
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    before = dverge_loss(models, distilled, labels).losses
    for i in range(4):
        changed = distilled.clone()
        changed[i] = images(10 + i)
        after = dverge_loss(models, changed, labels).losses
        assert after[i] == before[i]
        assert all(after[j] != before[j] for j in range(4) if j != i)


def test_each_members_loss_trains_that_member_only_and_every_member_moves() -> None:
    models = [member(seed) for seed in range(3)]
    distilled = feature_distillation(models, images(0), images(1), eps=0.1, step_size=0.01)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    out = dverge_loss(models, distilled, labels)
    for i in range(3):
        grads = torch.autograd.grad(out.losses[i], [p for model in models for p in model.parameters()], retain_graph=True, allow_unused=True)
        per_member = [grads[6 * k : 6 * k + 6] for k in range(3)]  # 3 linear layers, weight and bias
        assert all(g is None or float(g.abs().sum()) == 0 for k in range(3) if k != i for g in per_member[k])
        assert all(g is not None and float(g.abs().sum()) > 0 for g in per_member[i])
    before = [[p.detach().clone() for p in model.parameters()] for model in models]
    optimizer = torch.optim.SGD([p for model in models for p in model.parameters()], lr=0.1)
    out.losses.sum().backward()
    optimizer.step()
    for k, model in enumerate(models):
        assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before[k])), k


# ---------------------------------------------------------------------------------------------
# The per-epoch layer draw, and bad input.


def test_draw_layer_is_a_function_of_seed_and_epoch_and_covers_the_list() -> None:
    layers = ["a", "b", None, "d"]
    draws = [draw_layer(layers, seed=3, epoch=epoch) for epoch in range(60)]
    assert draws == [draw_layer(layers, seed=3, epoch=epoch) for epoch in range(60)]
    assert set(draws) == set(layers)
    assert draws != [draw_layer(layers, seed=4, epoch=epoch) for epoch in range(60)]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps": -1.0, "step_size": 0.1}, "eps"),
        ({"eps": 0.1, "step_size": float("nan")}, "step_size"),
        ({"eps": 0.1, "step_size": 0.1, "steps": -2}, "steps"),
        ({"eps": 0.1, "step_size": 0.1, "momentum": -1.0}, "momentum"),
        ({"eps": 0.1, "step_size": 0.1, "layer": "missing"}, "layer"),
    ],
)
def test_distillation_names_bad_settings(kwargs: dict[str, object], name: str) -> None:
    models = [member(seed) for seed in range(2)]
    with pytest.raises(ValueError, match=f"`{name}`"):
        feature_distillation(models, images(0), images(1), **kwargs)


def test_bad_inputs_are_named() -> None:
    models = [member(seed) for seed in range(2)]
    source = images(0)
    with pytest.raises(ValueError, match="`target`"):
        feature_distillation(models, source, source[:2], eps=0.1, step_size=0.01)
    with pytest.raises(TypeError, match="`layer`"):
        feature_distillation(models, source, source, eps=0.1, step_size=0.01, layer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`models`"):
        feature_distillation(models[:1], source, source, eps=0.1, step_size=0.01)
    with pytest.raises(ValueError, match="`distilled`"):
        dverge_loss(models, torch.stack([source] * 3), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="`y`"):
        dverge_loss(models, torch.stack([source] * 2), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="`y`.*class indices in"):
        dverge_loss(models, torch.stack([source] * 2), torch.full((len(source),), -1, dtype=torch.long))
    with pytest.raises(ValueError, match="`x`"):
        distillation_features(models, source)
    with pytest.raises(ValueError, match="`layer`"):
        distillation_features([nn.Sequential(nn.Linear(6, 2), nn.ReLU()), nn.Sequential(nn.ReLU())], torch.stack([source, source]).float(), layer="1")
    with pytest.raises(ValueError, match="`layers`"):
        draw_layer([], seed=0, epoch=0)
    with pytest.raises(ValueError, match="`epoch`"):
        draw_layer(["a"], seed=0, epoch=-1)


def test_mismatched_dtypes_and_activation_shapes_are_named() -> None:
    """What the fuzz tests found: a float32 target beside a float64 source, float32 inputs for
    float64 members, and members whose activations at the layer differ in shape."""
    models = [member(seed) for seed in range(2)]
    source = images(0)
    with pytest.raises(ValueError, match="`target`.*dtype"):
        feature_distillation(models, source, source.float(), eps=0.1, step_size=0.01)
    with pytest.raises(TypeError, match="`models`.*dtype of `x`"):
        feature_distillation(models, source.float(), source.float(), eps=0.1, step_size=0.01)
    with pytest.raises(TypeError, match="`models`.*dtype of `x`"):
        dverge_loss(models, torch.stack([source, source]).float(), torch.zeros(len(source), dtype=torch.long))
    odd = [nn.Sequential(nn.Flatten(), nn.Linear(source[0].numel(), 3)), nn.Sequential(nn.Flatten(), nn.Linear(source[0].numel(), 4))]
    odd = [model.double() for model in odd]
    with pytest.raises(ValueError, match="`layer`.*one shape"):
        distillation_features(odd, torch.stack([source, source]), layer="1")
