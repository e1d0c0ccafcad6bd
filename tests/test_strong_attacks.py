"""The strong protocol's ART orchestration (``huang2021/evaluation/attacks.py``): every AutoAttack
stage attacks only the images that all earlier ones failed on, APGD-T targets the classes with
the next-highest clean logits, and an image falls when it is misclassified. (The strong
protocol's PGD runs in plain torch: tests/test_ensemble_pgd.py.)

The ART attacks are replaced by a fake that fools the first image it is given, and the
classifier by one whose logits are the image's pixels, so every count is known in advance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("art")

from huang2021.evaluation import attacks
from huang2021.evaluation.attacks import AttackSettings, auto_attack


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
