"""The advt-* methods' inner loop, ``huang2021/training/adversarial.py``: FGSM / PGD examples of the
ensemble stay in the eps-ball and in [0, 1], raise the ensemble's loss, touch no parameter or
buffer, and draw their randomness from the global torch RNG."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from huang2021.data.splits import digits_splits
from huang2021.members import build_members
from huang2021.training.adversarial import craft_adversarial, ensemble_cross_entropy_of_average
from huang2021.training.config import AdversarialTraining, Weights
from huang2021.training.distributed import EnsembleForward
from huang2021.training.methods import METHODS
from huang2021.training.objective import training_objective
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout, ensemble_cross_entropy

WEIGHTS = Weights(ce_reduction="mean")
DEFAULT = AdversarialTraining()


def small_setup(seed: int = 0, batch: int = 16, pdd: PriorityDiversifiedDropout | None = None):
    """A fixed, untrained 3-member ensemble (with ``pdd``) and a batch of 8x8 images with exact 0s and 1s."""
    torch.manual_seed(seed)
    ensemble = Ensemble(build_members(3, 8, 10), pdd=pdd)
    images = torch.rand(batch, 1, 8, 8)
    images[:, :, :2] = 0.0
    images[:, :, -2:] = 1.0
    labels = torch.randint(0, 10, (batch,))
    return ensemble, images, labels


def test_cross_entropy_of_the_average_matches_the_formula():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5, 10), torch.randint(0, 10, (5,))
    mean_probabilities = logits.softmax(-1).mean(0)
    expected = -mean_probabilities[torch.arange(5), labels].log().mean()
    torch.testing.assert_close(ensemble_cross_entropy_of_average(logits, labels), expected)
    # a member with a vanishing probability does not make the loss infinite
    logits[0, :, :] = -1e4
    assert torch.isfinite(ensemble_cross_entropy_of_average(logits, labels))


@settings(max_examples=20, deadline=None)
@given(
    attack=st.sampled_from(["fgsm", "pgd"]),
    low=st.floats(0.0, 0.3),
    spread=st.floats(0.0, 0.2),
    random_start=st.booleans(),
    craft_mode=st.sampled_from(["train", "eval"]),
)
def test_examples_stay_within_eps_and_in_the_unit_box(attack, low, spread, random_start, craft_mode):
    ensemble, images, labels = small_setup()
    adversarial = replace(DEFAULT, eps=(low, low + spread), steps=3, random_start=random_start, craft_mode=craft_mode)
    crafted = craft_adversarial(attack, ensemble, images, labels, adversarial)
    assert crafted.shape == images.shape and not crafted.requires_grad
    assert (crafted - images).abs().max() <= low + spread + 1e-6
    assert crafted.min() >= 0.0 and crafted.max() <= 1.0


@pytest.fixture(scope="module")
def fitted():
    """A small ensemble fitted for 60 SGD steps on digits (eval mode), and 64 test images."""
    splits = digits_splits(0, torch.device("cpu"))
    torch.manual_seed(0)
    ensemble = Ensemble(build_members(3, 16, 10))
    optimizer = torch.optim.SGD(ensemble.parameters(), lr=0.1, momentum=0.9)
    images, labels = splits.train
    for step in range(60):
        batch = torch.arange(step * 32, step * 32 + 32) % len(labels)
        loss = ensemble_cross_entropy(ensemble.member_logits(images[batch]), labels[batch], member_reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ensemble.eval(), splits.test.images[:64], splits.test.labels[:64]


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("labels_used", ["true", "predicted"])
def test_attacks_raise_the_ensemble_loss_more_than_random_noise(fitted, attack, labels_used):
    ensemble, images, labels = fitted
    eps = 0.05
    adversarial = replace(DEFAULT, eps=(eps, eps), labels=labels_used, craft_mode="eval")
    crafted = craft_adversarial(attack, ensemble, images, labels, adversarial)
    noisy = (images + eps * torch.randn_like(images).sign()).clamp(0.0, 1.0)
    with torch.no_grad():
        targets = labels if labels_used == "true" else ensemble(images).argmax(-1)
        clean, attacked, noise = (
            ensemble_cross_entropy_of_average(ensemble.member_logits(x), targets) for x in (images, crafted, noisy)
        )
    # a do-nothing attack (crafted == images) gives attacked == clean
    assert attacked > 1.2 * clean and attacked > noise, (clean.item(), attacked.item(), noise.item())


def test_crafting_touches_no_parameter_gradient_buffer_or_mode():
    ensemble, images, labels = small_setup(pdd=PriorityDiversifiedDropout(3, 10))
    ensemble.train()
    buffers = [buffer.clone() for buffer in ensemble.buffers()]
    assert any(name == "pdd.priority_counts" for name, _ in ensemble.named_buffers())
    crafted = craft_adversarial("pgd", ensemble, images, labels, replace(DEFAULT, steps=2))
    assert not torch.equal(crafted, images)
    assert all(parameter.grad is None for parameter in ensemble.parameters())
    assert all(torch.equal(a, b) for a, b in zip(buffers, ensemble.buffers(), strict=True))
    assert all(module.training for module in ensemble.modules())
    ensemble.eval()
    craft_adversarial("fgsm", ensemble, images, labels, DEFAULT)
    assert not any(module.training for module in ensemble.modules())


def test_randomness_comes_from_the_global_torch_rng():
    ensemble, images, labels = small_setup()
    adversarial = replace(DEFAULT, steps=2)
    torch.manual_seed(7)
    first = craft_adversarial("pgd", ensemble, images, labels, adversarial)
    torch.manual_seed(7)
    again = craft_adversarial("pgd", ensemble, images, labels, adversarial)
    other = craft_adversarial("pgd", ensemble, images, labels, adversarial)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_adversarial_objective_mixes_clean_and_adversarial_losses():
    ensemble, images, labels = small_setup()
    method = METHODS["advt-fgsm"]
    adversarial = replace(DEFAULT, eps=(0.1, 0.1), labels="true", craft_mode="eval")
    ensemble.eval()  # deterministic forward passes, so the parts can be recomputed
    torch.manual_seed(1)
    model = EnsembleForward(ensemble)
    mixed = training_objective(method, model, images, labels, WEIGHTS, adversarial)
    only_adversarial = training_objective(method, model, images, labels, WEIGHTS, replace(adversarial, weight=1.0))
    clean = training_objective(METHODS["baseline"], model, images, labels, WEIGHTS)
    assert math.isclose(mixed.loss.item(), 0.5 * clean.loss.item() + 0.5 * only_adversarial.loss.item(), rel_tol=1e-5)
    assert only_adversarial.loss > clean.loss
    torch.testing.assert_close(mixed.logits, clean.logits)


def test_an_attack_without_settings_is_refused():
    ensemble, images, labels = small_setup()
    with pytest.raises(ValueError, match="adversarial"):
        training_objective(METHODS["advt-pgd"], EnsembleForward(ensemble), images, labels, WEIGHTS)
