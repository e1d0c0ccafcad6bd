"""A method's training objective on one batch: eq. 1 plus its regulariser, on clean and (AdvT) adversarial inputs.

One forward per input through the training model (``EnsembleForward``, the module DDP wraps
under ``torchrun``): the K members' features, PDD between them and the heads for the PDD
methods (the library's ``Ensemble.member_outputs``), and the K heads. Each member's CE is
computed once: eq. 1 reduces them over the members and DEG (eqs. 3-4) or GAL differentiates
each with respect to the member's own input. With ``--deg-fraction F`` < 1 the penalised
images (the batch's first ``ceil(F * B)``) and the rest take one forward each, as in the
library's ``deg_penalty(..., penalty_fraction=F)``.

The peers (``trs``, ``dverge``) have objectives of their own, built from the library's public
functions on the ``Ensemble`` itself (:func:`peer_objective`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ensemble_diversity import (
    Ensemble,
    adp_regularizer,
    dispersed_gradient_loss,
    dverge_loss,
    ensemble_cross_entropy,
    feature_distillation,
    gradient_alignment_loss,
    member_input_gradients,
    member_inputs,
    trs_perturbation,
    trs_terms,
)

from .adversarial import craft_adversarial
from .config import AdversarialTraining, PeerSettings, Weights
from .distributed import EnsembleForward
from .methods import Method


class Objective(NamedTuple):
    loss: Tensor
    """Scalar to minimise: eq. 1 plus the method's regulariser (eq. 4 for DEG), mixed over clean and adversarial inputs for AdvT."""
    penalty: Tensor
    """Scalar, detached: eq. 3's L_g before lambda for DEG (GAL's for gal), ADP's regulariser for adp, 0 otherwise."""
    logits: Tensor
    """``[K, B, L]``, detached: the members' training-mode logits on the clean images (adversarial ones when AdvT weighs clean by 0)."""


class PeerStep(NamedTuple):
    """What a peer method's objective needs beyond the batch: its settings and this epoch's choices."""

    settings: PeerSettings
    trs_eps: float
    """This epoch's radius of TRS's smoothing PGD (the official linear ramp)."""
    dverge_layer: str | None
    """This epoch's distillation layer: a submodule path of the members, or None for the head's input."""


def training_objective(
    method: Method,
    model: EnsembleForward | DistributedDataParallel,
    images: Tensor,
    labels: Tensor,
    weights: Weights,
    adversarial: AdversarialTraining | None = None,
    *,
    with_penalty: bool = True,
    peer: PeerStep | None = None,
) -> Objective:
    """The method's loss on one batch ``images [B, C, H, W]``, ``labels [B]``; the ensemble in training mode.

    ``model``: ``EnsembleForward(Ensemble(members, pdd=pdd))``, with PDD for the PDD methods
    (and only for them), wrapped in DistributedDataParallel under ``torchrun``.
    With an attack (``advt-*``), ``adversarial`` says how to craft the batch's adversarial
    examples and the loss is ``(1 - w) * objective(clean) + w * objective(adversarial)``.
    ``with_penalty=False`` leaves out the input-gradient penalty (DEG, GAL) on this batch, the
    cheaper setting ``--deg-every N`` that pays for double backprop on every N-th step only.
    ``weights.deg_fraction`` < 1 (``--deg-fraction F``) computes it on the batch's first
    ``ceil(F * B)`` images only (:func:`penalised_samples`), the other cheaper setting: exactly
    ``deg_penalty(..., penalty_fraction=F)`` (``gal_penalty``'s for GAL) of the library.
    ``peer``: the settings of ``trs`` and ``dverge`` (:func:`peer_objective`), needed for those only.
    """
    ensemble = _ensemble_of(model)
    if method.peer is not None:
        if peer is None:
            raise ValueError(f"Expected `peer` settings for the peer method {method.peer!r}, but got None")
        return peer_objective(method, ensemble, images, labels, weights, peer)
    if method.pdd != (ensemble.pdd is not None):
        raise ValueError(
            f"Expected an ensemble {'with' if method.pdd else 'without'} PDD for this method (pdd={method.pdd}), "
            f"but got pdd={ensemble.pdd!r}"
        )
    if method.attack is None:
        return _objective(method, model, images, labels, weights, with_penalty)
    if adversarial is None:
        raise ValueError(f"Expected `adversarial` settings for a method with attack {method.attack!r}, but got None")
    crafted = craft_adversarial(method.attack, ensemble, images, labels, adversarial)
    attacked = _objective(method, model, crafted, labels, weights, with_penalty)
    if adversarial.weight == 1.0:
        # Adversarial examples only (Madry et al. 2018): no clean pass, so BatchNorm's running
        # statistics see only what the loss trains on.
        return attacked
    clean = _objective(method, model, images, labels, weights, with_penalty)
    mix = adversarial.weight
    return Objective((1 - mix) * clean.loss + mix * attacked.loss, (1 - mix) * clean.penalty + mix * attacked.penalty, clean.logits)


