r"""A MORA-style attack: PGD on a mix of the ensemble's output and its reweighted members.

In the spirit of MORA (Yu, Gao and Xu, "MORA: Improving Ensemble Robustness Evaluation with
Model-Reweighing Attack", NeurIPS 2022, arxiv.org/abs/2211.08008; code github.com/lafeat/mora), which took ADP, GAL, DVERGE and TRS
ensembles to about 0 % on CIFAR-10 where PGD on the ensemble's output left far more. Each step
climbs the cross-entropy of

.. math::
    m = (1 - s)\,\frac{G}{g} + s\,\frac{\sum_k w_k z_k}{\sigma \sum_k w_k}

with :math:`G` the log averaged probabilities and :math:`g` its top-1 minus top-2 gap (the
ensemble's output at unit margin), :math:`z_k` member k's logits, :math:`\sigma` the largest
member top-1 minus top-2 gap / 10, at least 1 (one overconfident member cannot dominate), and
:math:`w_k = \operatorname{softmax}(\tau z_k)_y` for the members that still predict the label
(breaking the others helps nothing): the members that hold the ensemble's decision up. Where
no member predicts the label (the ensemble is right by the average alone) every member
counts, so the objective never goes flat. Weights and normalisers are constants of the step.

Where ours differs from lafeat/mora: the weight formula (theirs also uses the ensemble's
runner-up class), the step rule (ours is :func:`~ensemble_diversity.attacks.pgd`'s; theirs an
APGD-like momentum with a cosine step schedule), and MORA's final targeted pass is left out
(:func:`~ensemble_diversity.attacks.apgd` with the DLR loss covers a margin attack).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._ball import Box, Norm, project, random_start
from ._members import Combine, Members, ModelLike
from ._pgd import ascend, check_step_size, step_size_of
from ._runner import run_attack
from .losses import log_averaged_probabilities

MORA_SCALES = (0.5, 0.0, 0.25, 0.75, 1.0)
"""The mixing scales of one MORA run, in its order (lafeat/mora, version ``standard-t-pre``): 0 is the ensemble alone, 1 the members alone."""
MORA_TEMPERATURE = 0.2
"""MORA's ``float_dis`` for probability-averaging ensembles: the members' logits are multiplied by it before the softmax of the weights."""


def mora_loss(logits: Tensor, labels: Tensor, *, scale: float, temperature: float = MORA_TEMPERATURE) -> Tensor:
    """``[B]``: cross-entropy of the mix ``m`` above of the members' logits ``[K, B, L]``.

    Where neither member predicts the label but their averaged probabilities do (here class 0:
    0.45 against 0.27 twice), every member counts, and the objective still has a gradient.

    Example:
        >>> logits = torch.tensor([[[2.0, 2.2, -5.0]], [[2.0, -5.0, 2.2]]], requires_grad=True)
        >>> loss = mora_loss(logits, torch.tensor([0]), scale=1.0)
        >>> bool(torch.autograd.grad(loss.sum(), logits)[0].abs().sum() > 0)
        True
    """
    members = logits.shape[0]
    with torch.no_grad():
        top2 = logits.topk(2, dim=-1).values
        spread = ((top2[..., 0] - top2[..., 1]).amax(dim=0) / 10).clamp_min(1.0)  # [B]
        still_right = logits.argmax(dim=-1) == labels  # [K, B]
        # No member right: every member counts (else the weights, and the gradient, would vanish).
        counted = still_right | ~still_right.any(dim=0)
        log_confidence = torch.log_softmax(temperature * logits, dim=-1).gather(-1, labels.expand(members, -1).unsqueeze(-1)).squeeze(-1)
        # w_k / sum_k w_k as a softmax over the members of log w_k: no 0 / 0 where every confidence underflows.
        weights = torch.softmax(log_confidence.masked_fill(~counted, -math.inf), dim=0)  # [K, B]
    ensemble = log_averaged_probabilities(logits)
    with torch.no_grad():
        top2 = ensemble.topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]).clamp_min(1e-3)
    mixed = (1 - scale) * ensemble / gap.unsqueeze(-1) + scale * (weights.unsqueeze(-1) * logits).sum(dim=0) / spread.unsqueeze(-1)
    return F.cross_entropy(mixed, labels, reduction="none")


def mora_runs(
    members: Members, images: Tensor, labels: Tensor, *, eps: float, norm: Norm, steps: int, step_size: float | None, box: Box,
    scales: tuple[float, ...], generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One PGD run per scale, each from its own random start on the images no earlier scale broke: ``(adversarial, fooled)``."""
    adversarial = images.clone()
    fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    size = step_size_of(eps, steps, step_size)
    for scale in scales:
        index = (~fooled).nonzero().squeeze(1)
        if len(index) == 0:
            break
        clean, target = images[index], labels[index]
        start = project(clean + random_start(clean, eps, norm, generator), clean, eps, norm, box)
        loss = functools.partial(mora_loss, scale=scale)
        found, broken = ascend(members, clean, target, start, loss=loss, eps=eps, norm=norm, steps=steps, step_size=size, box=box)
        adversarial[index[broken]] = found[broken]
        fooled[index[broken]] = True
    return adversarial, fooled


def mora(
    model: ModelLike,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    norm: Norm = "inf",
    steps: int = 100,
    step_size: float | None = None,
    scales: tuple[float, ...] = MORA_SCALES,
    box: Box = (0.0, 1.0),
    generator: torch.Generator | None = None,
    combine: Combine | None = None,
) -> Tensor:
    """One MORA-style run on the ensemble ``model``: ``len(scales)`` PGD runs of ``steps`` steps, adversarial images ``[B, ...]``.

    Each scale's run starts afresh on the images the earlier scales failed on. Arguments and
    return as :func:`~ensemble_diversity.attacks.pgd`; ``scales``: the mixing scales in order.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)) for _ in range(2)]
        >>> images, labels = torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))
        >>> mora(models, images, labels, eps=0.1, steps=5).shape
        torch.Size([5, 1, 2, 2])
    """
    check_step_size(step_size)
    if not scales or not all(isinstance(s, (int, float)) and 0.0 <= s <= 1.0 for s in scales):
        raise ValueError(f"Expected argument `scales` to be a non-empty tuple of numbers in [0, 1], but got {scales!r}")

    def run(members: Members, clean: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return mora_runs(members, clean, target, eps=eps, norm=norm, steps=steps, step_size=step_size, box=box, scales=scales, generator=generator)

    return run_attack(model, images, labels, eps=eps, norm=norm, box=box, steps=steps, combine=combine, run=run)
