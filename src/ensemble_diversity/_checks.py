"""Input validation shared by every public function.

One error template throughout: name the argument, show what was received, say what was
expected. Errors are raised as ``ValueError`` (wrong value or shape) or ``TypeError`` (wrong
type or dtype), never with ``assert``, which vanishes under ``python -O``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

MemberTensors = Tensor | Sequence[Tensor]
"""Either one stacked tensor ``[K, ...]`` or a sequence of K tensors ``[...]`` of equal shape."""


def stack_members(values: MemberTensors, name: str, *, min_members: int = 2, num_members: int | None = None) -> Tensor:
    """Return ``values`` as one tensor with the members on the first axis.

    Args:
        values: a stacked tensor ``[K, ...]`` or a sequence of K tensors ``[...]``.
        name: the caller's argument name, used in error messages.
        min_members: the smallest K accepted.
        num_members: the K the caller expects (the user's ``num_members=``), or None; a
            mismatch that a transposed ``[B, K, ...]`` layout would explain says so.

    Returns:
        ``[K, ...]``; a stacked input is returned as is (no copy).
    """
    if isinstance(values, Tensor):
        stacked = values
    elif isinstance(values, Sequence) and all(isinstance(v, Tensor) for v in values):
        if len(values) == 0:
            raise ValueError(f"Expected argument `{name}` to hold at least {min_members} member tensors, but got an empty sequence")
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(
                f"Expected the member tensors in `{name}` to share one shape, but got shapes "
                f"{[tuple(v.shape) for v in values]}"
            )
        stacked = torch.stack(list(values))
    else:
        raise TypeError(
            f"Expected argument `{name}` to be a tensor [K, ...] or a sequence of K tensors, "
            f"but got {type(values).__name__}"
        )
    if num_members is not None:
        check_num_members(stacked, name, num_members)
    if stacked.dim() == 0 or stacked.shape[0] < min_members:
        got = "a 0-d tensor" if stacked.dim() == 0 else f"K={stacked.shape[0]} (shape {tuple(stacked.shape)})"
        raise ValueError(f"Expected argument `{name}` to hold at least {min_members} members on its first axis, but got {got}")
    return stacked


def check_num_members(stacked: Tensor, name: str, num_members: int) -> None:
    """Raise unless the first axis of ``stacked`` holds ``num_members`` members, naming a likely transposition."""
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ValueError(f"Expected argument `num_members` to be a positive integer or None, but got {num_members!r}")
    if stacked.dim() == 0 or stacked.shape[0] != num_members:
        got = "a 0-d tensor" if stacked.dim() == 0 else f"{stacked.shape[0]} (shape {tuple(stacked.shape)})"
        hint = ""
        if stacked.dim() > 1 and stacked.shape[1] == num_members:
            hint = f"; its second axis holds {num_members}: if it is [B, K, ...], pass {name}.transpose(0, 1)"
        raise ValueError(
            f"Expected argument `{name}` to hold num_members={num_members} members on its first axis "
            f"([K, B, ...], members first), but got {got}{hint}"
        )


def check_ndim(value: Tensor, name: str, ndim: int, layout: str) -> None:
    """Raise unless ``value`` has ``ndim`` dimensions; ``layout`` names them, e.g. ``"[K, B, C]"``."""
    if value.dim() != ndim:
        raise ValueError(f"Expected argument `{name}` to have shape {layout}, but got shape {tuple(value.shape)}")


def check_min_dim(value: Tensor, name: str, ndim: int, layout: str) -> None:
    """Raise unless ``value`` has at least ``ndim`` dimensions; ``layout`` names them."""
    if value.dim() < ndim:
        raise ValueError(f"Expected argument `{name}` to have shape {layout}, but got shape {tuple(value.shape)}")


def check_nonempty(value: Tensor, name: str, axis: int, axis_name: str) -> None:
    """Raise if axis ``axis`` of ``value`` has length zero (an empty batch, say)."""
    if value.shape[axis] == 0:
        raise ValueError(f"Expected argument `{name}` to have a non-empty {axis_name} axis, but got shape {tuple(value.shape)}")


def check_floating(value: Tensor, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` has a floating-point dtype."""
    if not torch.is_floating_point(value):
        raise TypeError(f"Expected argument `{name}` to have a floating-point dtype, but got {value.dtype}")


class NonFiniteError(ValueError):
    """NaN or inf where the library needs finite values: what a diverging training run meets first.

    A ``ValueError``, so ``except ValueError`` still catches it; a training loop can catch this
    one alone to stop a diverging run with its own message.
    """


def check_finite(value: Tensor, name: str) -> None:
    """Raise if ``value`` holds NaN or inf.

    This reads one boolean back to the host, so callers on a hot path decide when to pay for
    it (see :func:`finite_check_wanted`).
    """
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteError(f"Expected argument `{name}` to hold only finite values, but it holds NaN or inf")


def finite_check_wanted(value: Tensor, setting: bool | None) -> bool:
    """Whether a NaN/inf check should run on ``value``.

    ``setting`` None means "where it is free": in eager mode on CPU tensors, never on an
    accelerator (the check would synchronise with the host) nor while ``torch.compile`` traces.
    """
    if torch.compiler.is_compiling():
        return False
    if setting is None:
        return value.device.type == "cpu"
    return setting


def check_eps(eps: float) -> None:
    """Raise unless ``eps`` (a lower clamp on gradient norms) is a positive finite number."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0.0 < eps < math.inf):
        raise ValueError(f"Expected argument `eps` to be a positive finite number, but got {eps!r}")


def check_probability(value: float, name: str) -> None:
    """Raise unless ``value`` is a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected argument `{name}` to be a number in [0, 1], but got {value!r}")


def check_labels(targets: Tensor, name: str, batch: int) -> None:
    """Raise unless ``targets`` is an integer tensor ``[batch]`` of class indices."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"Expected argument `{name}` to be a tensor of class indices, but got {type(targets).__name__}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"Expected argument `{name}` to have an integer dtype (class indices), but got {targets.dtype}")
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise ValueError(f"Expected argument `{name}` to have shape [{batch}], but got shape {tuple(targets.shape)}")


def check_label_range(targets: Tensor, name: str, num_classes: int) -> None:
    """Raise unless every class index in ``targets`` lies in ``[0, num_classes)``.

    It reads values back to the host, so callers run it only where checks are wanted
    (:func:`finite_check_wanted`).
    """
    if targets.numel() and (bool((targets < 0).any()) or bool((targets >= num_classes).any())):
        raise ValueError(
            f"Expected argument `{name}` to hold class indices in [0, {num_classes}), but got values "
            f"from {int(targets.min())} to {int(targets.max())}"
        )


def check_member_logits(
    member_logits: MemberTensors,
    targets: Tensor,
    *,
    min_members: int,
    min_classes: int = 1,
    finite: bool | None = None,
    num_members: int | None = None,
) -> Tensor:
    """Validate members' outputs ``[K, B, L]`` with their class-index ``targets`` ``[B]``.

    ``finite`` is the caller's ``check_finite`` setting (see :func:`finite_check_wanted`);
    ``num_members`` the K the caller expects, or None.

    Returns:
        ``member_logits`` stacked to ``[K, B, L]``.
    """
    logits = stack_members(member_logits, "member_logits", min_members=min_members, num_members=num_members)
    check_ndim(logits, "member_logits", 3, "[K, B, L] (members, batch, classes)")
    check_floating(logits, "member_logits")
    check_nonempty(logits, "member_logits", 1, "batch")
    if logits.shape[2] < min_classes:
        raise ValueError(
            f"Expected argument `member_logits` to have at least {min_classes} classes, but got shape {tuple(logits.shape)}"
        )
    # Labels that match the first axis and not the second point at the logits' layout, not the labels.
    if (
        isinstance(targets, Tensor)
        and targets.dim() == 1
        and targets.shape[0] != logits.shape[1]
        and targets.shape[0] == logits.shape[0]
    ):
        raise ValueError(
            f"Expected argument `member_logits` to have layout [K, B, L] (members first), but its batch axis "
            f"holds {logits.shape[1]} while `targets` holds {targets.shape[0]} labels, as many as its first axis "
            f"(shape {tuple(logits.shape)}): if it is [B, K, L], pass member_logits.transpose(0, 1)"
        )
    check_labels(targets, "targets", logits.shape[1])
    if finite_check_wanted(logits, finite):
        check_finite(logits, "member_logits")
        check_label_range(targets, "targets", logits.shape[2])
    return logits


def check_distinct_members(models: Sequence[nn.Module]) -> None:
    """Refuse one module object twice among the members; warn when members share parameters.

    ``[model] * 3`` is one model three times: DEG would compare a model with itself and PDD
    would steer one model three ways. Shared parameters (a shared body, say) may be meant, so
    they only warn.
    """
    seen: dict[int, int] = {}
    for k, model in enumerate(models):
        first = seen.setdefault(id(model), k)
        if first != k:
            raise ValueError(
                f"Expected argument `models` to hold K distinct modules, but `models[{k}]` is `models[{first}]` "
                "(the same object, as in [model] * K); build each member separately, e.g. "
                "[make_model() for _ in range(K)] or copy.deepcopy(model) (then re-initialise it)"
            )
    owners: dict[int, int] = {}
    for k, model in enumerate(models):
        for name, parameter in model.named_parameters():
            owner = owners.setdefault(id(parameter), k)
            if owner != k:
                warnings.warn(
                    f"`models[{k}]` shares its parameter {name!r} with `models[{owner}]`: the members are not "
                    "independent models (intended for a shared body; otherwise build each member separately)",
                    UserWarning,
                    stacklevel=3,
                )
                return


def check_batch_axis(models: Iterable[nn.Module], x: Tensor) -> None:
    """Name a missing batch axis: ``x`` with one dimension less than the members' first layer takes.

    ``nn.Conv2d`` accepts an unbatched ``[C, H, W]`` and ``nn.Linear`` a ``[F]``, so without this
    one image runs as a batch of something else and the error surfaces later, blaming ``y`` or
    the head. The first ``nn.Linear`` or convolution registered in the first model decides.
    """
    for model in models:
        for module in model.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                batched, layer = len(module.kernel_size) + 2, type(module).__name__
            elif isinstance(module, nn.Linear):
                batched, layer = 2, "Linear"  # a SplitHead is the model's own nn.Linear
            else:
                continue
            if x.dim() == batched - 1:
                raise ValueError(
                    f"Expected argument `x` to have a batch axis, [B, ...] with {batched} dimensions for the members' "
                    f"first layer (nn.{layer}), but got shape {tuple(x.shape)}: for one sample, pass "
                    "x.unsqueeze(0) (and its label as a [1] tensor)"
                )
            return
        return


def check_member_placement(models: Iterable[nn.Module], x: Tensor) -> None:
    """Name the first member whose parameters are on another device, or of another dtype, than ``x``."""
    for k, model in enumerate(models):
        parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
        if parameter is None:
            continue
        if parameter.device != x.device:
            raise ValueError(
                f"Expected every model in `models` on the device of `x` ({x.device}), but the parameters "
                f"of `models[{k}]` are on {parameter.device}; move it with .to(x.device)"
            )
        # Under autocast the members' float32 weights meet lower-precision activations by design;
        # integer inputs (token ids, say) are the members' business.
        if x.is_floating_point() and parameter.dtype != x.dtype and not _autocasting(x.device):
            raise TypeError(
                f"Expected every model in `models` to have the dtype of `x` ({x.dtype}), but the parameters "
                f"of `models[{k}]` are {parameter.dtype}; convert it with .to(x.dtype)"
            )


def _autocasting(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type (False for types autocast does not know, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:
        return False
