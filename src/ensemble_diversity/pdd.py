"""Priority Diversified Dropouts (PDD): Huang et al., AAAI 2021, Algorithm 1 and eq. 2.

PDD drops units of the K members' last fully connected layer so that each member keeps, with
high probability, the units in its own *priority interval* of activation strength:

1. the joint range [u, v] of the K members' activations is split into M > K equal intervals;
2. each member's units are counted per interval, giving N_m^(k) and C_k = sum_m N_m^(k);
3. the K intervals holding the most units of the whole ensemble are ranked by that count and
   the k-th largest becomes member k's priority interval t_k;
4. a unit of member k in interval m is kept with probability (eq. 2)

   .. math::

       p_m^{(k)} = \\begin{cases} \\alpha & m = t_k \\\\
                   \\beta \\, (1 - N_m^{(k)} / C_k) & m \\neq t_k \\end{cases}

All of it runs as vectorised torch ops on the features' device: no Python loop over members,
intervals or samples and no host round trip, so ``torch.compile(pdd, fullgraph=True)`` works.
The choices where the paper is silent are listed in ``docs/method.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._checks import (
    check_finite,
    check_floating,
    check_ndim,
    check_nonempty,
    check_probability,
    finite_check_wanted,
    stack_members,
)

Statistics = Literal["sample", "batch"]


def _distributed() -> bool:
    """Whether a process group spans more than one rank, decided at each call (it may be
    initialised after the module is built)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def default_num_intervals(num_members: int) -> int:
    """The number of intervals M used when none is given: ``5 * (K - 1)``.

    The paper fixes M = 10 for K = 3 and M = 20 for K = 5; this is the straight line through
    both points, and M > K holds for every K >= 2.

    >>> [default_num_intervals(k) for k in (2, 3, 4, 5, 8)]
    [5, 10, 15, 20, 35]
    """
    return 5 * (num_members - 1)


class PriorityStatistics(NamedTuple):
    """What PDD computed for one set of features ``[K, B, C]``.

    ``G`` is the number of histograms: ``B`` (one per sample) with ``statistics="sample"``,
    1 with ``statistics="batch"``.
    """

    interval: Tensor
    """``[K, B, C]`` int64: the interval m of every unit, in ``[0, M)``."""
    member_counts: Tensor
    """``[K, G, M]`` int64: N_m^(k), each member's units per interval (summed over ranks when synced)."""
    priority_interval: Tensor
    """``[K, G]`` int64: t_k, member k's priority interval."""
    keep_rate: Tensor
    """``[K, B, C]`` float32 (float64 for float64 features): eq. 2's keep probability of every unit."""


