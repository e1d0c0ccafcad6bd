r"""Adaptive Diversity Promoting (ADP) regulariser, the peer baseline of Huang et al. (AAAI 2021).

Pang, Xu, Du, Chen and Zhu, "Improving Adversarial Robustness via Promoting Ensemble
Diversity", ICML 2019, http://proceedings.mlr.press/v97/pang19a.html. ADP trains the members
jointly on

.. math::
    \mathcal{L}_{ADP} = \mathcal{L}_{ECE} - \alpha \, \mathcal{H}(\bar p) - \beta \log \mathbb{ED}

where :math:`\bar p` is the members' mean prediction and :math:`\mathbb{ED}` the squared volume
spanned by the members' non-maximal (true label removed, normalised) predictions.
:func:`adp_regularizer` returns the last two terms; add it to
:func:`ensemble_diversity.ensemble_loss.ensemble_cross_entropy`.

Checked against the authors' Keras code (github.com/P2333/Adaptive-Diversity-Promoting,
``utils.py``: ``Entropy``, ``Ensemble_Entropy``, ``log_det``, ``Loss_withEE_DPP``): same offsets
(``log_offset=1e-20`` inside the entropy's log, ``det_offset=1e-6`` on the Gram diagonal), same
L2 normalisation of each member's non-maximal prediction, both terms averaged over the batch.
Differences, all for numerical safety: the normalisation divides by ``max(norm, 1e-12)``, so a
member whose non-maximal probabilities all underflow to 0 gives a zero row instead of NaN; the
Gram matrix and its log-determinant are computed in float64. Two things to match when
reproducing the baseline: the authors' ensemble CE sums the members' CE (use
``member_reduction="sum"``), and the defaults here, ``alpha=2, beta=0.5``, are the paper's
ADP_{2,0.5} setting (the code's command-line defaults are 1.0 and 0.5).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ensemble_diversity._checks import MemberTensors, check_member_logits

__all__ = ["ADPRegularizer", "adp_regularizer"]

_NORM_EPS = 1e-12
"""Lower clamp on the norm when normalising non-maximal predictions (as in :mod:`ensemble_diversity._pairwise`)."""


class ADPRegularizer(NamedTuple):
    """What :func:`adp_regularizer` returns; all three are scalar tensors."""

    value: Tensor
    """``-alpha * ensemble_entropy - beta * log_det``: add it to the ensemble CE loss."""
    ensemble_entropy: Tensor
    """Entropy of the members' mean prediction, averaged over the batch (nats)."""
    log_det: Tensor
    """Log-determinant of the members' non-maximal Gram matrix (log ED), averaged over the batch."""


def adp_regularizer(
    member_logits: MemberTensors,
    targets: Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 0.5,
    log_det_offset: float = 1e-6,
    log_offset: float = 1e-20,
    check_finite: bool | None = None,
    num_members: int | None = None,
) -> ADPRegularizer:
    r"""ADP's ensemble-entropy and ensemble-diversity terms (Pang et al. 2019, section 3).

    With member probabilities :math:`p_k = \operatorname{softmax}(z_k)` for each sample:

    .. math::
        \mathcal{H} = -\sum_{l} \bar p_l \log(\bar p_l + \text{log\_offset}),
        \qquad \bar p = \frac{1}{K} \sum_k p_k

    .. math::
        \log \mathbb{ED} = \log\det\big(\tilde M \tilde M^\top + \text{log\_det\_offset} \cdot I_K\big)

    where row k of :math:`\tilde M \in \mathbb{R}^{K \times (L-1)}` is :math:`p_k` with the true
    label's entry removed, L2-normalised. Both are averaged over the batch and combined as
    ``value = -alpha * ensemble_entropy - beta * log_det``.

    When ``L - 1 < K`` the ``K`` rows cannot be independent, :math:`\tilde M \tilde M^\top` is
    singular and the offset alone keeps the log-determinant finite (near ``K - L + 1`` times
    ``log(log_det_offset)`` below the non-singular part): the term then still rewards spreading
    the rows, but its scale is set by the offset. ``L >= 2`` is required so that something is
    left after removing the true label.

    Args:
        member_logits: ``[K, B, L]`` (members, batch, classes) logits, or a sequence of K
            ``[B, L]``. K >= 2. Computed in at least float32; the Gram matrix in float64.
        targets: ``[B]`` integer class indices in ``[0, L)``.
        alpha: weight of the ensemble entropy (>= 0).
        beta: weight of the log-determinant (>= 0).
        log_det_offset: added to the Gram diagonal (> 0).
        log_offset: added inside the entropy's log (> 0).
        check_finite: whether to reject NaN/inf logits and out-of-range targets (reads values
            back to the host); ``None`` checks on CPU only.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        :class:`ADPRegularizer` of scalar tensors (members, classes and batch reduced), in
        ``member_logits``' dtype promoted to at least float32.

    Example:
        >>> logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]]])  # [K=2, B=1, L=3]
        >>> out = adp_regularizer(logits, torch.tensor([0]))
        >>> round(out.ensemble_entropy.item(), 4), round(out.log_det.item(), 4)
        (0.9585, -1.0021)
    """
    logits = check_member_logits(
        member_logits, targets, min_members=2, min_classes=2, finite=check_finite, num_members=num_members
    )
    num_members, batch, num_classes = logits.shape
    _check_weight(alpha, "alpha", allow_zero=True)
    _check_weight(beta, "beta", allow_zero=True)
    _check_weight(log_det_offset, "log_det_offset", allow_zero=False)
    _check_weight(log_offset, "log_offset", allow_zero=False)

    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    mean_probs = probs.mean(dim=0)  # [B, L]
    entropy = -(mean_probs * torch.log(mean_probs + log_offset)).sum(dim=-1)

    targets = targets.to(device=logits.device, dtype=torch.long)
    # Non-target class indices per sample: j below the target stays j, from it on shifts by one.
    kept = torch.arange(num_classes - 1, device=logits.device).expand(batch, -1)
    kept = kept + (kept >= targets.unsqueeze(-1)).long()  # [B, L-1]
    non_maximal = probs.gather(-1, kept.unsqueeze(0).expand(num_members, -1, -1))  # [K, B, L-1]
    # float64: with L-1 < K the Gram matrix's zero eigenvalues sit a few float32 roundings
    # away from -log_det_offset, enough to break the Cholesky factorisation.
    rows = F.normalize(non_maximal.transpose(0, 1).double(), dim=-1, eps=_NORM_EPS)  # [B, K, L-1]
    gram = rows @ rows.transpose(-1, -2)
    gram = gram + log_det_offset * torch.eye(num_members, dtype=gram.dtype, device=gram.device)
    cholesky = torch.linalg.cholesky(gram)
    log_det = 2.0 * torch.log(torch.diagonal(cholesky, dim1=-2, dim2=-1)).sum(dim=-1)

    ensemble_entropy = entropy.mean()
    mean_log_det = log_det.mean().to(ensemble_entropy.dtype)
    return ADPRegularizer(-alpha * ensemble_entropy - beta * mean_log_det, ensemble_entropy, mean_log_det)


def _check_weight(value: float, name: str, *, allow_zero: bool) -> None:
    bound = ">= 0" if allow_zero else "> 0"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise ValueError(f"Expected argument `{name}` to be a finite number {bound}, but got {value!r}")
