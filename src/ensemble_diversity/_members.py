"""What a penalty's ``models`` argument may be, resolved once for every penalty (DEG, GAL and the peers).

``models`` is one of:

- a sequence (or ``nn.ModuleList``) of K >= 2 modules, each run on its own;
- an :class:`~ensemble_diversity.Ensemble` (PDD between bodies and heads in training mode);
- an :class:`~ensemble_diversity.EnsembleMembers`, alone or inside ``DistributedDataParallel``:
  every forward then goes through the outermost wrapper, so DDP all-reduces the gradients.
  (``nn.DataParallel`` is not taken: it would split the per-member inputs ``[K, B, ...]``
  along the member axis);
- any of these inside ``torch.compile``: the compiled wrapper is peeled off and the module
  beneath runs eagerly, because torch.compile does not support the double backward that trains
  on a gradient penalty (with ``create_graph=False`` a compiled ``EnsembleMembers`` beneath
  DDP is called as is).

An ``Ensemble`` inside DDP is refused with the fix: DDP syncs gradients only for a forward
through itself, and calling the members past it would train each rank on its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ._checks import check_distinct_members, check_member_placement
from .ensemble import Ensemble, EnsembleMembers


class ResolvedMembers(NamedTuple):
    """``models`` resolved by :func:`resolve_members`."""

    modules: list[nn.Module]
    """The K member modules (inside any wrapper): for checks of their mode, devices and layers."""
    ensemble: Ensemble | None
    """The ``Ensemble`` when ``models`` is one (wrapped or not), else None."""
    call: nn.Module | None
    """What to call for the members' outputs: the ``EnsembleMembers``, or the outermost wrapper around it that
    every forward must go through (DDP); else None."""

    @property
    def num_members(self) -> int:
        return len(self.modules)

    def member_logits(self, inputs: Tensor | Sequence[Tensor], *, per_member: bool) -> list[Tensor]:
        """The K members' outputs on ``inputs``: ``[B, ...]`` for all, or (``per_member``) ``[K, B, ...]`` /
        K tensors, member k on ``inputs[k]``. A list of K tensors ``[B, L]`` (unchecked)."""
        if self.call is not None:
            return list(self.call(_stacked(inputs), per_member=per_member).logits.unbind(0))
        if self.ensemble is not None:
            return list(self.ensemble.member_logits(_stacked(inputs), per_member=per_member).unbind(0))
        if isinstance(inputs, Tensor) and not per_member:
            check_member_placement(self.modules, inputs)
            return [model(inputs) for model in self.modules]
        check_member_placement(self.modules, inputs[0])
        return [model(member_input) for model, member_input in zip(self.modules, inputs)]


def _stacked(inputs: Tensor | Sequence[Tensor]) -> Tensor:
    return inputs if isinstance(inputs, Tensor) else torch.stack(list(inputs))


def resolve_members(models: Sequence[nn.Module] | nn.Module, *, min_members: int = 2, double_backward: bool = True) -> ResolvedMembers:
    """Resolve a penalty's ``models`` (see the module docstring); raise naming the fix otherwise.

    Args:
        models: a sequence of K modules, an ``Ensemble``, or an ``EnsembleMembers`` (wrapped in
            DDP or ``torch.compile`` as the caller likes).
        min_members: the smallest K accepted (2 for a pairwise penalty).
        double_backward: whether the caller will differentiate the input gradients again
            (``create_graph=True``). torch.compile cannot (its aot_autograd refuses double
            backward), so ``torch.compile`` layers on the outside are peeled off (the module
            beneath runs eagerly) and one beneath DDP, which cannot be peeled, is refused.
    """
    chain: list[nn.Module] = []  # the wrappers, from the outside in
    inner: object = models
    while isinstance(inner, nn.Module):
        if isinstance(inner, DistributedDataParallel):
            chain.append(inner)
            inner = inner.module
        elif _compiled(inner):
            chain.append(inner)
            inner = inner._orig_mod
        else:
            break
    while chain and _compiled(chain[0]):
        chain.pop(0)
    if double_backward and any(_compiled(wrapper) for wrapper in chain):
        raise TypeError(
            f"Expected argument `models` without torch.compile inside {type(chain[0]).__name__}, because torch.compile "
            "does not support the double backward that trains on a gradient penalty; wrap the uncompiled "
            f"EnsembleMembers(ensemble) in {type(chain[0]).__name__}, or pass create_graph=False to only measure the penalty"
        )
    if isinstance(inner, EnsembleMembers):
        resolved = ResolvedMembers(list(inner.ensemble.members), inner.ensemble, chain[0] if chain else inner)
    elif isinstance(inner, Ensemble):
        if chain:
            name = type(chain[0]).__name__
            raise TypeError(
                f"Expected argument `models` to be an EnsembleMembers inside {name}, but got an Ensemble inside it: "
                f"{name} syncs gradients only for a forward through itself, and an Ensemble's forward averages "
                f"probabilities, which a penalty cannot use; wrap EnsembleMembers(ensemble) instead: "
                f"{name}(EnsembleMembers(ensemble))"
            )
        resolved = ResolvedMembers(list(inner.members), inner, None)
    elif isinstance(inner, nn.Module) and not isinstance(inner, nn.ModuleList):
        raise TypeError(
            "Expected argument `models` to be a sequence of K >= 2 member modules, an Ensemble, or "
            "EnsembleMembers(ensemble) (inside DistributedDataParallel for distributed training), but got a single "
            f"{type(inner).__name__}" + "".join(f" inside {type(wrapper).__name__}" for wrapper in reversed(chain))
        )
    elif isinstance(inner, (Sequence, nn.ModuleList)):
        members = list(inner)
        for k, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise TypeError(f"Expected every entry of `models` to be an nn.Module, but `models[{k}]` is {type(member).__name__}")
        check_distinct_members(members)
        resolved = ResolvedMembers(members, None, None)
    else:
        raise TypeError(
            f"Expected argument `models` to be a sequence of K >= 2 member modules or an Ensemble, but got {type(inner).__name__}"
        )
    if resolved.num_members < min_members:
        raise ValueError(
            f"Expected argument `models` to hold at least {min_members} members (a gradient penalty compares pairs), "
            f"but got {resolved.num_members}"
        )
    return resolved


def _compiled(module: nn.Module) -> bool:
    """Whether ``module`` is ``torch.compile``'s wrapper (an ``OptimizedModule``, which keeps the module as ``_orig_mod``)."""
    return isinstance(module.__dict__.get("_modules", {}).get("_orig_mod"), nn.Module)


def warn_if_not_training(resolved: ResolvedMembers, caller: str) -> None:
    """Warn when a penalty that will be trained on meets members (or PDD) in eval mode.

    In eval mode BatchNorm uses its running statistics, dropout and PDD are off: a training
    step would silently train another model than the user meant.
    """
    evaluating = [k for k, model in enumerate(resolved.modules) if not model.training]
    pdd = resolved.ensemble.pdd if resolved.ensemble is not None else None
    if evaluating or (pdd is not None and not pdd.training):
        what = f"`models[{evaluating[0]}]`" if evaluating else "the Ensemble's PDD"
        warnings.warn(
            f"{caller} with create_graph=True (to train on the penalty) got {what} in eval mode: BatchNorm uses its "
            "running statistics and PDD and dropout are off. Call .train() on the ensemble before training steps, "
            "or pass create_graph=False to only measure the penalty",
            UserWarning,
            stacklevel=4,
        )