def _priority_statistics(
    features: Tensor,
    num_intervals: int,
    alpha: float,
    beta: float,
    *,
    statistics: Statistics = "sample",
    sync_statistics: bool = False,
) -> PriorityStatistics:
    """Histogram, priority intervals and eq. 2 keep rates for stacked features (unvalidated).

    Args:
        features: ``[K, B, C]``; read without gradient.
        num_intervals: M.
        alpha: keep rate inside a member's priority interval.
        beta: scale of the keep rate elsewhere.
        statistics: ``"sample"``: [u, v] and the counts per sample (the authors' code);
            ``"batch"``: one range and one histogram for the whole batch.
        sync_statistics: all-reduce [u, v] and the counts over the default process group,
            when one is initialised, so that every rank uses the same statistics.
    """
    num_members = features.shape[0]
    # Binning in at least float32: bf16 has 8 bits of mantissa, too few to place 512 units
    # into 20 intervals without piling them onto the edges.
    activations = features.detach().to(torch.promote_types(features.dtype, torch.float32))
    range_dims = (0, 2) if statistics == "sample" else (0, 1, 2)
    low = activations.amin(dim=range_dims, keepdim=True)
    high = activations.amax(dim=range_dims, keepdim=True)
    synced = sync_statistics and _distributed()
    if synced:
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    width = high - low
    # u == v (all activations equal, e.g. all-zero ReLU output): every unit goes to interval 0
    # instead of dividing by zero.
    scaled = (activations - low) * num_intervals / torch.where(width > 0, width, torch.ones_like(width))
    # The top edge v belongs to the last interval, as in the authors' code. NaN (possible only
    # with check_finite off) goes to interval 0: an out-of-range index would be a device-side
    # assert on CUDA, which kills the whole process.
    interval = scaled.nan_to_num(0.0).floor().clamp(0, num_intervals - 1).long()

    groups = interval.shape[1] if statistics == "sample" else 1
    grouped = interval.reshape(num_members, groups, -1)
    member_counts = torch.zeros(num_members, groups, num_intervals, dtype=torch.long, device=features.device)
    member_counts.scatter_add_(-1, grouped, torch.ones_like(grouped))
    if synced:
        dist.all_reduce(member_counts, op=dist.ReduceOp.SUM)

    # Rank intervals by ensemble count; equal counts go to the lower interval index, so the
    # choice is deterministic on every device (topk alone does not order ties).
    order = torch.arange(num_intervals - 1, -1, -1, device=features.device)
    rank_key = member_counts.sum(0) * num_intervals + order
    priority_interval = rank_key.topk(num_members, dim=-1).indices.T  # [K, G]

    units_per_member = member_counts.sum(-1, keepdim=True)  # C_k, [K, G, 1]
    own_count = member_counts.gather(-1, grouped)  # N_m^(k) of each unit's interval
    density = own_count.to(activations.dtype) / units_per_member.to(activations.dtype)
    in_priority = grouped == priority_interval.unsqueeze(-1)
    keep_rate = torch.where(in_priority, alpha, beta * (1.0 - density))
    return PriorityStatistics(interval, member_counts, priority_interval, keep_rate.reshape(interval.shape))


