"""Tests for ensemble_diversity.trs: TRS's two terms and its smoothing PGD against hand-written
references that follow the official code's operation order (AI-secure/Transferability-Reduced-
Smooth-Ensemble, ``train/Empirical/trainer.py``: ``TRS_Trainer`` and ``PGD``), any K, gradient
flow into every member, and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from ensemble_diversity import Ensemble, TRSTerms, trs_perturbation, trs_terms


def mlp(seed: int, features: int = 5, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 7), nn.Tanh(), nn.Linear(7, classes)).double()


def batch(seed: int, size: int = 6, features: int = 5, classes: int = 3) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, features, generator=generator, dtype=torch.float64), torch.randint(0, classes, (size,), generator=generator)


# ---------------------------------------------------------------------------------------------
# The official K = 3 loss, written out as TRS_Trainer computes it: the three pairs by name, the
# sum divided by 3, Magnitude = 2 * batch mean of the squared flattened gradient, divided by 3.


def official_terms(models: list[nn.Module], x: Tensor, y: Tensor, x_tilde: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    inputs = x.clone().requires_grad_(True)
    grads, loss_std = [], 0
    for model in models:
        loss = F.cross_entropy(model(inputs), y)
        grads.append(torch.autograd.grad(loss, inputs, create_graph=True)[0].flatten(start_dim=1))
        loss_std = loss_std + loss

    def cosine(a: Tensor, b: Tensor) -> Tensor:
        return torch.abs(F.cosine_similarity(a, b)).mean()

    cos_loss = (cosine(grads[0], grads[1]) + cosine(grads[0], grads[2]) + cosine(grads[1], grads[2])) / 3.0
    adv_x = x_tilde.clone().requires_grad_(True)
    smooth_loss = 0
    for model in models:
        loss = F.cross_entropy(model(adv_x), y)
        grad = torch.autograd.grad(loss, adv_x, create_graph=True)[0].flatten(start_dim=1)
        smooth_loss = smooth_loss + (torch.sum(grad**2, 1)).mean() * 2
    return loss_std, cos_loss, smooth_loss / 3


def official_pgd(models: list[nn.Module], x: Tensor, y: Tensor, eps: float, noise: Tensor, *, accumulate: bool) -> Tensor:
    """The official ``PGD``: 6 steps of eps / 3 on (sum of Magnitude) / 3; ``adv.grad`` kept across steps when ``accumulate``."""
    adv = torch.clamp(x.detach() + eps * (2 * noise - 1), 0, 1)
    adv.requires_grad = True
    for _ in range(6):
        grad_loss = 0
        for model in models:
            loss = F.cross_entropy(model(adv), y)
            grad = torch.autograd.grad(loss, adv, create_graph=True)[0].flatten(start_dim=1)
            grad_loss = grad_loss + (torch.sum(grad**2, 1)).mean() * 2
        grad_loss = grad_loss / 3
        if not accumulate:
            adv.grad = None
        grad_loss.backward()
        with torch.no_grad():
            adv.data = adv.data + eps / 3.0 * adv.grad.data.sign()
            adv.data = torch.max(torch.min(adv.data, x + eps), x - eps)
            adv.data = torch.clamp(adv.data, 0.0, 1.0)
    return adv.detach()


def test_terms_match_the_official_order_for_k3() -> None:
    models = [mlp(seed) for seed in range(3)]
    x, y = batch(0)
    x_tilde = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    loss_std, cos_loss, smooth_loss = official_terms(models, x, y, x_tilde)
    terms = trs_terms(models, x, y, x_smooth=x_tilde)
    assert isinstance(terms, TRSTerms)
    torch.testing.assert_close(terms.losses.sum(), loss_std)
    torch.testing.assert_close(terms.similarity, cos_loss)
    torch.testing.assert_close(terms.smoothness, smooth_loss)
    # The "cos-l2" variant: x~ = x, from the similarity pass's own gradients.
    at_x = trs_terms(models, x, y)
    torch.testing.assert_close(at_x.smoothness, official_terms(models, x, y, x)[2])
    torch.testing.assert_close(at_x.similarity, cos_loss)


def test_an_ensemble_gives_the_list_values() -> None:
    models = [mlp(seed) for seed in range(3)]
    x, y = batch(1)
    x_tilde = x.flip(0)
    listed = trs_terms(models, x, y, x_smooth=x_tilde)
    ensembled = trs_terms(Ensemble(models), x, y, x_smooth=x_tilde)
    for got, expected in zip(ensembled, listed):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("accumulate", [True, False])
def test_perturbation_matches_the_official_pgd(accumulate: bool) -> None:
    models = [mlp(seed) for seed in range(3)]
    x, y = batch(2, size=8)
    eps, half = 0.2, 4
    # The same uniform draw for both: the reference draws it from a generator seeded alike.
    noise = torch.rand(x[half:].shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    expected = official_pgd(models, x[half:], y[half:], eps, noise, accumulate=accumulate)
    got = trs_perturbation(models, x, y, eps=eps, accumulate_gradients=accumulate, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got[:half], x[:half], rtol=0, atol=0)
    torch.testing.assert_close(got[half:], expected)


def test_accumulated_and_standard_pgd_differ() -> None:
    """Where they agree, the accumulation test above could not tell the two settings apart."""
    models = [mlp(seed) for seed in range(3)]
    x, y = batch(3, size=16)
    runs = [trs_perturbation(models, x, y, eps=0.3, accumulate_gradients=flag, generator=torch.Generator().manual_seed(0)) for flag in (False, True)]
    assert not torch.equal(runs[0], runs[1])


# ---------------------------------------------------------------------------------------------
# Any K: a brute-force loop over pairs and members, sample by sample.


@settings(max_examples=15, deadline=None)
@given(num_members=st.integers(2, 5), size=st.integers(1, 5), seed=st.integers(0, 10_000), absolute=st.booleans())
def test_any_k_matches_a_loop_over_pairs_and_samples(num_members: int, size: int, seed: int, absolute: bool) -> None:
    models = [mlp(seed + k) for k in range(num_members)]
    x, y = batch(seed, size=size)
    terms = trs_terms(models, x, y, absolute=absolute)
    grads = []
    for model in models:
        inputs = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(F.cross_entropy(model(inputs), y), inputs)[0])
    pairs = list(itertools.combinations(range(num_members), 2))
    cosines = []
    for a, b in pairs:
        for i in range(size):
            value = float(grads[a][i] @ grads[b][i]) / (float(grads[a][i].norm()) * float(grads[b][i].norm()))
            cosines.append(abs(value) if absolute else value)
    assert terms.similarity.item() == pytest.approx(sum(cosines) / len(cosines), rel=1e-9, abs=1e-12)
    norms = [2 * float(grads[k][i].pow(2).sum()) for k in range(num_members) for i in range(size)]
    assert terms.smoothness.item() == pytest.approx(sum(norms) / len(norms), rel=1e-9)
    assert terms.logits.shape == (num_members, size, 3) and terms.losses.shape == (num_members,)


def test_per_sample_uses_each_samples_own_gradient() -> None:
    models = [mlp(seed) for seed in range(3)]
    x, y = batch(4, size=5)
    got = trs_terms(models, x, y, per_sample=True).smoothness
    total = 0.0
    for model in models:
        for i in range(5):
            sample = x[i : i + 1].clone().requires_grad_(True)
            grad = torch.autograd.grad(F.cross_entropy(model(sample), y[i : i + 1]), sample)[0]
            total += 2 * float(grad.pow(2).sum())
    assert got.item() == pytest.approx(total / 15, rel=1e-9)
    assert got.item() == pytest.approx(25 * trs_terms(models, x, y).smoothness.item(), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Training on the terms reaches every member; the perturbation touches no parameter.


def test_both_terms_train_every_member() -> None:
    models = [mlp(seed) for seed in range(4)]
    x, y = batch(5)
    before = [[p.detach().clone() for p in model.parameters()] for model in models]
    x_tilde = trs_perturbation(models, x, y, eps=0.1)
    for term in ("similarity", "smoothness"):
        for model in models:
            model.zero_grad()
        getattr(trs_terms(models, x, y, x_smooth=x_tilde), term).backward()
        for k, model in enumerate(models):
            assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters()), (term, k)
    optimizer = torch.optim.SGD([p for model in models for p in model.parameters()], lr=0.5)
    optimizer.zero_grad()
    terms = trs_terms(models, x, y, x_smooth=x_tilde)
    (terms.similarity + terms.smoothness).backward()
    optimizer.step()
    for k, model in enumerate(models):
        assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before[k])), k


def bn_member(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))


def test_perturbation_stays_in_the_ball_and_keeps_buffers_and_grads() -> None:
    models = [bn_member(seed) for seed in range(3)]
    x, y = torch.rand(10, 5), torch.randint(0, 3, (10,))
    stats = [model[1].running_mean.clone() for model in models]
    out = trs_perturbation(models, x, y, eps=0.07, clean_fraction=0.3)
    assert out.shape == x.shape and not out.requires_grad
    assert float((out - x).abs().max()) <= 0.07 + 1e-6 and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out[:3], x[:3]) and not torch.equal(out[3:], x[3:])
    assert all(torch.equal(model[1].running_mean, saved) for model, saved in zip(models, stats))
    assert all(p.grad is None for model in models for p in model.parameters())
    trs_perturbation(models, x, y, eps=0.07, update_buffers=True)
    assert all(not torch.equal(model[1].running_mean, saved) for model, saved in zip(models, stats))


def test_perturbation_raises_the_gradient_norm() -> None:
    """The ascent's purpose: the members' summed squared input-gradient norm grows from the clean point."""
    models = [mlp(seed) for seed in range(3)]
    x, y = batch(6, size=32)

    def objective(point: Tensor) -> float:
        total = 0.0
        for model in models:
            inputs = point.clone().requires_grad_(True)
            total += float(torch.autograd.grad(F.cross_entropy(model(inputs), y), inputs)[0].pow(2).sum())
        return total

    moved = trs_perturbation(models, x, y, eps=0.1, clean_fraction=0.0, random_start=False)
    assert objective(moved) > objective(x)


# ---------------------------------------------------------------------------------------------
# Bad input: a ValueError or TypeError naming the argument.


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": float("inf")}, "eps"),
        ({"eps": 0.1, "steps": -1}, "steps"),
        ({"eps": 0.1, "steps": 1.5}, "steps"),
        ({"eps": 0.1, "step_size": -1.0}, "step_size"),
        ({"eps": 0.1, "clean_fraction": 1.5}, "clean_fraction"),
    ],
)
def test_perturbation_names_bad_settings(kwargs: dict[str, float], name: str) -> None:
    models = [mlp(seed) for seed in range(2)]
    x, y = batch(0)
    with pytest.raises(ValueError, match=f"`{name}`"):
        trs_perturbation(models, x, y, **kwargs)


def test_bad_models_and_inputs_are_named() -> None:
    models = [mlp(seed) for seed in range(2)]
    x, y = batch(0)
    with pytest.raises(ValueError, match="`x_smooth`"):
        trs_terms(models, x, y, x_smooth=x[:3])
    with pytest.raises(ValueError, match="`models`"):
        trs_terms(models[:1], x, y)
    with pytest.raises(TypeError, match="`models`"):
        trs_perturbation(models[0], x, y, eps=0.1)
    with pytest.raises(ValueError, match="`models`"):
        trs_perturbation(Ensemble(models[:1]), x, y, eps=0.1)
    with pytest.raises(ValueError, match="`y`"):
        trs_perturbation(models, x, y[:2], eps=0.1)
    with pytest.raises(ValueError, match="`y`"):
        trs_terms(models, x, y[:2])
    with pytest.raises(TypeError, match="`x`"):
        trs_terms(models, x.long(), y)
    with pytest.raises(ValueError, match="`x`"):
        trs_perturbation(models, x * float("nan"), y, eps=0.1)
    with pytest.raises(TypeError, match="`absolute`"):
        trs_terms(models, x, y, absolute=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`per_sample`"):
        trs_terms(models, x, y, per_sample="yes")  # type: ignore[arg-type]


def test_zero_steps_and_all_clean_leave_x() -> None:
    models = [mlp(seed) for seed in range(2)]
    x, y = batch(0)
    assert torch.equal(trs_perturbation(models, x, y, eps=0.1, clean_fraction=1.0), x)
    assert torch.equal(trs_perturbation(models, x, y, eps=0.1, steps=0, random_start=False), x)
