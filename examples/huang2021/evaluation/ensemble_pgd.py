"""PGD on a whole ensemble in plain torch (L_inf or L_2), for the main command and the strong protocol.

The attacked decision is the paper's ensemble: the members' **averaged probabilities**
(:func:`~huang2021.evaluation.clean.ensemble_correct`). What the attack climbs is its
*objective*, a per-image loss of the members' logits ``[K, B, L]``:

- ``"logits"``: cross-entropy of the averaged logits (the strong protocol's PGD since Madry et
  al. 2018 on one model; on an ensemble its gradient is not shrunk by a saturated softmax);
- ``"log-probabilities"``: cross-entropy of the log of the averaged probabilities, the loss of
  exactly what the ensemble decides on;
- ``"mora"``: a mix of the ensemble's output and its members' logits, reweighted each step
  towards the members that still hold the label (:func:`mora_loss`, in the spirit of MORA,
  Yu, Gao and Xu, NeurIPS 2022), one run per mixing scale.

Each run starts from a random point of the eps-ball (Madry et al. 2018) and takes ``steps``
steps of ``2.5 eps / steps`` (along the gradient's sign under L_inf, its direction under L_2),
projected on the ball and on [0, 1]; an image
counts as broken at the first iterate the ensemble misclassifies (that iterate is kept), and a
restart attacks only the images no earlier run broke. No ART: the main command needs only
torch, and ART cannot express a per-member objective.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity import Ensemble

from ..data.splits import Split, split_batches
from .clean import correct_on, ensemble_correct

Objective = Literal["logits", "log-probabilities", "mora"]
OBJECTIVES: tuple[Objective, ...] = ("logits", "log-probabilities", "mora")
Loss = Callable[[Tensor, Tensor], Tensor]
"""A per-image loss ``[B]`` of the members' logits ``[K, B, L]`` and the labels ``[B]``, which the attack climbs."""

MORA_SCALES = (0.5, 0.0, 0.25, 0.75, 1.0)
"""The mixing scales of MORA's runs, in its order (lafeat/mora, version ``standard-t-pre``): 0 is the ensemble alone, 1 the members alone."""
MORA_TEMPERATURE = 0.2
"""MORA's ``float_dis`` for probability-averaging ensembles: the members' logits are multiplied by it before the softmax of the weights."""


def averaged_logits_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: cross-entropy of the members' averaged logits (``logits`` ``[K, B, L]``)."""
    return F.cross_entropy(logits.mean(dim=0), labels, reduction="none")