def _objective(method: Method, model: nn.Module, images: Tensor, labels: Tensor, weights: Weights, with_penalty: bool) -> Objective:
    """Eq. 1 plus the method's regulariser on one input, without the attack."""
    gradient_penalty = (method.deg or method.gal) and with_penalty
    if not gradient_penalty:
        logits = model(images).logits
        member_losses = ensemble_cross_entropy(logits, labels, member_reduction="none")
        loss, penalty = _cross_entropy(method, member_losses, weights), member_losses.new_zeros(())
        if method.adp:
            penalty = adp_regularizer(logits, labels, alpha=weights.adp_alpha, beta=weights.adp_beta).value
            loss = loss + penalty
        return Objective(loss, penalty.detach(), logits.detach())
    # DEG differentiates each member's loss with respect to its input: one input per member
    # (views of the batch) lets one backward pass give all K gradients. With --deg-fraction F
    # < 1 only the first n = ceil(F * B) images get them (double backprop on n images); the
    # rest run as a plain forward, as in the library's deg_penalty(..., penalty_fraction=F).
    penalised = penalised_samples(images.shape[0], weights.deg_fraction)
    inputs = member_inputs(images[:penalised], _ensemble_of(model).num_members)
    penalised_logits = model(inputs, per_member=True).logits
    logits = penalised_logits
    if penalised < images.shape[0]:
        logits = torch.cat([penalised_logits, model(images[penalised:]).logits], dim=1)
    member_losses = ensemble_cross_entropy(logits, labels, member_reduction="none")
    penalised_losses = member_losses
    if penalised < images.shape[0]:
        penalised_losses = ensemble_cross_entropy(penalised_logits, labels[:penalised], member_reduction="none")
    # g_k = dL_CE(y_k, y)/dx of Algorithm 2, one gradient per member, on the penalised images.
    grads = member_input_gradients(penalised_losses, inputs, per_member=True)
    if method.deg:
        penalty = dispersed_gradient_loss(grads)
        loss = _cross_entropy(method, member_losses, weights) + weights.deg_lambda * penalty
    else:
        penalty = gradient_alignment_loss(grads)
        loss = _cross_entropy(method, member_losses, weights) + weights.gal_lambda * penalty
    return Objective(loss, penalty.detach(), logits.detach())


def peer_objective(method: Method, ensemble: Ensemble, images: Tensor, labels: Tensor, weights: Weights, peer: PeerStep) -> Objective:
    """TRS's or DVERGE's loss on one batch, the ensemble in training mode (docs/method.md, sections TRS and DVERGE).

    - ``trs``: eq. 1 (summed CE under ``--ce-reduction auto``) + ``--trs-similarity`` x L_sim at
      the batch + ``--trs-smoothness`` x L_smooth at the batch whose second half is
      :func:`~ensemble_diversity.trs_perturbation`'s PGD point; ``penalty`` is the weighted sum.
    - ``dverge``: the members distil the batch towards a derangement of it (each image's target
      another image of the batch, drawn from the global RNG), then ``dverge_loss(...).losses.sum()``:
      member i on the others' distilled images with the source labels, no clean CE; ``penalty``
      is 0 and ``logits`` are the members' eval-mode logits on the clean batch (no gradient), as
      no training pass sees it.

    The library's functions run on the ``Ensemble`` itself, not through DDP's wrapper: under
    ``torchrun`` the loop averages the gradients over the ranks itself.
    """
    settings = peer.settings
    if method.peer == "trs":
        smooth_point = trs_perturbation(ensemble, images, labels, eps=peer.trs_eps, steps=settings.trs_steps)
        terms = trs_terms(ensemble, images, labels, x_smooth=smooth_point)
        penalty = settings.trs_similarity * terms.similarity + settings.trs_smoothness * terms.smoothness
        return Objective(_cross_entropy(method, terms.losses, weights) + penalty, penalty.detach(), terms.logits.detach())
    # A random cyclic order: image order[i] targets image order[i + 1], never itself.
    order = torch.randperm(images.shape[0], device=images.device)
    targets = torch.empty_like(order)
    targets[order] = order.roll(-1)
    step = settings.dverge_eps / 10
    distilled = feature_distillation(
        ensemble, images, images[targets], eps=settings.dverge_eps, step_size=step, steps=settings.dverge_steps, layer=peer.dverge_layer
    )
    loss = dverge_loss(ensemble, distilled, labels).losses.sum()
    ensemble.eval()
    try:
        with torch.no_grad():
            logits = ensemble.member_logits(images)
    finally:
        ensemble.train()
    return Objective(loss, loss.new_zeros(()), logits)


def penalised_samples(batch: int, fraction: float) -> int:
    """How many of a batch's first images get the DEG/GAL penalty under ``--deg-fraction``: ``ceil(fraction * batch)``, at least 1.

    >>> penalised_samples(64, 1.0), penalised_samples(64, 0.25), penalised_samples(64, 0.1), penalised_samples(3, 0.01)
    (64, 16, 7, 1)
    """
    return max(1, math.ceil(fraction * batch))


def _cross_entropy(method: Method, member_losses: Tensor, weights: Weights) -> Tensor:
    """Eq. 1: the members' CE terms ``[K]`` reduced as ``--ce-reduction`` says."""
    reduction = method.ce_reduction if weights.ce_reduction == "auto" else weights.ce_reduction
    return member_losses.mean() if reduction == "mean" else member_losses.sum()


def _ensemble_of(model: nn.Module) -> Ensemble:
    """The ``Ensemble`` inside ``EnsembleForward`` (or inside DDP around it)."""
    forward = model.module if isinstance(model, DistributedDataParallel) else model
    return forward.ensemble
