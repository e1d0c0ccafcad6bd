r"""APGD on a whole ensemble: PGD with momentum and a step size that adapts at checkpoints.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arxiv.org/abs/2003.01690), Algorithm 1; the first attack of
AutoAttack. From :math:`x^{(0)}` (a random point of the ball) with step :math:`\eta^{(0)} = 2\epsilon`:

.. math::
    z^{(k+1)} = P\big(x^{(k)} + \eta^{(k)} d(\nabla \ell(x^{(k)}))\big), \quad
    x^{(k+1)} = P\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)}) + (1 - \alpha)(x^{(k)} - x^{(k-1)})\big)

with momentum :math:`\alpha = 0.75` (1 on the first step), :math:`P` the projection on the ball
and the box and :math:`d` the steepest-ascent direction. At the checkpoints
:math:`w_j = \lceil p_j N \rceil`, :math:`p_0 = 0`, :math:`p_1 = 0.22`,
:math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`, an image's step is halved and its
iterate reset to its best point so far when (1) the loss rose in fewer than
:math:`\rho = 0.75` of the steps since the last checkpoint, or (2) its step was not halved at
the last checkpoint and its best loss has not risen since.

Ours differs from the authors' code (fra31/auto-attack) in small ways: the first checkpoint
applies condition 2 as the paper writes it (the code skips it there), condition 1 counts with
the paper's strict ``<`` (the code's ``<=``), a reset also restarts the momentum, and the random
start is :func:`~ensemble_diversity.attacks.pgd`'s (uniform in the ball; the code's L_inf start
puts one pixel on the sphere). An image counts as broken at the first iterate the ensemble
misclassifies (its own decision), which is kept; the loss is any objective of the members'
logits: the averaged logits' CE (``"apgd-ce"``) or their DLR loss (``"apgd-dlr"``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._ball import Box, Norm, direction, project, random_start
from ._members import Combine, Members, ModelLike
from ._runner import run_attack
from .losses import Loss, averaged_logits_loss

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_1 < w_2 < ... <= steps`` after which APGD may halve the step (the paper's p_j schedule).

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    fractions = [0.0, 0.22]
    while (following := fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06)) <= 1.0:
        fractions.append(following)
    # Rounded first: 0.22 * 100 is 22.000000000000004 in floating point, whose ceiling is 23.
    return sorted({math.ceil(round(p * steps, 9)) for p in fractions[1:]} - {0})


def _gradient(members: Members, x: Tensor, labels: Tensor, loss: Loss) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss [B], gradient [B, ...], correct [B])`` at ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = members(x)
        values = loss(logits, labels)
        (gradient,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), gradient, members.correct(logits.detach(), labels)


def apgd_run(
    members: Members, images: Tensor, labels: Tensor, *, loss: Loss, eps: float, norm: Norm, steps: int, box: Box, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One APGD run on correctly classified ``images`` ``[B, ...]``: ``(adversarial [B, ...], fooled [B] bool)``."""
    adversarial = images.clone()
    fooled_ever = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    x = project(images + random_start(images, eps, norm, generator), images, eps, norm, box)
    value, gradient, correct = _gradient(members, x, labels, loss)
    ones = (len(images),) + (1,) * (images.dim() - 1)
    # Each image's state; a fooled image leaves every tensor of it (its trajectory is its own in eval mode).
    state = {
        "index": torch.arange(len(images), device=images.device),
        "clean": images,
        "labels": labels,
        "x": x,
        "previous": x,
        "gradient": gradient,
        "value": value,
        "best_x": x,
        "best_gradient": gradient,
        "best_value": value,
        "best_at_check": value,
        "step": torch.full(ones, 2.0 * eps, device=images.device, dtype=images.dtype),
        "halved_last": torch.zeros(len(images), dtype=torch.bool, device=images.device),
        "rises": torch.zeros(len(images), device=images.device),
    }
    marks, last_mark = checkpoints(steps), 0

    def keep_unfooled(state: dict[str, Tensor], correct: Tensor) -> dict[str, Tensor]:
        """Record the iterate ``state["x"]`` of every image the ensemble now misclassifies; the others' state."""
        fooled = ~correct
        adversarial[state["index"][fooled]] = state["x"][fooled]
        fooled_ever[state["index"][fooled]] = True
        return {name: tensor[correct] for name, tensor in state.items()}

    state = keep_unfooled(state, correct)
    for k in range(steps):
        if len(state["index"]) == 0:
            break
        clean, x = state["clean"], state["x"]
        alpha = 1.0 if k == 0 else MOMENTUM
        z = project(x + state["step"] * direction(state["gradient"], norm), clean, eps, norm, box)
        following = project(x + alpha * (z - x) + (1 - alpha) * (x - state["previous"]), clean, eps, norm, box)
        value, gradient, correct = _gradient(members, following, state["labels"], loss)
        state["rises"] = state["rises"] + (value > state["value"]).float()
        state["previous"], state["x"], state["gradient"], state["value"] = x, following, gradient, value
        # Judged before a checkpoint may move x back to the best point: the iterate that fooled is kept.
        state = keep_unfooled(state, correct)
        better = state["value"] > state["best_value"]
        wide = better.view(-1, *ones[1:])
        state["best_x"] = torch.where(wide, state["x"], state["best_x"])
        state["best_gradient"] = torch.where(wide, state["gradient"], state["best_gradient"])
        state["best_value"] = torch.where(better, state["value"], state["best_value"])
        if k + 1 in marks:
            oscillating = state["rises"] < RHO * (k + 1 - last_mark)
            stalled = ~state["halved_last"] & (state["best_value"] <= state["best_at_check"])
            halve = oscillating | stalled
            wide = halve.view(-1, *ones[1:])
            state["step"] = torch.where(wide, state["step"] / 2, state["step"])
            for name in ("x", "previous"):  # restart from the best point, without momentum from the abandoned path
                state[name] = torch.where(wide, state["best_x"], state[name])
            state["gradient"] = torch.where(wide, state["best_gradient"], state["gradient"])
            state["value"] = torch.where(halve, state["best_value"], state["value"])
            state["halved_last"], state["best_at_check"] = halve, state["best_value"]
            state["rises"] = torch.zeros_like(state["rises"])
            last_mark = k + 1
    return adversarial, fooled_ever


def apgd(
    model: ModelLike,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    norm: Norm = "inf",
    loss: Loss = averaged_logits_loss,
    steps: int = 100,
    box: Box = (0.0, 1.0),
    generator: torch.Generator | None = None,
    combine: Combine | None = None,
) -> Tensor:
    """One APGD run on the ensemble ``model``: adversarial images ``[B, ...]`` of ``images``.

    Arguments and return as :func:`~ensemble_diversity.attacks.pgd` (no step size: APGD sets
    its own); ``loss`` e.g. :func:`~ensemble_diversity.attacks.dlr_loss` for APGD-DLR.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)) for _ in range(2)]
        >>> images, labels = torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))
        >>> adversarial = apgd(models, images, labels, eps=0.1, steps=10)
        >>> bool((adversarial - images).abs().max() <= 0.1 + 1e-6)
        True
    """

    def run(members: Members, clean: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return apgd_run(members, clean, target, loss=loss, eps=eps, norm=norm, steps=steps, box=box, generator=generator)

    return run_attack(model, images, labels, eps=eps, norm=norm, box=box, steps=steps, combine=combine, run=run)
