"""The strong protocol's ART orchestration (``huang2021/evaluation/attacks.py``): every AutoAttack
stage attacks only the images that all earlier ones failed on, APGD-T targets the classes with
the next-highest clean logits, and an image falls when it is misclassified. (The strong
protocol's PGD runs in plain torch: tests/test_ensemble_pgd.py.)

The ART attacks are replaced by a fake that fools the first image it is given, and the
classifier by one whose logits are the image's pixels, so every count is known in advance.
Which images are robust is the ensemble's decision, by its averaged probabilities: members
whose averaged logits and averaged probabilities disagree (the worked example below) show it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("art")

from huang2021.evaluation import attacks
from huang2021.evaluation.attacks import AttackSettings, auto_attack, craft, ensemble_classifier

from ensemble_diversity import Ensemble

CPU = torch.device("cpu")
SCALE = 20.0
"""A member's logits are its row of pixels times this."""
# Members' logits [0, 20, 0], [5, 0, 0], [5, 0, 0], label 0: the averaged logits [3.3, 6.7, 0]
# say class 1, the averaged probabilities [0.658, 0.338, 0.004] class 0 (the ensemble's decision).
SPLIT = np.array([[0, 20, 0], [5, 0, 0], [5, 0, 0]], dtype=np.float32) / SCALE
# Both agree on class 0.
AGREED = np.array([[5, 0, 0], [5, 0, 0], [5, 0, 0]], dtype=np.float32) / SCALE


class PixelLogits:
    """A classifier whose logits ``[B, L]`` are the images ``[B, 1, 1, L]`` themselves."""

    def predict(self, x: np.ndarray, batch_size: int = 1) -> np.ndarray:
        return x.reshape(len(x), -1)


class FoolsFirst:
    """An attack that swaps the two highest logits of the first image it gets; records each call."""

    calls: list[dict[str, Any]] = []

    def __init__(self, classifier: Any, **params: Any) -> None:
        self.params = params

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        FoolsFirst.calls.append({"kind": self.kind, **self.params, "images": x.copy(), "y": np.asarray(y).copy()})
        out = x.copy()
        logits = out[0].reshape(-1)
        top, second = np.argsort(-logits)[:2]
        logits[top], logits[second] = logits[second], logits[top]
        out[0] = logits.reshape(out[0].shape)
        return out


def _fake(kind: str) -> type:
    return type(kind, (FoolsFirst,), {"kind": kind})


@pytest.fixture
def fake_attacks(monkeypatch):
    FoolsFirst.calls = []
    for name in ("ProjectedGradientDescent", "AutoProjectedGradientDescent", "SquareAttack"):
        monkeypatch.setattr(attacks, name, _fake(name))
    return FoolsFirst.calls


