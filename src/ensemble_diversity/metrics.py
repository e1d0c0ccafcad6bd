"""Ensemble diversity metrics of Huang et al. (AAAI 2021), section "Ensemble Diversity Analysis".

Three views of diversity, each a plain function of tensors (members on the first axis; a
sequence of K tensors is accepted wherever a stacked ``[K, ...]`` tensor is):

- :func:`ambiguity_entropy`: disagreement of the members' votes, eq. 5 (Table 1).
- :func:`discrimination_score`: Fisher-style separation of the members' activated FC units,
  eq. 6 per sample (Fig. 2).
- :func:`gradient_angles`: mean pairwise angle between the members' loss gradients (Fig. 3).

Paper: https://ojs.aaai.org/index.php/AAAI/article/view/16955
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ensemble_diversity._checks import (
    MemberTensors,
    check_eps,
    check_floating,
    check_member_logits,
    check_min_dim,
    check_ndim,
    check_nonempty,
    finite_check_wanted,
    stack_members,
)
from ensemble_diversity._checks import check_finite as _raise_if_not_finite
from ensemble_diversity._pairwise import pairwise_cosines

__all__ = ["ambiguity_entropy", "discrimination_score", "gradient_angles"]


def ambiguity_entropy(
    member_logits: MemberTensors, targets: Tensor, *, check_finite: bool | None = None, num_members: int | None = None
) -> Tensor:
    r"""Entropy measure of the members' disagreement on correctness, eq. 5 (Kuncheva and Whitaker 2003).

    .. math::
        E = \frac{1}{N} \sum_{i=1}^{N} \frac{\min\{l(x_i),\, K - l(x_i)\}}{K - \lceil K/2 \rceil}

    where :math:`l(x_i)` is the number of members whose top-1 class (argmax of its logits; ties
    go to the lowest class index, as in :func:`torch.argmax`) equals the target. :math:`E = 0`
    when all members are right or all are wrong on every sample, :math:`E = 1` when every sample
    splits the members as evenly as possible (:math:`\lfloor K/2 \rfloor` against the rest).

    Args:
        member_logits: ``[K, N, L]`` (members, samples, classes), or a sequence of K ``[N, L]``.
            Logits or probabilities: only the argmax is used. K >= 2 (for K = 1 the denominator
            of eq. 5 is zero).
        targets: ``[N]`` integer class indices in ``[0, L)``.
        check_finite: whether to reject NaN/inf in ``member_logits`` and out-of-range
            ``targets`` (each reads a value back to the host); ``None`` checks on CPU only.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        Scalar tensor in ``[0, 1]``, averaged over the sample axis (members and samples reduced).

    Example:
        >>> logits = torch.tensor([[[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]],
        ...                        [[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]],
        ...                        [[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]])  # [K=3, N=3, L=2]
        >>> ambiguity_entropy(logits, torch.tensor([0, 0, 0]))  # l = 3, 1, 2
        tensor(0.6667)
    """
    logits = check_member_logits(member_logits, targets, min_members=2, finite=check_finite, num_members=num_members)
    num_members = logits.shape[0]

    num_correct = (logits.argmax(dim=-1) == targets.to(logits.device)).sum(dim=0)  # [N]
    minority = torch.minimum(num_correct, num_members - num_correct)
    # K - ceil(K/2) = floor(K/2), the largest possible minority: it normalises E to [0, 1].
    max_minority = num_members - math.ceil(num_members / 2)
    return minority.to(logits.dtype).mean() / max_minority


def discrimination_score(features: MemberTensors, *, check_finite: bool | None = None, num_members: int | None = None) -> Tensor:
    r"""Discrimination of the members' activated features, eq. 6, for each sample.

    For sample n, let :math:`\mathcal{A}_k` hold the activated (strictly positive) units of
    member k's features, with mean :math:`\mu_k` and variance :math:`\sigma_k^2`. Then

    .. math::
        \mathcal{L}_F = \sum_{1 \le i < j \le K} \frac{(\mu_i - \mu_j)^2}{\sigma_i^2 + \sigma_j^2}

    (between-network over within-network scatter, after the Fisher score). Fig. 2 of the paper
    box-plots this per-image score over 2000 test images; average it yourself for one number.

    Choices the paper leaves open:

    - :math:`\sigma_k^2` is the population variance (divided by :math:`|\mathcal{A}_k|`, not
      :math:`|\mathcal{A}_k| - 1`), so a single activated unit has variance 0 rather than
      undefined.
    - A member with no activated unit in a sample has no mean; every pair involving it
      contributes 0 for that sample.
    - A pair with zero within-network scatter (:math:`\sigma_i^2 + \sigma_j^2 = 0`: both
      members' activated values are constant, e.g. one activated unit each) contributes 0,
      not infinity. A set counts as constant when its largest and smallest activated values
      are equal, so rounding in the mean cannot turn it into a tiny variance and a huge ratio.

    The result is therefore finite and NaN-free for any finite input.

    Args:
        features: ``[K, N, C]`` (members, samples, units), e.g. the last FC layer after ReLU,
            or a sequence of K ``[N, C]``. Computed in at least float32.
        check_finite: whether to reject NaN/inf (reads a value back to the host); ``None``
            checks on CPU only.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        ``[N]``, the score of each sample (members, pairs and units reduced), >= 0.

    Example:
        >>> features = torch.tensor([[[1.0, 3.0, 0.0]],    # A_1 = {1, 3}: mean 2, var 1
        ...                          [[4.0, 0.0, 6.0]]])   # A_2 = {4, 6}: mean 5, var 1
        >>> discrimination_score(features)                 # (2 - 5)^2 / (1 + 1)
        tensor([4.5000])
    """
    stacked = stack_members(features, "features", min_members=2, num_members=num_members)
    check_ndim(stacked, "features", 3, "[K, N, C]")
    check_floating(stacked, "features")
    check_nonempty(stacked, "features", 1, "sample")
    check_nonempty(stacked, "features", 2, "unit")
    if finite_check_wanted(stacked, check_finite):
        _raise_if_not_finite(stacked, "features")

    values = stacked.to(torch.promote_types(stacked.dtype, torch.float32))
    active = values > 0
    count = active.sum(dim=-1)  # [K, N]
    has_active = count > 0
    # Clamped counts only avoid 0/0 for members without activated units; those are masked below.
    safe_count = count.clamp(min=1).to(values.dtype)
    masked = torch.where(active, values, torch.zeros_like(values))
    mean = masked.sum(dim=-1) / safe_count
    deviation = torch.where(active, values - mean.unsqueeze(-1), torch.zeros_like(values))
    variance = deviation.square().sum(dim=-1) / safe_count
    # A constant set has variance exactly 0, even where rounding leaves its mean off by an ulp.
    largest = torch.where(active, values, values.new_tensor(-math.inf)).amax(dim=-1)
    smallest = torch.where(active, values, values.new_tensor(math.inf)).amin(dim=-1)
    variance = torch.where(largest == smallest, torch.zeros_like(variance), variance)

    num_members = values.shape[0]
    rows, cols = torch.triu_indices(num_members, num_members, offset=1, device=values.device)
    between = (mean[rows] - mean[cols]).square()  # [P, N]
    within = variance[rows] + variance[cols]
    defined = has_active[rows] & has_active[cols] & (within > 0)
    # Double `where` keeps the gradient of the discarded branch finite (no 0/0 in backward).
    ratio = between / torch.where(defined, within, torch.ones_like(within))
    return torch.where(defined, ratio, torch.zeros_like(ratio)).sum(dim=0)


def gradient_angles(
    grads: MemberTensors, *, eps: float = 1e-12, check_finite: bool | None = None, num_members: int | None = None
) -> Tensor:
    r"""Mean angle between the members' loss gradients, in degrees, for each sample (Fig. 3).

    .. math::
        \bar\theta(x) = \frac{2}{K(K-1)} \sum_{1 \le i < j \le K}
            \frac{180}{\pi} \arccos\big(\operatorname{clamp}(\cos(g_i, g_j), -1, 1)\big)

    with the cosines of :func:`ensemble_diversity._pairwise.pairwise_cosines` (the same ones
    DEG's eq. 3 sums). A zero gradient has cosine 0 with every member, so a pair involving one
    counts as 90 degrees (orthogonal), never NaN.

    ``arccos`` is ill-conditioned near cosines of +-1: in float32, identical gradients may read
    as a few hundredths of a degree rather than exactly 0 (pass float64 gradients for more).

    Args:
        grads: ``[K, N, ...]`` (members, samples, any input dimensions), e.g. from
            :func:`ensemble_diversity.deg.member_input_gradients`, or a sequence of K
            ``[N, ...]``; flattened per sample.
        eps: passed to :func:`pairwise_cosines`, which clamps each norm at ``eps`` from below
            (an exactly zero gradient then has cosine 0: 90 degrees).
        check_finite: whether to reject NaN/inf (reads a value back to the host); ``None``
            checks on CPU only.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        ``[N]`` in ``[0, 180]``, averaged over the member pairs.

    Example:
        >>> grads = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]])  # [K=3, N=1, D=2]
        >>> gradient_angles(grads)  # pairs: 90, 180, 90 degrees
        tensor([120.])
    """
    stacked = stack_members(grads, "grads", min_members=2, num_members=num_members)
    check_min_dim(stacked, "grads", 3, "[K, N, ...]")
    check_floating(stacked, "grads")
    check_nonempty(stacked, "grads", 1, "sample")
    if stacked[0, 0].numel() == 0:
        raise ValueError(f"Expected argument `grads` to have non-empty input dimensions, but got shape {tuple(stacked.shape)}")
    if finite_check_wanted(stacked, check_finite):
        _raise_if_not_finite(stacked, "grads")

    check_eps(eps)
    cosines = pairwise_cosines(stacked, eps=eps)  # [N, P]
    return torch.rad2deg(torch.arccos(cosines.clamp(-1.0, 1.0))).mean(dim=-1)
