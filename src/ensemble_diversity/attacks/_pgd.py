r"""PGD on a whole ensemble under L_inf or L_2 (Madry et al. 2018, arxiv.org/abs/1706.06083).

One run starts from a random point of the eps-ball and takes ``steps`` steps of
``2.5 eps / steps`` (Madry et al.'s rule) up the objective, each projected on the ball and the box:

.. math::
    x^{(t+1)} = \Pi_{B_\epsilon(x) \cap [\text{low}, \text{high}]}\big(x^{(t)} + \eta\, d(\nabla_x \ell(z(x^{(t)}), y))\big)

with :math:`d` the gradient's sign under L_inf and its normalised direction under L_2, and
:math:`\ell` an objective of the members' logits :math:`z`: the averaged logits
(``"pgd"`` in :func:`~ensemble_diversity.attacks.evaluate_robustness`) or the log of the averaged
probabilities (``"pgd-probs"``). An image counts as broken at the first iterate the ensemble
misclassifies (its own decision, whatever the objective); that iterate is kept and the image
attacked no further.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._ball import Box, Norm, direction, project, random_start
from ._members import Combine, Members, ModelLike
from ._runner import run_attack
from .losses import Loss, averaged_logits_loss


def check_step_size(step_size: float | None) -> None:
    if step_size is not None and (isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0 < step_size < math.inf):
        raise ValueError(f"Expected argument `step_size` to be a positive finite number or None, but got {step_size!r}")


def step_size_of(eps: float, steps: int, step_size: float | None) -> float:
    """The step: ``2.5 eps / steps`` unless given (Madry et al. 2018: enough to cross the ball and come back)."""
    return 2.5 * eps / steps if step_size is None else float(step_size)


def ascend(
    members: Members, images: Tensor, labels: Tensor, start: Tensor, *, loss: Loss, eps: float, norm: Norm, steps: int, step_size: float, box: Box
) -> tuple[Tensor, Tensor]:
    """One PGD run from ``start`` ``[B, ...]``: ``(adversarial [B, ...], fooled [B] bool)``.

    ``adversarial`` holds the first iterate the ensemble misclassifies, the clean image where
    none does. A fooled image leaves the batch (in eval mode each image's step is its own).
    """
    adversarial = images.clone()
    fooled_ever = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    active = torch.arange(len(images), device=images.device)  # the batch indices still attacked
    x, clean, target = start, images, labels
    for step in range(steps + 1):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = members(x)
            fooled = ~members.correct(logits.detach(), target)
            adversarial[active[fooled]] = x.detach()[fooled]
            fooled_ever[active[fooled]] = True
            if step == steps or bool(fooled.all()):
                break
            (gradient,) = torch.autograd.grad(loss(logits, target).sum(), x)
        keep = ~fooled
        x = project(x.detach()[keep] + step_size * direction(gradient[keep], norm), clean[keep], eps, norm, box)
        clean, target, active = clean[keep], target[keep], active[keep]
    return adversarial, fooled_ever


def pgd(
    model: ModelLike,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    norm: Norm = "inf",
    loss: Loss = averaged_logits_loss,
    steps: int = 100,
    step_size: float | None = None,
    box: Box = (0.0, 1.0),
    generator: torch.Generator | None = None,
    combine: Combine | None = None,
) -> Tensor:
    """One PGD run on the ensemble ``model``: adversarial images ``[B, ...]`` of ``images``.

    Args:
        model: an ``Ensemble``, a list of models, or a function giving the members' logits
            ``[K, B, L]`` (see :func:`~ensemble_diversity.attacks.as_members`); in eval mode
            during the attack, its modules' modes restored afterwards.
        images: ``[B, ...]`` inside ``box``.
        labels: ``[B]`` class indices.
        eps: the radius of the ``norm`` ball.
        loss: the objective ``[K, B, L], [B] -> [B]`` (e.g. :func:`~ensemble_diversity.attacks.averaged_probabilities_loss`).
        steps: gradient steps (``steps + 1`` forwards).
        step_size: default ``2.5 eps / steps``.
        box: the pixel range every image stays in.
        generator: the random start's generator (on the images' device).
        combine: the ensemble's decision, default the ``Ensemble``'s own, else ``"probabilities"``.

    Returns:
        ``[B, ...]``: the first iterate the ensemble misclassifies; the clean image where the
        ensemble was already wrong or no iterate fools it.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)) for _ in range(2)]
        >>> images, labels = torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))
        >>> adversarial = pgd(models, images, labels, eps=0.1, steps=10)
        >>> bool((adversarial - images).abs().max() <= 0.1 + 1e-6)
        True
    """
    check_step_size(step_size)

    def run(members: Members, clean: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        start = project(clean + random_start(clean, eps, norm, generator), clean, eps, norm, box)
        size = step_size_of(eps, steps, step_size)
        return ascend(members, clean, target, start, loss=loss, eps=eps, norm=norm, steps=steps, step_size=size, box=box)

    return run_attack(model, images, labels, eps=eps, norm=norm, box=box, steps=steps, combine=combine, run=run)