class PriorityDiversifiedDropout(nn.Module):
    """PDD for K members (Algorithm 1, eq. 2), one state shared by all members.

    Args:
        num_members: K >= 2.
        num_intervals: M > K; None takes the paper's M = 10 for K = 3 and M = 20 for K = 5,
            and ``5 * (K - 1)`` (:func:`default_num_intervals`) for other K.
        alpha: keep rate of a unit in its member's priority interval, in [0, 1].
        beta: scale of the keep rate ``beta * (1 - N_m^(k) / C_k)`` elsewhere, in [0, 1].
        statistics: ``"sample"`` (default, the authors' code): [u, v] and the histogram are
            computed per sample over its K * C units; ``"batch"``: once over the whole batch.
        rescale: True (default): inverted dropout like :class:`torch.nn.Dropout`, kept units
            are divided by their keep rate, so each unit's expectation in training is its
            input and eval mode (the identity) sees the scale training saw. False: the authors'
            code, kept units pass unchanged (``features * mask``): the head then trains on
            about a fifth of the feature mass and meets all of it at test time (on digits:
            86.7 % clean accuracy for PDD against 98.1 % rescaled; see ``docs/method.md``).
        rescale_floor: with ``rescale``, kept units are divided by ``max(keep rate, rescale_floor)``
            instead of the keep rate, in [0, 1]. 0 (default) is exact inverted dropout: every
            unit's expectation is its input. Outside a member's priority interval eq. 2's rates
            are at most ``beta`` and can come close to 0, so a kept unit there is multiplied by
            1/keep rate (10 to several hundred at ``beta=0.1``; measured in ``docs/method.md``,
            "How much PDD's rescaling amplifies"); a floor caps that factor at
            ``1 / rescale_floor``, at the price of shrinking the expectation of the units whose
            rate lies below it (by ``keep rate / rescale_floor``).
        sync_statistics: under ``torch.distributed``, all-reduce [u, v] and the counts so every
            rank uses the statistics of the global batch. Needs ``statistics="batch"``:
            per-sample statistics never depend on other samples, so ranks already agree.
            Whether a process group exists is decided at each call.
        check_finite: raise on NaN/inf features. None checks where it is free (CPU tensors,
            eager mode) and skips on accelerators, where the check would wait for the device.

    Shapes:
        ``features``: ``[K, B, C]`` (members, batch, units of the last FC layer), or a sequence
        of K ``[B, C]`` tensors. Output: ``[K, B, C]``, the input's dtype.

    Use it on stacked features, or give it to :class:`~ensemble_diversity.Ensemble`, which
    splits any K classifiers before their final linear layer and applies it in between.

    Attributes:
        priority_counts: buffer ``[K, M]``: how often each interval was each member's priority
            in training mode (once per sample, or per batch with ``statistics="batch"``), a
            diagnostic of how differently the members are steered. Under ``torch.distributed``
            each step's tally is summed over the ranks where it is made, so every rank holds
            the counts of the global batch (and DDP's buffer broadcast changes nothing).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> pdd = PriorityDiversifiedDropout(num_members=3)
        >>> pdd
        PriorityDiversifiedDropout(num_members=3, num_intervals=10, alpha=0.9, beta=0.1, statistics='sample', rescale=True, sync_statistics=False)
        >>> features = torch.rand(3, 8, 512)  # [K, B, C]
        >>> pdd(features).shape
        torch.Size([3, 8, 512])
        >>> rates = pdd.keep_probabilities(features)
        >>> bool(((rates >= 0) & (rates <= 1)).all())
        True
        >>> torch.equal(pdd.eval()(features), features)
        True
    """

    priority_counts: Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        num_members: int,
        num_intervals: int | None = None,
        alpha: float = 0.9,
        beta: float = 0.1,
        *,
        statistics: Statistics = "sample",
        rescale: bool = True,
        rescale_floor: float = 0.0,
        sync_statistics: bool = False,
        check_finite: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 2:
            raise ValueError(f"Expected argument `num_members` to be an integer >= 2 (an ensemble), but got {num_members!r}")
        if num_intervals is None:
            num_intervals = default_num_intervals(num_members)
        if isinstance(num_intervals, bool) or not isinstance(num_intervals, int) or num_intervals <= num_members:
            raise ValueError(
                "Expected argument `num_intervals` to be an integer greater than num_members (eq. 2 gives each "
                f"member its own priority interval), but got num_intervals={num_intervals!r}, num_members={num_members}"
            )
        check_probability(alpha, "alpha")
        check_probability(beta, "beta")
        check_probability(rescale_floor, "rescale_floor")
        if rescale_floor > 0 and not rescale:
            raise ValueError(
                "Expected argument `rescale_floor` to be 0 when rescale=False (it bounds the rescaling, which is off), "
                f"but got rescale_floor={rescale_floor!r}"
            )
        if statistics not in ("sample", "batch"):
            raise ValueError(f"Expected argument `statistics` to be one of ['sample', 'batch'], but got {statistics!r}")
        if sync_statistics and statistics != "batch":
            raise ValueError(
                "Expected argument `statistics` to be 'batch' when sync_statistics=True (per-sample statistics "
                f"already agree across ranks), but got statistics={statistics!r}"
            )
        self.num_members = num_members
        self.num_intervals = num_intervals
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.statistics = statistics
        self.rescale = rescale
        self.rescale_floor = float(rescale_floor)
        self.sync_statistics = sync_statistics
        self.check_finite = check_finite
        self.register_buffer("priority_counts", torch.zeros(num_members, num_intervals, dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"num_members={self.num_members}, num_intervals={self.num_intervals}, alpha={self.alpha}, "
            f"beta={self.beta}, statistics={self.statistics!r}, rescale={self.rescale}, "
            + (f"rescale_floor={self.rescale_floor}, " if self.rescale_floor else "")
            + f"sync_statistics={self.sync_statistics}"
        )

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "num_members": self.num_members,
            "num_intervals": self.num_intervals,
            "alpha": self.alpha,
            "beta": self.beta,
            "statistics": self.statistics,
            "rescale": self.rescale,
        }
        # Stored only when set, so states saved before the option existed (and without it) still load.
        if self.rescale_floor:
            settings["rescale_floor"] = self.rescale_floor
        return settings

    def get_extra_state(self) -> dict[str, Any]:
        return self._settings()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Refuse a state saved with other settings: its counts would describe another PDD."""
        mine = self._settings()
        keys = list(mine) + [key for key in state if key not in mine]
        # A setting stored only when set (rescale_floor) is at its default when absent.
        defaults = {"rescale_floor": 0.0}
        pairs = {key: (mine.get(key, defaults.get(key)), state.get(key, defaults.get(key))) for key in keys}
        differing = {key: pair for key, pair in pairs.items() if pair[0] != pair[1]}
        if differing:
            detail = ", ".join(f"{key}: module has {mine!r}, state has {theirs!r}" for key, (mine, theirs) in differing.items())
            raise ValueError(f"Expected argument `state_dict` to come from a PDD with the same settings, but {detail}")

    def _validated(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        stacked = stack_members(features, "features")
        check_ndim(stacked, "features", 3, "[K, B, C] (members, batch, units)")
        if stacked.shape[0] != self.num_members:
            raise ValueError(
                f"Expected argument `features` to hold num_members={self.num_members} members on its first axis, "
                f"but got K={stacked.shape[0]} (shape {tuple(stacked.shape)})"
            )
        check_nonempty(stacked, "features", 1, "batch")
        check_nonempty(stacked, "features", 2, "unit")
        check_floating(stacked, "features")
        if finite_check_wanted(stacked, self.check_finite):
            check_finite(stacked, "features")
        return stacked

    def priority_statistics(self, features: Tensor | Sequence[Tensor]) -> PriorityStatistics:
        """Intervals, counts N_m^(k), priority intervals t_k and keep rates for ``features`` ``[K, B, C]``.

        Deterministic, and the same in training and eval mode; it does not touch
        :attr:`priority_counts`.
        """
        return _priority_statistics(
            self._validated(features),
            self.num_intervals,
            self.alpha,
            self.beta,
            statistics=self.statistics,
            sync_statistics=self.sync_statistics,
        )

    def keep_probabilities(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        """Eq. 2's keep rate of every unit, ``[K, B, C]``, deterministic: what training mode samples from."""
        return self.priority_statistics(features).keep_rate

    def forward(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        """Training mode: ``features`` with units dropped by a Bernoulli mask drawn from eq. 2; eval mode: ``features``.

        With ``rescale=True`` (default) each kept unit is divided by its keep rate (by
        ``max(keep rate, rescale_floor)``), so its expectation is its input, as in
        :class:`torch.nn.Dropout`; with ``rescale=False`` (the authors' code) it passes unchanged,
        ``features * mask``. Dropped units are 0 either way. Gradients flow to the kept units only
        (the mask and the keep rates are constants).
        """
        stacked = self._validated(features)
        if not self.training:
            return stacked
        return stacked * self._sample_mask(stacked)

    def _sample_mask(self, features: Tensor) -> Tensor:
        """A keep mask ``[K, B, C]`` in ``features.dtype``, rescaled if asked; counts the priorities."""
        stats = _priority_statistics(
            features,
            self.num_intervals,
            self.alpha,
            self.beta,
            statistics=self.statistics,
            sync_statistics=self.sync_statistics,
        )
        mask = torch.bernoulli(stats.keep_rate)
        if self.rescale:
            # A unit with keep rate 0 is never kept, so its 0/0 is replaced by 0.
            mask = mask / stats.keep_rate.clamp_min(max(self.rescale_floor, torch.finfo(stats.keep_rate.dtype).tiny))
        with torch.no_grad():
            tally = torch.zeros_like(self.priority_counts)
            tally.scatter_add_(1, stats.priority_interval, torch.ones_like(stats.priority_interval))
            # Synced statistics give every rank the same priorities already; otherwise each
            # rank saw its own samples, and the global batch's tally is their sum.
            if not self.sync_statistics and _distributed():
                dist.all_reduce(tally, op=dist.ReduceOp.SUM)
            self.priority_counts.add_(tally)
        return mask.to(features.dtype)
