"""The attacked ensemble: its members' logits ``[K, B, L]`` of an input, and its own decision.

Every attack in this package is a function of the members' logits, so an :class:`Ensemble`, a
list of models and a user's own function share one code path (:func:`as_members`). Whatever
objective an attack climbs, which images are still robust and whether an iterate fooled the
ensemble are judged by the ensemble's own decision (:meth:`Members.correct`): the argmax of the
averaged probabilities for the paper's ensemble, the argmax of the averaged logits only for an
``Ensemble(..., combine="logits")`` or where the caller asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Union

import torch
from torch import Tensor, nn

from .._checks import check_finite, check_floating, check_label_range, check_labels, check_member_placement
from ..ensemble import Ensemble

Combine = Literal["probabilities", "logits"]
_COMBINES = ("probabilities", "logits")

ModelLike = Union[Ensemble, Sequence[nn.Module], Callable[[Tensor], Tensor], "Members"]
"""What the attacks take: an :class:`~ensemble_diversity.Ensemble`, a sequence of K models each
mapping ``[B, ...]`` to logits ``[B, L]``, a function mapping ``[B, ...]`` to the members'
logits ``[K, B, L]``, or a :class:`Members` built from one of these."""


class Members:
    """The members under attack: their logits ``[K, B, L]`` of an input and the ensemble's decision.

    Build it with :func:`as_members`. Calling it on ``x`` ``[B, ...]`` returns the members'
    logits ``[K, B, L]``; the first call fixes K and L, and a later call that returns another
    K or L raises (a function whose member count changes between calls is not one ensemble).

    Args:
        logits_of: ``x`` ``[B, ...]`` -> ``[K, B, L]``.
        modules: the modules :meth:`evaluating` puts in eval mode (empty for a plain function).
        combine: the ensemble's decision: ``"probabilities"`` (argmax of the averaged softmax,
            the paper's ensemble) or ``"logits"`` (argmax of the averaged logits).
        num_members: the K the caller expects, or None.
    """

    def __init__(self, logits_of: Callable[[Tensor], Tensor], modules: Sequence[nn.Module], *, combine: Combine, num_members: int | None) -> None:
        if combine not in _COMBINES:
            raise ValueError(f"Expected argument `combine` to be one of {list(_COMBINES)} or None, but got {combine!r}")
        self._logits_of = logits_of
        self.modules = tuple(modules)
        self.combine: Combine = combine
        self.num_members = num_members
        self.num_classes: int | None = None

    def __call__(self, x: Tensor) -> Tensor:
        """The members' logits ``[K, B, L]`` of ``x`` ``[B, ...]``, their shape checked against ``x`` and earlier calls."""
        logits = self._logits_of(x)
        if not isinstance(logits, Tensor):
            raise TypeError(f"Expected the model to return the members' logits as a tensor [K, B, L], but it returned {type(logits).__name__}")
        if logits.dim() == 2:
            raise ValueError(
                f"Expected the model to return the members' logits [K, B, L], but it returned shape {tuple(logits.shape)}: "
                "one model's logits [B, L]? Pass a list of models, or a function returning the members' logits stacked"
            )
        if logits.dim() != 3 or logits.shape[1] != x.shape[0]:
            transposed = logits.dim() == 3 and logits.shape[0] == x.shape[0]
            raise ValueError(
                f"Expected the model to return the members' logits [K, B={x.shape[0]}, L] (members first), but it returned shape "
                f"{tuple(logits.shape)}" + (": if it is [B, K, L], return logits.transpose(0, 1)" if transposed else "")
            )
        if self.num_members is None:
            self.num_members = logits.shape[0]
        if self.num_classes is None:
            self.num_classes = logits.shape[2]
        if logits.shape[0] != self.num_members or logits.shape[2] != self.num_classes:
            raise ValueError(
                f"Expected the model to return logits of K={self.num_members} members and L={self.num_classes} classes on every call, "
                f"but it returned shape {tuple(logits.shape)}"
            )
        return logits

    def check(self, x: Tensor, labels: Tensor) -> Tensor:
        """The members' logits ``[K, B, L]`` of ``x``, validated with ``labels`` ``[B]`` (dtype, shape, finite values, label range)."""
        check_labels(labels, "labels", x.shape[0])
        check_labels_device(labels, x)
        logits = self(x)
        check_floating(logits, "member_logits")
        check_finite(logits, "member_logits")
        check_label_range(labels, "labels", logits.shape[2])
        return logits

    def predict(self, logits: Tensor) -> Tensor:
        """``[B]``: the ensemble's decision from its members' logits ``[K, B, L]``."""
        if self.combine == "probabilities":
            return torch.softmax(logits, dim=-1).mean(dim=0).argmax(dim=-1)
        return logits.mean(dim=0).argmax(dim=-1)

    def correct(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``[B]`` bool: the ensemble's decision from ``logits`` ``[K, B, L]`` is the label."""
        return self.predict(logits) == labels

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[Members]:
        """Every module in eval mode (PDD off, BatchNorm on running statistics); each module's mode as before afterwards."""
        training = {module: module.training for wrapped in self.modules for module in wrapped.modules()}
        for wrapped in self.modules:
            wrapped.eval()
        try:
            yield self
        finally:
            for module, was_training in training.items():
                module.training = was_training


def as_members(model: ModelLike, *, combine: Combine | None = None, num_members: int | None = None) -> Members:
    """The :class:`Members` of ``model`` (see :data:`ModelLike`).

    ``combine`` None takes an ``Ensemble``'s own ``combine`` and ``"probabilities"`` (the paper's
    ensemble) for anything else. A list of models is run model by model, never rebuilt into an
    ``Ensemble`` (which would split the models at their heads): an ``Ensemble`` of the same
    models in eval mode gives the same logits.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> models = [nn.Linear(4, 3) for _ in range(2)]
        >>> members = as_members(models)
        >>> members(torch.rand(5, 4)).shape
        torch.Size([2, 5, 3])
    """
    if num_members is not None and (isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1):
        raise ValueError(f"Expected argument `num_members` to be a positive integer or None, but got {num_members!r}")
    if isinstance(model, Members):
        if combine is not None and combine != model.combine:
            raise ValueError(f"Expected argument `combine` to be None or the Members' own {model.combine!r}, but got {combine!r}")
        if num_members is not None and model.num_members is not None and num_members != model.num_members:
            raise ValueError(f"Expected argument `num_members` to match the Members' K={model.num_members}, but got {num_members}")
        return model
    if isinstance(model, Ensemble):
        if num_members is not None and num_members != model.num_members:
            raise ValueError(f"Expected argument `num_members` to match the Ensemble's K={model.num_members}, but got {num_members}")
        return Members(model.member_logits, [model], combine=combine or model.combine, num_members=model.num_members)
    if isinstance(model, (Sequence, nn.ModuleList)) and not isinstance(model, str):
        models = list(model)
        if not models or not all(isinstance(m, nn.Module) for m in models):
            raise TypeError(
                "Expected argument `model` to be an Ensemble, a non-empty sequence of nn.Module, or a function returning "
                f"the members' logits [K, B, L], but got a sequence of {[type(m).__name__ for m in models]}"
            )
        if num_members is not None and num_members != len(models):
            raise ValueError(f"Expected argument `num_members` to match the {len(models)} models given, but got {num_members}")

        def logits_of(x: Tensor) -> Tensor:
            check_member_placement(models, x)
            outputs = [m(x) for m in models]
            for index, output in enumerate(outputs):
                if not isinstance(output, Tensor) or output.shape != outputs[0].shape or output.dim() != 2:
                    got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
                    raise ValueError(f"Expected every model of `model` to return logits [B, L] of one shape, but model {index} returned {got}")
            return torch.stack(outputs)

        return Members(logits_of, models, combine=combine or "probabilities", num_members=len(models))
    if callable(model):
        modules = [model] if isinstance(model, nn.Module) else []
        return Members(model, modules, combine=combine or "probabilities", num_members=num_members)
    raise TypeError(
        "Expected argument `model` to be an Ensemble, a sequence of nn.Module, or a function returning the members' logits "
        f"[K, B, L], but got {type(model).__name__}"
    )


def check_labels_device(labels: Tensor, images: Tensor) -> None:
    """Raise unless ``labels`` lie on ``images``' device (before either is indexed with the other's indices)."""
    if labels.device != images.device:
        raise ValueError(f"Expected argument `labels` on the device of `images` ({images.device}), but it is on {labels.device}")