def log_averaged_probabilities(logits: Tensor) -> Tensor:
    """``[B, L]``: the log of the members' averaged softmax, as a log-sum-exp so it stays finite where a probability underflows."""
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def averaged_probabilities_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: -log of the averaged probability of the label: the loss of exactly what the ensemble decides on."""
    return F.nll_loss(log_averaged_probabilities(logits), labels, reduction="none")


def mora_loss(logits: Tensor, labels: Tensor, *, scale: float, temperature: float = MORA_TEMPERATURE) -> Tensor:
    """``[B]``: cross-entropy of MORA's mix of the ensemble's output and its reweighted members (Yu, Gao and Xu, NeurIPS 2022).

    The mixed "logits" are ``(1 - scale) * G / g + scale * sum_k w_k z_k / s / sum_k w_k``: ``G``
    the log averaged probabilities and ``g`` its top-1 minus top-2 gap (the ensemble's output at
    unit margin); ``z_k`` member k's logits and ``s`` the largest member gap / 10, at least 1 (so
    one overconfident member cannot dominate); the weights ``w_k`` count only the members that
    still predict the label (breaking the others helps nothing) and favour those most sure of it,
    ``softmax(temperature * z_k)[label]``: the members that hold the ensemble's decision up.
    Where no member predicts the label (the averaged probabilities can still pick it: members'
    logits [2, 2.5, 0] and [2, 0, 2.5], label 0), every member is weighted so, rather than none,
    which would leave the constant loss log L and no gradient at scale 1. The
    weights and both normalisers are constants of the step (detached), as in MORA's code. Ours
    differs from lafeat/mora in the weight formula (theirs also involves the runner-up class) and
    the step rule (:func:`ensemble_pgd`'s, not their momentum with a cosine step schedule).
    """
    members = logits.shape[0]
    with torch.no_grad():
        top2 = logits.topk(2, dim=-1).values
        spread = ((top2[..., 0] - top2[..., 1]).amax(dim=0) / 10).clamp_min(1.0)  # [B]
        still_right = logits.argmax(dim=-1) == labels  # [K, B]
        confidence = torch.softmax(temperature * logits, dim=-1).gather(-1, labels.expand(members, -1).unsqueeze(-1)).squeeze(-1)
        weights = torch.where(still_right.any(dim=0), confidence * still_right, confidence)
        weights = weights / (weights.sum(dim=0) + 1e-8)
    ensemble = log_averaged_probabilities(logits)
    with torch.no_grad():
        top2 = ensemble.topk(2, dim=-1).values
        gap = (top2[:, 0] - top2[:, 1]).clamp_min(1e-3)
    mixed = (1 - scale) * ensemble / gap.unsqueeze(-1) + scale * (weights.unsqueeze(-1) * logits).sum(dim=0) / spread.unsqueeze(-1)
    return F.cross_entropy(mixed, labels, reduction="none")


def attack_losses(objective: Objective, restarts: int) -> list[Loss]:
    """The loss of each run of an attack: ``restarts`` runs of the objective's loss; MORA's one run per scale of :data:`MORA_SCALES`."""
    if objective == "logits":
        return [averaged_logits_loss] * restarts
    if objective == "log-probabilities":
        return [averaged_probabilities_loss] * restarts
    if objective == "mora":
        return [functools.partial(mora_loss, scale=scale) for scale in MORA_SCALES]
    raise ValueError(f"Expected objective to be one of {list(OBJECTIVES)}, but got {objective!r}")


def ensemble_pgd(
    members: nn.ModuleList,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    steps: int,
    losses: list[Loss],
    norm: Literal["inf", "2"] = "inf",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial versions ``[B, C, H, W]`` of ``images`` (in [0, 1]) against the ensemble of ``members`` (eval mode).

    One run per loss of ``losses`` (:func:`attack_losses`), each from a new random start on the
    images no earlier run broke. ``labels`` ``[B]``: the true labels. ``norm``: the ball of
    radius ``eps`` (under L_2 the step follows the normalised gradient, not its sign). An image
    the ensemble already misclassifies is returned unchanged; so is one no run breaks.
    """
    if steps < 1 or not losses:
        raise ValueError(f"Expected steps >= 1 and at least one loss, but got steps={steps} and {len(losses)} losses")
    if norm not in ("inf", "2"):
        raise ValueError(f"Expected norm to be 'inf' or '2', but got {norm!r}")
    ensemble = Ensemble(members).eval()
    step_size = 2.5 * eps / steps
    adversarial = images.detach().clone()
    with torch.no_grad():
        robust = ensemble_correct(ensemble.member_logits(images), labels)
    for loss_of in losses:
        active = robust.nonzero().squeeze(1)  # indices into the batch of the images this run still attacks
        if len(active) == 0:
            break
        clean, target = images[active].detach(), labels[active]
        x = (clean + _random_start(clean, eps, norm, generator)).clamp(0.0, 1.0)
        for step in range(steps + 1):
            x.requires_grad_(True)
            logits = ensemble.member_logits(x)
            fooled = ~ensemble_correct(logits.detach(), target)
            adversarial[active[fooled]] = x.detach()[fooled]
            robust[active[fooled]] = False
            if step == steps or bool(fooled.all()):
                break
            (gradient,) = torch.autograd.grad(loss_of(logits, target).sum(), x)
            x = (clean + _project(x.detach() + step_size * _direction(gradient, norm) - clean, eps, norm)).clamp(0.0, 1.0)
            # A broken image is kept as it is; the rest go on alone (each image's step is its own in eval mode).
            x, clean, target, active = x[~fooled], clean[~fooled], target[~fooled], active[~fooled]
    return adversarial


def _per_image_norm(tensor: Tensor) -> Tensor:
    """``[B, 1, ..., 1]``: the L_2 norm of each image of ``tensor`` ``[B, ...]``, shaped to broadcast."""
    return tensor.flatten(1).norm(dim=1).view(-1, *[1] * (tensor.dim() - 1))


def _random_start(clean: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniform point of the L_inf ball; under L_2 a random direction at a uniform radius in [0, eps]."""
    if norm == "inf":
        return eps * (2 * torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype) - 1)
    direction = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    radius = eps * torch.rand((len(clean),) + (1,) * (clean.dim() - 1), generator=generator, device=clean.device, dtype=clean.dtype)
    return radius * direction / _per_image_norm(direction).clamp_min(1e-12)


def _direction(gradient: Tensor, norm: str) -> Tensor:
    """The steepest-ascent direction of unit size under ``norm``."""
    return gradient.sign() if norm == "inf" else gradient / _per_image_norm(gradient).clamp_min(1e-12)


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """``delta`` moved into the ``norm`` ball of radius ``eps``."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_image_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def robust_correct(
    members: nn.ModuleList,
    split: Split,
    eps: float,
    *,
    steps: int,
    restarts: int = 1,
    objective: Objective = "logits",
    batch_size: int = 500,
    seed: int = 0,
) -> Tensor:
    """``[N]`` bool on the CPU: the ensemble classifies image n correctly before and after :func:`ensemble_pgd`.

    Correct after the attack implies correct before it: :func:`ensemble_pgd` returns a
    misclassified image unchanged and an unbroken one as its clean image.
    """
    generator = torch.Generator(device=split.images.device).manual_seed(seed)
    losses = attack_losses(objective, restarts)
    parts = [ensemble_pgd(members, images, labels, eps, steps=steps, losses=losses, generator=generator) for images, labels in split_batches(split, batch_size)]
    adversarial = torch.cat(parts) if parts else split.images[:0]
    return correct_on(Ensemble(members), Split(adversarial, split.labels), batch_size).cpu()
