"""The attacks of ``ensemble_diversity.attacks`` on a small undefended ensemble: their strength
against FGSM and against each other, their bounds, and a gradient-masked copy of the ensemble.

The ensemble: three MLPs trained jointly for a fraction of a second on a synthetic 5-class task
(6x6 "images", a class prototype plus uniform noise, clamped to [0, 1] so that many pixels sit
exactly on the box's edges). FGSM is written here from its definition (Goodfellow et al. 2015),
not taken from the package.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity import Ensemble
from ensemble_diversity.attacks import ATTACKS, apgd, averaged_logits_loss, evaluate_robustness, mora, pgd

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 5
EPS = 0.12
"""Where FGSM leaves about three quarters of the test images."""


def synthetic(count: int, generator: torch.Generator, prototypes: Tensor) -> tuple[Tensor, Tensor]:
    labels = torch.randint(0, len(prototypes), (count,), generator=generator)
    noise = 0.35 * (2 * torch.rand(count, *prototypes.shape[1:], generator=generator) - 1)
    return (prototypes[labels] + noise).clamp(0.0, 1.0), labels


@pytest.fixture(scope="module")
def trained() -> tuple[list[nn.Module], Tensor, Tensor]:
    """Three undefended MLPs in eval mode, and 128 test images with their labels."""
    generator = torch.Generator().manual_seed(0)
    prototypes = 0.3 + 0.4 * (torch.rand(CLASSES, 1, 6, 6, generator=generator) > 0.5).float()
    train_images, train_labels = synthetic(1024, generator, prototypes)
    test_images, test_labels = synthetic(128, generator, prototypes)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        models = [nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, CLASSES)) for _ in range(3)]
    optimiser = torch.optim.Adam([p for m in models for p in m.parameters()], lr=1e-2)
    for _ in range(150):
        batch = torch.randint(0, len(train_labels), (128,), generator=generator)
        loss = sum(F.cross_entropy(m(train_images[batch]), train_labels[batch]) for m in models)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for m in models:
        m.eval()
    return models, test_images, test_labels


def ensemble_correct(models: list[nn.Module], images: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: argmax of the members' averaged softmax is the label (written out, not the package's)."""
    with torch.no_grad():
        probabilities = sum(torch.softmax(m(images), dim=-1) for m in models) / len(models)
    return probabilities.argmax(dim=-1) == labels


def fgsm(models: list[nn.Module], images: Tensor, labels: Tensor, eps: float) -> Tensor:
    x = images.clone().requires_grad_(True)
    mean_logits = sum(m(x) for m in models) / len(models)
    (gradient,) = torch.autograd.grad(F.cross_entropy(mean_logits, labels), x)
    return (images + eps * gradient.sign()).clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def fgsm_robust(trained) -> int:
    models, images, labels = trained
    return int((ensemble_correct(models, images, labels) & ensemble_correct(models, fgsm(models, images, labels, EPS), labels)).sum())


def test_the_task_is_learnt_and_fgsm_breaks_part_of_it(trained, fgsm_robust):
    models, images, labels = trained
    assert ensemble_correct(models, images, labels).float().mean() >= 0.95
    assert 0.4 * len(labels) < fgsm_robust < 0.9 * len(labels)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_breaks_the_undefended_ensemble_at_least_as_much_as_fgsm(trained, fgsm_robust, name):
    models, images, labels = trained
    result = evaluate_robustness(models, images, labels, eps=EPS, attacks=[name], steps=10)
    assert int(result.robust.sum()) <= fgsm_robust


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(trained):
    """Both 20 steps, one run, same loss (the averaged logits' CE), same seed; then both losses of APGD against PGD's."""
    models, images, labels = trained
    robust = {name: int(evaluate_robustness(models, images, labels, eps=EPS, attacks=[name], steps=20).robust.sum()) for name in ATTACKS}
    assert robust["apgd-ce"] <= robust["pgd"], robust
    assert min(robust["apgd-ce"], robust["apgd-dlr"]) <= min(robust["pgd"], robust["pgd-probs"]), robust


@pytest.mark.parametrize("norm, eps", [("inf", EPS), ("2", 0.8)])
@pytest.mark.parametrize("attack", [pgd, mora, apgd])
def test_iterates_stay_in_the_ball_and_the_box_and_box_edge_pixels_move(trained, norm, eps, attack):
    models, images, labels = trained
    adversarial = attack(models, images, labels, eps=eps, norm=norm, steps=10, generator=torch.Generator().manual_seed(0))
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "inf" else delta.norm(dim=1)
    moved = (delta != 0).any(dim=1)
    assert moved.sum() >= 10  # the bound is not met by attacking nothing
    assert (size <= eps * (1 + 1e-5)).all(), size.max()
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    # Pixels on the box's edges: darkening a 0 or brightening a 1 is cut off, the other way is not.
    assert (images == 0).sum() > 100 and (images == 1).sum() > 100
    assert ((images == 0) & (adversarial > 0)).any() and ((images == 1) & (adversarial < 1)).any()
    # Only images the ensemble misclassifies come back changed.
    assert not ensemble_correct(models, adversarial[moved], labels[moved]).any()


def test_an_ensemble_and_its_list_of_models_give_identical_results(trained):
    models, images, labels = trained
    from_list = evaluate_robustness(models, images, labels, eps=[0.06, EPS], steps=5, keep_adversarial=True)
    from_ensemble = evaluate_robustness(Ensemble(models), images, labels, eps=[0.06, EPS], steps=5, keep_adversarial=True)
    assert torch.equal(from_list.broken, from_ensemble.broken) and torch.equal(from_list.adversarial, from_ensemble.adversarial)
    assert from_list.broken.any()


class Saturated(nn.Module):
    """The members' logits times 1e6: every member softmax is one-hot in float32, so CE's gradient is exactly 0."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        return 1e6 * torch.stack([m(x) for m in self.models])


def test_a_gradient_masked_ensemble_is_still_broken_by_the_member_aware_and_dlr_attacks(trained):
    """The saturated members' averaged probabilities are a majority vote: harder to fool than the soft average, not robust.

    The reference is FGSM crafted on the unmasked members (whose gradient the masking hides),
    judged by the masked ensemble: what a gradient-free view of the same models already breaks.
    """
    models, images, labels = trained
    masked = Saturated(models)
    crafted = fgsm(models, images, labels, EPS)
    with torch.no_grad():
        votes = [masked(x).softmax(dim=-1).mean(dim=0).argmax(dim=-1) == labels for x in (images, crafted)]
    transfer_robust = int((votes[0] & votes[1]).sum())
    correct = ensemble_correct(models, images, labels)
    x = images[correct].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(averaged_logits_loss(masked(x), labels[correct]).sum(), x)
    assert (gradient == 0).float().mean() > 0.9  # the masking is real: CE sees (almost) no gradient

    robust = {name: int(evaluate_robustness(masked, images, labels, eps=EPS, attacks=[name], steps=10).robust.sum()) for name in ATTACKS}
    unmasked = int(evaluate_robustness(models, images, labels, eps=EPS, attacks=["pgd"], steps=10).robust.sum())
    assert robust["pgd"] > unmasked + 10, (robust, unmasked)  # CE alone is fooled by the masking
    for name in ("mora", "apgd-dlr"):
        assert robust[name] <= transfer_robust, (name, robust, transfer_robust)
