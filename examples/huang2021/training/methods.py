"""The training methods compared by ``examples/train.py`` and their objective on one batch.

- ``baseline``: the ensemble cross-entropy alone (eq. 1), members trained independently.
- ``adp``: eq. 1 plus ADP's regulariser (Pang et al. 2019), the paper's peer baseline; its
  members' CE terms are summed, as in Pang et al.'s code, against which their alpha 2 and
  beta 0.5 were tuned (every other method averages them, as the PDD/DEG authors' code).
- ``pdd``: eq. 1 with Priority Diversified Dropouts on the members' penultimate features
  (Algorithm 1, eq. 2).
- ``deg``: eq. 1 plus lambda times the Dispersed Ensemble Gradients penalty (eqs. 3-4).
- ``pdd+deg``: both, the paper's full method.
- ``gal``: eq. 1 plus lambda times the Gradient Alignment Loss (Kariyappa and Qureshi 2019),
  a peer input-gradient penalty (not in the paper's tables; for the cost comparison of
  ``benchmarks/``), weighted by ``--gal-lambda``.
- ``advt-fgsm``, ``advt-pgd``: adversarial training, eq. 1 on clean and on FGSM / PGD
  examples of the ensemble crafted on each batch (Table 6, AdvT_FGSM / AdvT_PGD; see
  ``adversarial.py`` for the recipe and its sources).
- ``advt-fgsm+pdd``, ``advt-pgd+pdd``: adversarial training with PDD (Table 6, AdvT + PDD).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ensemble_diversity import (
    Ensemble,
    adp_regularizer,
    dispersed_gradient_loss,
    ensemble_cross_entropy,
    gradient_alignment_loss,
    member_input_gradients,
    member_inputs,
)

from .adversarial import AdversarialTraining, Attack, craft_adversarial


class Method(NamedTuple):
    """Which regularisers a method adds to the ensemble cross-entropy."""

    pdd: bool
    deg: bool
    adp: bool
    gal: bool = False
    attack: Attack | None = None
    """Adversarial training with examples from this attack, or None."""
    ce_reduction: Literal["mean", "sum"] = "mean"
    """How eq. 1 reduces the members' CE terms under ``--ce-reduction auto``: the reduction its weights were tuned for."""


METHODS: dict[str, Method] = {
    "baseline": Method(pdd=False, deg=False, adp=False),
    "adp": Method(pdd=False, deg=False, adp=True, ce_reduction="sum"),
    "pdd": Method(pdd=True, deg=False, adp=False),
    "deg": Method(pdd=False, deg=True, adp=False),
    "pdd+deg": Method(pdd=True, deg=True, adp=False),
    "gal": Method(pdd=False, deg=False, adp=False, gal=True),
    "advt-fgsm": Method(pdd=False, deg=False, adp=False, attack="fgsm"),
    "advt-pgd": Method(pdd=False, deg=False, adp=False, attack="pgd"),
    "advt-fgsm+pdd": Method(pdd=True, deg=False, adp=False, attack="fgsm"),
    "advt-pgd+pdd": Method(pdd=True, deg=False, adp=False, attack="pgd"),
}


class Weights(NamedTuple):
    """How the objective's terms are combined (flags ``--ce-reduction``, ``--deg-lambda``, ``--adp-*``)."""

    ce_reduction: Literal["auto", "mean", "sum"]
    """``auto``: each method's own (:attr:`Method.ce_reduction`); ``mean`` or ``sum``: that one for every method."""
    deg_lambda: float
    adp_alpha: float
    adp_beta: float
    gal_lambda: float = 0.5


class Objective(NamedTuple):
    loss: Tensor
    """Scalar to minimise: eq. 1 plus the method's regulariser (eq. 4 for DEG), mixed over clean and adversarial inputs for AdvT."""
    penalty: Tensor
    """Scalar, detached: eq. 3's L_g before lambda for DEG (GAL's for gal), ADP's regulariser for adp, 0 otherwise."""
    logits: Tensor
    """``[K, B, L]``, detached: the members' training-mode logits on the clean images (adversarial ones when AdvT weighs clean by 0)."""


