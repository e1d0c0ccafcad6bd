"""Gradient Alignment Loss (GAL), the gradient-diversity baseline of Kariyappa and Qureshi 2019,
"Improving Adversarial Robustness of Ensembles with Diversity Training" (arXiv:1901.09981).

GAL compares the members' input gradients with the same cosine as DEG (eq. 3 of Huang et al.),
but reduces the pairs with a log-sum-exp, a smooth maximum, so that training works on the most
aligned pair rather than on all pairs equally:

.. math::

    \\mathrm{GAL} = \\log \\sum_{1 \\le a < b \\le K} \\exp\\big(\\cos(g_a, g_b)\\big),
    \\qquad g_k = \\partial \\mathcal{L}(\\hat{y}_k, y) / \\partial x

The paper writes GAL for one input. Over a batch we take the log-sum-exp per sample and average
over the batch, as the DVERGE authors' re-implementation of the GAL baseline does
(``train/train_gal.py`` of github.com/zjysteven/DVERGE); the training objective there is the
members' mean cross-entropy plus ``0.5 * GAL``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity._checks import MemberTensors, check_eps
from ensemble_diversity._pairwise import pairwise_cosines
from ensemble_diversity.deg import (
    GradientPenalty,
    LossFn,
    _gradient_penalty,
    _validated_gradients,
)


def gradient_alignment_loss(grads: MemberTensors, *, eps: float = 1e-12, num_members: int | None = None) -> Tensor:
    """Log-sum-exp over member pairs of the cosine between input gradients, batch-averaged.

    With ``P = K(K-1)/2`` pairs the value lies in ``[log P - 1, log P + 1]``: ``log P + 1``
    when all members' gradients point the same way, ``log P`` when they are orthogonal.

    Args:
        grads: ``[K, B, ...]`` (members, batch, any input dimensions) or a sequence of K
            tensors ``[B, ...]``: each member's loss gradient with respect to the input.
        eps: gradient norms are clamped at ``eps`` from below, so a zero gradient has cosine 0
            with every member (never NaN) and a finite gradient.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        Scalar: per sample, the log-sum-exp over the pair axis; then the mean over the batch.

    Example:
        >>> g = torch.tensor([[[1.0, 0.0]], [[-2.0, 0.0]]])  # K=2, B=1, opposite gradients
        >>> gradient_alignment_loss(g)  # one pair: log(exp(-1))
        tensor(-1.)
        >>> round(float(gradient_alignment_loss(torch.ones(3, 1, 2))), 4)  # log(3 e)
        2.0986
    """
    check_eps(eps)
    return _alignment(_validated_gradients(grads, "grads", num_members), eps)


def _alignment(grads: Tensor, eps: float) -> Tensor:
    return torch.logsumexp(pairwise_cosines(grads, eps), dim=1).mean()


def gal_penalty(
    models: Sequence[nn.Module] | nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    create_graph: bool = True,
    penalty_fraction: float = 1.0,
) -> GradientPenalty:
    """GAL of an ensemble on one batch, with the members' logits and losses.

    Same calling convention as :func:`ensemble_diversity.deg.deg_penalty` (one forward per
    member, ``x`` left untouched, double backprop into every member); only the reduction over
    member pairs differs. GAL is weighted by 0.5 in the DVERGE re-implementation (its default
    ``--lambda``), the weight reproduced here:

    >>> _ = torch.manual_seed(0)
    >>> models = [nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))]
    >>> x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    >>> out = gal_penalty(models, x, y)
    >>> loss = out.losses.mean() + 0.5 * out.penalty
    >>> loss.backward()
    >>> bool(-1.0 <= out.penalty <= 1.0)  # K=2: P=1, so [log 1 - 1, log 1 + 1]
    True

    Args:
        models: K >= 2 modules (architectures may differ), each mapping ``x`` to logits
            ``[B, L]`` of the same shape, or an :class:`~ensemble_diversity.Ensemble` of them
            (through its PDD in training mode), or an :class:`~ensemble_diversity.EnsembleMembers`
            inside ``DistributedDataParallel`` or ``torch.compile``, as with ``deg_penalty``.
        x: ``[B, ...]``, floating; never modified, and its ``requires_grad`` flag is left as it
            was (see :func:`~ensemble_diversity.deg.deg_penalty`).
        y: targets passed to ``loss_fn`` (class indices ``[B]`` for the default cross-entropy).
        loss_fn: ``loss_fn(logits_k, y) -> scalar`` for one member.
        create_graph: keep the graph of the input gradients (needed to train on the penalty).
        penalty_fraction: the share of the batch GAL is computed on (its first samples), in
            (0, 1]; see :func:`~ensemble_diversity.deg.deg_penalty`.

    Returns:
        :class:`~ensemble_diversity.deg.GradientPenalty` ``(penalty, logits [K, B, L], losses [K])``.
    """
    return _gradient_penalty(models, x, y, loss_fn, create_graph, lambda grads: _alignment(grads, 1e-12), penalty_fraction)
