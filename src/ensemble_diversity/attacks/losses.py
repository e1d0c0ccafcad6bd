r"""The objectives the attacks climb: per-image losses ``[B]`` of the members' logits ``[K, B, L]``.

An objective is only what an attack climbs; whether an image is broken is always the
ensemble's own decision (:class:`~ensemble_diversity.attacks.Members`). With
:math:`z_k` member k's logits and :math:`y` the label:

.. math::
    \ell_{\text{logits}} = \operatorname{CE}\Big(\tfrac{1}{K}\sum_k z_k,\ y\Big), \qquad
    \ell_{\text{probs}} = -\log \tfrac{1}{K}\sum_k \operatorname{softmax}(z_k)_y, \qquad
    \operatorname{DLR}(g, y) = -\frac{g_y - \max_{i \ne y} g_i}{g_{\pi_1} - g_{\pi_3}}

(DLR: Croce and Hein 2020, section 4, with :math:`\pi` sorting :math:`g` in decreasing order.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Loss = Callable[[Tensor, Tensor], Tensor]
"""A per-image loss ``[B]`` of the members' logits ``[K, B, L]`` and the labels ``[B]``, which an attack climbs."""


def averaged_logits_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: cross-entropy of the members' averaged logits (``logits`` ``[K, B, L]``).

    Its gradient is not shrunk by a saturated member softmax: PGD's loss since Madry et al. 2018
    on one model, applied to the ensemble's mean logits.
    """
    return F.cross_entropy(logits.mean(dim=0), labels, reduction="none")


def log_averaged_probabilities(logits: Tensor) -> Tensor:
    """``[B, L]``: the log of the members' averaged softmax, as a log-sum-exp so it stays finite where a probability underflows.

    A valid logit vector of the paper's ensemble: its softmax is the averaged probabilities.
    """
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def averaged_probabilities_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: -log of the members' averaged probability of the label: the loss of exactly what the ensemble decides on."""
    return F.nll_loss(log_averaged_probabilities(logits), labels, reduction="none")


def difference_of_logits_ratio(outputs: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: the DLR loss (Croce and Hein 2020) of one model's logits ``outputs`` ``[B, L]``, L >= 3.

    Invariant to shifting and scaling the logits, so a softmax saturated by large logits does
    not shrink it. Positive once the image is misclassified.

    Example:
        >>> difference_of_logits_ratio(torch.tensor([[4.0, 2.0, 0.0]]), torch.tensor([0]))
        tensor([-0.5000])
    """
    if outputs.shape[-1] < 3:
        raise ValueError(
            f"Expected at least 3 classes for the DLR loss (it divides by the top-1 minus top-3 logit), but got shape {tuple(outputs.shape)}"
        )
    ranked = outputs.sort(dim=-1, descending=True).values
    own = outputs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    # The largest other logit: the top one unless the label holds it, then the runner-up.
    other = torch.where(ranked[:, 0] == own, ranked[:, 1], ranked[:, 0])
    return -(own - other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """``[B]``: :func:`difference_of_logits_ratio` of the members' averaged logits ``[K, B, L]``.

    Of the averaged logits, not of the log averaged probabilities: with saturated members the
    latter is nearly a vote count, flat almost everywhere, while DLR of the mean logits does not
    change when every logit is scaled (measured in tests/test_attacks_strength.py).
    """
    return difference_of_logits_ratio(logits.mean(dim=0), labels)