def parse_methods(text: str) -> list[str]:
    """``"baseline,pdd+deg"`` -> ``["baseline", "pdd+deg"]``; raises ValueError naming ``--methods``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if not names or unknown:
        raise ValueError(
            f"Expected --methods to be a comma-separated list of {list(METHODS)}, but got {text!r}"
            + (f" (unknown: {unknown})" if unknown else "")
        )
    if len(set(names)) != len(names):
        raise ValueError(f"Expected --methods to name each method once, but got {text!r}")
    return names


def training_objective(
    method: Method,
    ensemble: Ensemble,
    images: Tensor,
    labels: Tensor,
    weights: Weights,
    adversarial: AdversarialTraining | None = None,
    *,
    with_penalty: bool = True,
    model: nn.Module | None = None,
) -> Objective:
    """The method's loss on one batch ``images [B, C, H, W]``, ``labels [B]``; ``ensemble`` in training mode.

    ``ensemble`` holds the K members and, for the PDD methods (and only for them), the PDD
    between their features and heads: ``Ensemble(members, pdd=pdd)``.
    With an attack (``advt-*``), ``adversarial`` says how to craft the batch's adversarial
    examples and the loss is ``(1 - w) * objective(clean) + w * objective(adversarial)``.
    ``with_penalty=False`` leaves out the input-gradient penalty (DEG, GAL) on this batch, the
    cheaper setting ``--deg-every N`` that pays for double backprop on every N-th step only.
    ``model``: the forward to run, ``EnsembleForward(ensemble)`` wrapped in
    DistributedDataParallel under ``torchrun`` (DDP syncs gradients only for a forward through
    it); by default ``ensemble.member_outputs``.
    """
    if method.pdd != (ensemble.pdd is not None):
        raise ValueError(
            f"Expected an ensemble {'with' if method.pdd else 'without'} PDD for this method (pdd={method.pdd}), "
            f"but got pdd={ensemble.pdd!r}"
        )
    if method.attack is not None:
        if adversarial is None:
            raise ValueError(f"Expected `adversarial` settings for a method with attack {method.attack!r}, but got None")
        plain = method._replace(attack=None)
        crafted = craft_adversarial(method.attack, ensemble, images, labels, adversarial)
        attacked = training_objective(plain, ensemble, crafted, labels, weights, with_penalty=with_penalty, model=model)
        if adversarial.weight == 1.0:
            # Adversarial examples only (Madry et al. 2018): no clean pass, so BatchNorm's
            # running statistics see only what the loss trains on.
            return attacked
        clean = training_objective(plain, ensemble, images, labels, weights, with_penalty=with_penalty, model=model)
        mix = adversarial.weight
        return Objective(
            (1 - mix) * clean.loss + mix * attacked.loss, (1 - mix) * clean.penalty + mix * attacked.penalty, clean.logits
        )
    gradient_penalty = (method.deg or method.gal) and with_penalty
    # DEG differentiates each member's loss with respect to its input: one input per member
    # (views of the batch) lets one backward pass give all K gradients.
    inputs = member_inputs(images, ensemble.num_members) if gradient_penalty else images
    forward = ensemble.member_outputs if model is None else model
    logits = forward(inputs, per_member=gradient_penalty).logits
    # Each member's CE once: eq. 1 reduces them over members, and DEG differentiates each.
    member_losses = ensemble_cross_entropy(logits, labels, member_reduction="none")
    reduction = method.ce_reduction if weights.ce_reduction == "auto" else weights.ce_reduction
    loss = member_losses.mean() if reduction == "mean" else member_losses.sum()
    penalty = loss.new_zeros(())
    if gradient_penalty:
        # g_k = dL_CE(y_k, y)/dx of Algorithm 2, one gradient per member.
        grads = member_input_gradients(member_losses, inputs, per_member=True)
        if method.deg:
            penalty = dispersed_gradient_loss(grads)
            loss = loss + weights.deg_lambda * penalty
        else:
            penalty = gradient_alignment_loss(grads)
            loss = loss + weights.gal_lambda * penalty
    if method.adp:
        penalty = adp_regularizer(logits, labels, alpha=weights.adp_alpha, beta=weights.adp_beta).value
        loss = loss + penalty
    return Objective(loss, penalty.detach(), logits.detach())


def ensemble_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]`` bool: whether the ensemble (members' softmax probabilities averaged) predicts ``labels``.

    The paper's ensemble, the same average as ``Ensemble(members, combine="probabilities")``.
    """
    return torch.softmax(logits, dim=-1).mean(dim=0).argmax(dim=-1) == labels
