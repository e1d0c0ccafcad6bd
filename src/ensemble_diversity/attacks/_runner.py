"""What every public attack does around its iterations: check the input, put the members in eval
mode, attack only the images the ensemble classifies correctly, return the rest unchanged."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._ball import Box, Norm, check_box, check_eps, check_images, check_norm, check_positive_int
from ._members import Combine, Members, ModelLike, as_members

Run = Callable[[Members, Tensor, Tensor], tuple[Tensor, Tensor]]
"""One run on correctly classified images ``[B, ...]`` and labels ``[B]``: ``(adversarial [B, ...], fooled [B] bool)``."""


def check_settings(images: Tensor, eps: float, norm: Norm, box: Box, steps: int) -> None:
    """Raise on a bad norm, box, eps, step count, or images outside the box."""
    check_norm(norm)
    check_box(box)
    check_images(images, box)
    check_eps(eps, norm, box, images[0].numel())
    check_positive_int(steps, "steps")


def run_attack(
    model: ModelLike, images: Tensor, labels: Tensor, *, eps: float, norm: Norm, box: Box, steps: int, combine: Combine | None, run: Run
) -> Tensor:
    """``[B, ...]``: ``run``'s adversarial images where the ensemble was right, the clean image where it was already wrong."""
    check_settings(images, eps, norm, box, steps)
    members = as_members(model, combine=combine)
    with members.evaluating():
        with torch.no_grad():
            right = members.correct(members.check(images, labels), labels)
        adversarial = images.detach().clone()
        index = right.nonzero().squeeze(1)
        if len(index) and eps > 0:
            adversarial[index] = run(members, images[index].detach(), labels[index])[0]
    return adversarial
