"""Final evaluation on the test split: accuracy and the paper's three diversity measures.

- clean accuracy of the ensemble (members' softmax probabilities averaged);
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

from ensemble_diversity.deg import member_input_gradients
from ensemble_diversity.metrics import (
    ambiguity_entropy,
    discrimination_score,
    gradient_angles,
)

from .data import Split, split_batches
from .members import member_outputs
from .methods import ensemble_correct, member_cross_entropies


class Evaluation(NamedTuple):
    accuracy: float
    ambiguity_entropy: float
    correct: Tensor
    """``[N]`` bool: which test images the ensemble classifies correctly."""
    discrimination: Tensor
    """``[N]``: eq. 6 per image."""
    angles: Tensor
    """``[N]``: mean pairwise gradient angle per image, degrees."""


def evaluate(members: nn.ModuleList, split: Split, batch_size: int) -> Evaluation:
    """All measures of one ensemble on ``split``, ``batch_size`` images at a time (each measure is per image)."""
    members.eval()
    logits, correct, discrimination, angles = [], [], [], []
    for images, labels in split_batches(split, batch_size):
        # One forward serves every measure; the input is a leaf so its gradients can be taken.
        images = images.requires_grad_(True)
        outputs = member_outputs(members, images)
        # Summed over images, each image's gradient is that of its own loss, not scaled down by
        # N towards the norm below which a gradient counts as zero.
        member_losses = member_cross_entropies(outputs.logits, labels, "sum")
        grads = member_input_gradients(member_losses, images, create_graph=False)
        batch_logits = outputs.logits.detach()
        logits.append(batch_logits)
        correct.append(ensemble_correct(batch_logits, labels).cpu())
        discrimination.append(discrimination_score(outputs.features.detach()).cpu())
        angles.append(gradient_angles(grads).cpu())
    correct_all = torch.cat(correct)
    return Evaluation(
        accuracy=correct_all.float().mean().item(),
        ambiguity_entropy=ambiguity_entropy(torch.cat(logits, dim=1), split.labels).item(),
        correct=correct_all,
        discrimination=torch.cat(discrimination),
        angles=torch.cat(angles),
    )


def comparison(evaluations: dict[str, Evaluation]) -> dict[str, Any]:
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