def _images(batch: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct logits per image as ``[B, 1, 1, L]`` pixels, and their argmax as the labels."""
    rng = np.random.default_rng(seed)
    logits = rng.permutation(classes * batch).reshape(batch, classes).astype(np.float32)
    return logits.reshape(batch, 1, 1, classes), logits.argmax(1)


def test_autoattack_stops_when_every_image_is_broken(fake_attacks):
    images, labels = _images(2, 4)
    auto_attack(PixelLogits(), images, labels, 0.1, AttackSettings(autoattack_targets=3))
    assert [len(call["images"]) for call in fake_attacks] == [2, 1]


def test_images_misclassified_before_the_attack_are_not_attacked(fake_attacks):
    images, labels = _images(6, 4)
    wrong = labels.copy()
    wrong[:2] = (labels[:2] + 1) % 4
    adversarial = auto_attack(PixelLogits(), images, wrong, 0.1, AttackSettings(autoattack_targets=1))
    np.testing.assert_array_equal(fake_attacks[0]["images"], images[2:])
    np.testing.assert_array_equal(adversarial[:2], images[:2])


@pytest.mark.parametrize("targets, classes", [(9, 10), (3, 10), (9, 4)])
def test_autoattack_runs_apgd_ce_then_apgd_t_at_the_next_highest_logits_then_square(fake_attacks, targets, classes):
    batch = 12
    images, labels = _images(batch, classes)
    settings = AttackSettings(autoattack_targets=targets, square_queries=7, strong_steps=11)
    adversarial = auto_attack(PixelLogits(), images, labels, 0.1, settings)

    passes = min(targets, classes - 1)
    kinds = [(call["kind"], call.get("loss_type"), call.get("targeted", False)) for call in fake_attacks]
    assert kinds == [("AutoProjectedGradientDescent", "cross_entropy", False)] + [
        ("AutoProjectedGradientDescent", "difference_logits_ratio", True)
    ] * passes + [("SquareAttack", None, False)]
    assert [len(call["images"]) for call in fake_attacks] == list(range(batch, batch - passes - 2, -1))
    assert fake_attacks[0]["max_iter"] == 11 and fake_attacks[-1]["max_iter"] == 7

    ranked = np.argsort(-images.reshape(batch, -1), axis=1)
    for rank, call in enumerate(fake_attacks[1:-1], start=1):
        survivors = np.arange(rank, batch)
        np.testing.assert_array_equal(call["y"], ranked[survivors, rank])
        assert not np.any(call["y"] == labels[survivors])
    np.testing.assert_array_equal(fake_attacks[0]["y"], labels)
    np.testing.assert_array_equal(fake_attacks[-1]["y"], labels[passes + 1 :])
    fooled = adversarial.reshape(batch, -1).argmax(1) != labels
    assert fooled.sum() == passes + 2


def test_a_targeted_pass_counts_any_misclassification_not_only_the_target(fake_attacks):
    """The fake swaps the top two logits, landing on the second class whatever the target was."""
    images, labels = _images(5, 10)
    auto_attack(PixelLogits(), images, labels, 0.1, AttackSettings(autoattack_targets=3))
    # A pass that lands off its target (rank 2 and 3 targets) still removes its image.
    assert [len(call["images"]) for call in fake_attacks] == [5, 4, 3, 2, 1]


class PixelRow(nn.Module):
    """Member ``k`` of an ensemble of images ``[B, 1, K, L]``: logits ``SCALE`` times row ``k`` (its head is the scaling)."""

    def __init__(self, k: int, classes: int) -> None:
        super().__init__()
        self.k = k
        self.head = nn.Linear(classes, classes, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(SCALE * torch.eye(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0, self.k, :])


def _pixel_rows(members: int = 3, classes: int = 3) -> nn.ModuleList:
    return nn.ModuleList(PixelRow(k, classes) for k in range(members))


def test_the_worked_example_splits_the_two_decisions():
    """The fixture's premise, by hand: the averaged logits and the averaged probabilities pick different classes."""
    logits = SCALE * SPLIT
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert logits.mean(axis=0).argmax() == 1 and probabilities.mean(axis=0).argmax() == 0
    np.testing.assert_allclose(probabilities.mean(axis=0), [0.658, 0.338, 0.004], atol=5e-4)
    with torch.no_grad():
        ensemble_output = Ensemble(_pixel_rows()).eval()(torch.from_numpy(SPLIT)[None, None])
    np.testing.assert_allclose(ensemble_output[0].numpy(), probabilities.mean(axis=0), atol=1e-6)


def test_the_autoattack_classifier_decides_by_the_averaged_probabilities():
    classifier = ensemble_classifier(_pixel_rows(), "log-probabilities", (1, 3, 3), CPU)
    outputs = classifier.predict(np.stack([SPLIT, AGREED])[:, None])
    assert list(outputs.argmax(1)) == [0, 0]
    # Its softmax is the averaged probabilities: the ensemble's logits.
    np.testing.assert_allclose(np.exp(outputs[0]), [0.658, 0.338, 0.004], atol=5e-4)


class ToSplit(FoolsFirst):
    """An attack whose every candidate is the worked example: it fools the averaged logits, not the ensemble."""

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        FoolsFirst.calls.append({"kind": self.kind, **self.params, "images": x.copy(), "y": np.asarray(y).copy()})
        return np.broadcast_to(SPLIT, x.shape).copy()


def test_autoattack_judges_images_by_the_ensembles_decision(monkeypatch):
    """An image only the averaged logits misclassify is attacked; a candidate that fools only them breaks nothing.

    Image 0 is the worked example (the ensemble is right), image 1 has members that all agree;
    every stage's candidate is the worked example, so no stage breaks either image, and every
    stage (APGD-CE, 2 APGD-T, Square) attacks both.
    """
    FoolsFirst.calls = []
    for name in ("AutoProjectedGradientDescent", "SquareAttack"):
        monkeypatch.setattr(attacks, name, type(name, (ToSplit,), {"kind": name}))
    images = np.stack([SPLIT, AGREED])[:, None]
    adversarial = craft("autoattack", 0.1, _pixel_rows(), images, np.array([0, 0]), AttackSettings(autoattack_targets=2), device=CPU)
    assert [len(call["images"]) for call in FoolsFirst.calls] == [2, 2, 2, 2]
    np.testing.assert_array_equal(adversarial, images)


def test_art_apgd_attacks_an_image_only_the_averaged_logits_misclassify():
    """With the real APGD-CE: the worked example is correct for the ensemble and breakable at eps 0.3
    (row 1's class-1 pixel up, the class-0 pixels down), so AutoAttack must return an image the ensemble misclassifies.
    On the averaged logits ART would skip it as already misclassified and return it unchanged."""
    members = _pixel_rows()
    images = SPLIT[None, None].copy()
    np.random.seed(0)
    adversarial = craft("autoattack", 0.3, members, images, np.array([0]), AttackSettings(strong_steps=20, autoattack_targets=1, square_queries=5), device=CPU)
    assert np.abs(adversarial - images).max() <= 0.3 + 1e-6
    with torch.no_grad():
        decided = Ensemble(members).eval()(torch.from_numpy(adversarial)).argmax(1)
    assert decided.item() != 0
