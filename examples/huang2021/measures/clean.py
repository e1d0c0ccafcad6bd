"""Clean metrics on the test split: the ensemble's accuracy and the paper's three diversity measures.

- clean accuracy of the ensemble (members' softmax probabilities averaged), :func:`ensemble_correct`,
  the one definition every accuracy of the harness counts with (training, validation, test, attacks);
- ambiguity entropy E, eq. 5 (Table 1), over all test images;
- discrimination score L_F, eq. 6 (Fig. 2), on the members' penultimate features;
- mean angle between the members' input gradients of their CE losses (Fig. 3), in degrees.

Fig. 2 and Fig. 3 use the same test images, those that *every* compared ensemble classifies
correctly; :func:`comparison` does the same across the methods of a run, so the methods are
scored on one set of images.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ensemble_diversity import (
    Ensemble,
    ambiguity_entropy,
    discrimination_score,
    ensemble_cross_entropy,
    gradient_angles,
    member_input_gradients,
    member_inputs,
)

from ..data.splits import Split, split_batches


def ensemble_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]`` bool: whether the ensemble, the members' softmax probabilities averaged, predicts ``labels``.

    ``logits``: ``[K, B, L]`` (members, batch, classes). The paper's ensemble, the average that
    ``Ensemble(members)`` returns (``combine="probabilities"``).
    """
    return torch.softmax(logits, dim=-1).mean(dim=0).argmax(dim=-1) == labels


@torch.no_grad()
def correct_on(ensemble: Ensemble, split: Split, batch_size: int) -> Tensor:
    """``[N]`` bool on ``split``'s device: :func:`ensemble_correct` of ``ensemble`` (put in eval mode) on each image of ``split``."""
    ensemble.eval()
    parts = [ensemble_correct(ensemble.member_logits(images), labels) for images, labels in split_batches(split, batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=split.labels.device)


class CleanScores(NamedTuple):
    """What :func:`evaluate` measures of one ensemble on one split."""

    accuracy: float
    ambiguity_entropy: float
    correct: Tensor
    """``[N]`` bool: which test images the ensemble classifies correctly."""
    discrimination: Tensor
    """``[N]``: eq. 6 per image."""
    angles: Tensor
    """``[N]``: mean pairwise gradient angle per image, degrees."""


def evaluate(members: nn.ModuleList, split: Split, batch_size: int | None = None) -> CleanScores:
    """All measures of one ensemble on ``split``, ``batch_size`` images at a time (default: all at once).

    In eval mode every image's outputs and gradients are its own, so the chunking changes no
    number beyond float rounding; it only bounds memory on large test sets.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"Expected argument `batch_size` to be None or >= 1, but got {batch_size}")
    ensemble = Ensemble(members).eval()
    chunks = [
        _evaluate_chunk(ensemble, images, labels)
        for images, labels in split_batches(split, batch_size or max(len(split.labels), 1))
    ]
    logits = torch.cat([chunk[0] for chunk in chunks], dim=1)
    correct = ensemble_correct(logits, split.labels)
    return CleanScores(
        accuracy=correct.float().mean().item(),
        ambiguity_entropy=ambiguity_entropy(logits, split.labels).item(),
        correct=correct.cpu(),
        discrimination=torch.cat([chunk[1] for chunk in chunks]),
        angles=torch.cat([chunk[2] for chunk in chunks]),
    )


def _evaluate_chunk(ensemble: Ensemble, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Logits ``[K, B, L]`` (detached), and eq. 6 and the gradient angle ``[B]`` (on the CPU) of one chunk."""
    # One forward serves every measure; one input per member so one backward pass gives
    # every member's input gradient.
    images = member_inputs(images, ensemble.num_members)
    outputs = ensemble.member_outputs(images, per_member=True)
    # Times the batch size (a sum over images), each image's gradient is that of its own loss,
    # not scaled down by N towards the norm below which a gradient counts as zero.
    member_losses = ensemble_cross_entropy(outputs.logits, labels, member_reduction="none") * len(labels)
    grads = member_input_gradients(member_losses, images, create_graph=False, per_member=True)
    return (
        outputs.logits.detach(),
        discrimination_score(outputs.features.detach()).cpu(),
        gradient_angles(grads).cpu(),
    )


def comparison(evaluations: dict[str, CleanScores]) -> dict[str, Any]:
    """The comparison table (JSON-ready): per method, accuracy and E on all test images, L_F
    and the gradient angle averaged over the images every method classifies correctly."""
    shared = torch.stack([evaluation.correct for evaluation in evaluations.values()]).all(dim=0)
    table = {
        name: {
            "test_accuracy": evaluation.accuracy,
            "ambiguity_entropy": evaluation.ambiguity_entropy,
            "discrimination_score": evaluation.discrimination[shared].mean().item(),
            "gradient_angle_degrees": evaluation.angles[shared].mean().item(),
        }
        for name, evaluation in evaluations.items()
    }
    return {"test_images": len(shared), "images_correct_for_all_methods": int(shared.sum()), "methods": table}
