"""The training methods compared by ``examples/train.py`` and their objective on one batch.

- ``baseline``: the ensemble cross-entropy alone (eq. 1), members trained independently.
- ``adp``: eq. 1 plus ADP's regulariser (Pang et al. 2019), the paper's peer baseline.
- ``pdd``: eq. 1 with Priority Diversified Dropouts on the members' penultimate features
  (Algorithm 1, eq. 2).
- ``deg``: eq. 1 plus lambda times the Dispersed Ensemble Gradients penalty (eqs. 3-4).
- ``pdd+deg``: both, the paper's full method.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity.adp import adp_regularizer
from ensemble_diversity.deg import dispersed_gradient_loss, member_input_gradients
from ensemble_diversity.pdd import PriorityDiversifiedDropout

from .members import member_outputs


class Method(NamedTuple):
    """Which regularisers a method adds to the ensemble cross-entropy."""

    pdd: bool
    deg: bool
    adp: bool


METHODS: dict[str, Method] = {
    "baseline": Method(pdd=False, deg=False, adp=False),
    "adp": Method(pdd=False, deg=False, adp=True),
    "pdd": Method(pdd=True, deg=False, adp=False),
    "deg": Method(pdd=False, deg=True, adp=False),
    "pdd+deg": Method(pdd=True, deg=True, adp=False),
}


class Weights(NamedTuple):
    """How the objective's terms are combined (flags ``--ce-reduction``, ``--deg-lambda``, ``--adp-*``)."""

    ce_reduction: Literal["mean", "sum"]
    deg_lambda: float
    adp_alpha: float
    adp_beta: float


class Objective(NamedTuple):
    loss: Tensor
    """Scalar to minimise: eq. 1 plus the method's regulariser (eq. 4 for DEG)."""
    penalty: Tensor
    """Scalar, detached: eq. 3's L_g before lambda for DEG, ADP's regulariser for adp, 0 otherwise."""
    logits: Tensor
    """``[K, B, L]``, detached: the members' training-mode logits."""


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
    members: nn.ModuleList,
    pdd: PriorityDiversifiedDropout | None,
    images: Tensor,
    labels: Tensor,
    weights: Weights,
    *,
    model: nn.Module | None = None,
) -> Objective:
    """The method's loss on one batch ``images [B, C, H, W]``, ``labels [B]``; members in training mode.

    ``model``: the forward to run, ``MemberStack(members, pdd)`` wrapped in DistributedDataParallel
    under ``torchrun`` (DDP syncs gradients only for a forward through it); by default
    ``member_outputs(members, images, pdd)``.
    """
    # DEG differentiates each member's loss with respect to the input, so the input must be a
    # leaf that requires grad before the forward pass.
    inputs = images.detach().requires_grad_(True) if method.deg else images
    logits = (member_outputs(members, inputs, pdd) if model is None else model(inputs)).logits
    # Each member's CE once: eq. 1 reduces them over members, and DEG differentiates each.
    member_losses = member_cross_entropies(logits, labels, "mean")
    loss = member_losses.mean() if weights.ce_reduction == "mean" else member_losses.sum()
    penalty = loss.new_zeros(())
    if method.deg:
        # g_k = dL_CE(y_k, y)/dx of Algorithm 2, one gradient per member.
        grads = member_input_gradients(member_losses, inputs)
        penalty = dispersed_gradient_loss(grads)
        loss = loss + weights.deg_lambda * penalty
    if method.adp:
        penalty = adp_regularizer(logits, labels, alpha=weights.adp_alpha, beta=weights.adp_beta).value
        loss = loss + penalty
    return Objective(loss, penalty.detach(), logits.detach())


def member_cross_entropies(logits: Tensor, labels: Tensor, batch_reduction: Literal["mean", "sum"]) -> Tensor:
    """``[K]``: each member's own CE on ``logits [K, B, L]``, reduced over the batch axis."""
    num_members, batch, num_classes = logits.shape
    per_sample = F.cross_entropy(logits.reshape(-1, num_classes), labels.repeat(num_members), reduction="none")
    per_sample = per_sample.view(num_members, batch)
    return per_sample.mean(dim=1) if batch_reduction == "mean" else per_sample.sum(dim=1)


def ensemble_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]`` bool: whether the ensemble (members' softmax probabilities averaged) predicts ``labels``.

    The paper's ensemble, the same average as ``Ensemble(members, combine="probabilities")``.
    """
    return torch.softmax(logits, dim=-1).mean(dim=0).argmax(dim=-1) == labels
