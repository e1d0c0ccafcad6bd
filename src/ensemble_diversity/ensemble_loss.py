"""Ensemble cross-entropy (ECE), eq. 1 of Huang et al. (AAAI 2021): the baseline training loss.

Every regulariser in this package (PDD's dropout aside) is added to this loss, so how the
members' CE terms are reduced sets the regulariser's effective weight.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ensemble_diversity._checks import MemberTensors, check_member_logits

__all__ = ["ensemble_cross_entropy"]

_MEMBER_REDUCTIONS = ("mean", "sum", "none")


def ensemble_cross_entropy(
    member_logits: MemberTensors,
    targets: Tensor,
    *,
    member_reduction: Literal["mean", "sum", "none"] = "mean",
    check_finite: bool | None = None,
    num_members: int | None = None,
) -> Tensor:
    r"""Ensemble cross-entropy, eq. 1: the members' CE losses, each averaged over the batch.

    .. math::
        \mathcal{L}_{ECE} = \sum_{k=1}^{K} \mathcal{L}_{CE}(\hat y_k, y)
        \quad (\texttt{"sum"}), \qquad
        \frac{1}{K} \sum_{k=1}^{K} \mathcal{L}_{CE}(\hat y_k, y) \quad (\texttt{"mean"})

    ``"sum"`` is eq. 1 as written (and what ADP's reference code uses). ``"mean"``, the
    default, is what the PDD/DEG authors' public code does: it divides each member's CE by K.
    That makes a regulariser added to it (eq. 4's :math:`\lambda \mathcal{L}_g`, ADP's terms)
    K times stronger relative to the CE than with ``"sum"``; with ``"mean"`` a weight
    :math:`\lambda` matches :math:`K \lambda` under ``"sum"``. ``"none"`` returns the K
    per-member losses ``[K]``, for a method that weighs or differentiates them one by one
    (DEG's input gradients, say).

    Args:
        member_logits: ``[K, B, L]`` (members, batch, classes) logits, or a sequence of K
            ``[B, L]``. K >= 1.
        targets: ``[B]`` integer class indices in ``[0, L)``.
        member_reduction: ``"mean"`` or ``"sum"`` over the member axis, or ``"none"``.
        check_finite: whether to reject NaN/inf logits and out-of-range targets (reads values
            back to the host); ``None`` checks on CPU only.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        Scalar tensor (batch averaged, members reduced by ``member_reduction``); ``[K]`` with
        ``"none"``.

    Example:
        >>> import torch
        >>> logits = torch.zeros(3, 2, 4)  # [K=3, B=2, L=4]: every member uniform, CE = log 4
        >>> targets = torch.tensor([0, 3])
        >>> round(ensemble_cross_entropy(logits, targets).item(), 4)
        1.3863
        >>> round(ensemble_cross_entropy(logits, targets, member_reduction="sum").item(), 4)
        4.1589
        >>> ensemble_cross_entropy(logits, targets, member_reduction="none").shape
        torch.Size([3])
    """
    if member_reduction not in _MEMBER_REDUCTIONS:
        raise ValueError(
            f"Expected argument `member_reduction` to be one of {list(_MEMBER_REDUCTIONS)}, but got {member_reduction!r}"
        )
    logits = check_member_logits(member_logits, targets, min_members=1, finite=check_finite, num_members=num_members)
    num_members, batch, num_classes = logits.shape

    # One call over all K * B rows; the batch mean of each member is then a mean over axis 1.
    per_sample = F.cross_entropy(
        logits.reshape(num_members * batch, num_classes),
        targets.to(device=logits.device, dtype=torch.long).repeat(num_members),
        reduction="none",
    ).view(num_members, batch)
    per_member = per_sample.mean(dim=1)
    if member_reduction == "none":
        return per_member
    return per_member.sum() if member_reduction == "sum" else per_member.mean()
