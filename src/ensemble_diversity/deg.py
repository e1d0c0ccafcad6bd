"""Dispersed Ensemble Gradients (DEG), eqs. 3-4 and Algorithm 2 of Huang et al., AAAI 2021,
"Adversarial Defence by Diversified Simultaneous Training of Deep Ensembles".

DEG penalises members whose loss gradients with respect to the *input* point the same way, so
that an adversarial perturbation found on one member transfers less to the others:

.. math::

    \\mathcal{L}_g = \\sum_{1 \\le i < j \\le K}
        \\frac{\\langle g_i, g_j \\rangle}{\\lVert g_i \\rVert \\, \\lVert g_j \\rVert},
    \\qquad g_k = \\partial \\mathcal{L}_{CE}(\\hat{y}_k, y) / \\partial x
    \\qquad \\text{(eq. 3)}

    \\mathcal{L}_{ours} = \\mathcal{L}_{ECE} + \\lambda \\, \\mathcal{L}_g
    \\qquad \\text{(eq. 4)}

The penalty depends on the input gradients, so training with it needs second derivatives
(double backprop): :func:`member_input_gradients` builds the gradients with ``create_graph=True``
so that ``penalty.backward()`` reaches every member's parameters.

What the authors' code does where the paper is silent (github.com/ALIS-Lab/AAAI2021-PDD,
``train_deg.py``), and what this module does:

- The cosine is signed (not its absolute value), computed **per sample** over the flattened
  input gradient, **averaged over the batch**, then summed over the K(K-1)/2 member pairs.
  Eq. 3 is written for a single input; we follow the code.
- lambda = 0.01 in eq. 4 (their ``--beta``).
- Their CE term is the **mean** over members (each member's CE divided by K) where eq. 1 sums.
  Scaling a member's loss does not turn its gradient, so the penalty is the same either way,
  but the balance of eq. 4 is not: ``out.losses.mean() + 0.01 * out.penalty`` reproduces
  their objective.
- They add 1e-64 to the product of the norms to avoid dividing by zero; 1e-64 is below the
  smallest float32 number and rounds to 0, so a zero gradient gives 0/0 = NaN there. We clamp
  each norm at ``eps`` instead (see :func:`ensemble_diversity._pairwise.pairwise_cosines`): a
  zero gradient has cosine 0 with every member and a finite gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity._checks import (
    MemberTensors,
    NonFiniteError,
    check_batch_axis,
    check_eps,
    check_finite,
    check_floating,
    check_label_range,
    check_labels,
    check_min_dim,
    check_ndim,
    check_nonempty,
    finite_check_wanted,
    stack_members,
)
from ensemble_diversity._members import resolve_members, warn_if_not_training
from ensemble_diversity._pairwise import pairwise_cosines

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(logits [B, ...], y) -> scalar``, one member's loss on the batch."""


class GradientPenalty(NamedTuple):
    """What :func:`deg_penalty` and :func:`ensemble_diversity.gal.gal_penalty` return.

    All three come from the same forward pass and keep their autograd graph, so the training
    objective (eq. 4) needs no second forward.
    """

    penalty: Tensor
    """Scalar: the gradient-diversity penalty (eq. 3 for DEG, GAL for GAL)."""
    logits: Tensor
    """``[K, B, L]`` (members, batch, classes): each member's output."""
    losses: Tensor
    """``[K]``: each member's ``loss_fn(logits[k], y)``."""


def dispersed_gradient_loss(grads: MemberTensors, *, eps: float = 1e-12, num_members: int | None = None) -> Tensor:
    """Sum over member pairs of the cosine between their input gradients (eq. 3).

    The cosine is taken per sample over the flattened input gradient, averaged over the batch
    (as in the authors' code), then summed over the ``P = K(K-1)/2`` pairs, so the value lies
    in ``[-P, P]``: ``P`` when all members' gradients point the same way, negative when they
    oppose each other.

    Args:
        grads: ``[K, B, ...]`` (members, batch, any input dimensions) or a sequence of K
            tensors ``[B, ...]``: each member's loss gradient with respect to the input.
        eps: gradient norms are clamped at ``eps`` from below, so a zero gradient has cosine 0
            with every member (never NaN) and a finite gradient.
        num_members: the ensemble size K, when the caller knows it: checked against the first
            axis, so a transposed ``[B, K, ...]`` input is reported instead of silently
            giving a wrong value. None skips the check.

    Returns:
        Scalar; the batch axis is averaged, the pair axis summed.

    Example:
        >>> g = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]], [[0.0, 3.0]]])  # K=3, B=1
        >>> dispersed_gradient_loss(g)  # cos 1 + cos 0 + cos 0
        tensor(1.)
    """
    check_eps(eps)
    return _dispersion(_validated_gradients(grads, "grads", num_members), eps)


def _dispersion(grads: Tensor, eps: float) -> Tensor:
    return pairwise_cosines(grads, eps).mean(dim=0).sum()


def member_inputs(x: Tensor, num_members: int) -> Tensor:
    """``[K, B, ...]``: one input per member, each equal to ``x`` ``[B, ...]``, for one-pass gradients.

    Feed ``inputs[k]`` to member k and pass ``inputs`` to
    ``member_input_gradients(losses, inputs, per_member=True)``: because no two members share
    an input, the K input gradients come from **one** backward pass of the summed losses. With
    one shared input, each member's gradient needs its own pass, and when the losses share
    autograd nodes (stacked logits under one ``cross_entropy`` call, say) every one of those K
    passes runs back through all K members.

    No data is copied (the K inputs are an expanded view of ``x``). If ``x`` does not require
    grad, the result is a new leaf that does, and ``x`` is left untouched; if it does (it is the
    output of a trainable module), the result is a view of it, so gradients also reach ``x``.

    Args:
        x: ``[B, ...]`` (batch, input dimensions), floating.
        num_members: K >= 1.

    Example:
        >>> x = torch.ones(2, 3)
        >>> inputs = member_inputs(x, 4)
        >>> inputs.shape, inputs.requires_grad, x.requires_grad
        (torch.Size([4, 2, 3]), True, False)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected argument `x` to be a tensor [B, ...], but got {type(x).__name__}")
    check_floating(x, "x")
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ValueError(f"Expected argument `num_members` to be an integer >= 1, but got {num_members!r}")
    if x.requires_grad:
        return x.unsqueeze(0).expand(num_members, *x.shape)
    return x.detach().unsqueeze(0).expand(num_members, *x.shape).requires_grad_(True)


def member_input_gradients(
    losses: MemberTensors, inputs: Tensor, *, create_graph: bool = True, per_member: bool = False
) -> Tensor:
    """Gradient of each member's scalar loss with respect to its input.

    Args:
        losses: ``[K]`` or a sequence of K scalar tensors, each computed from ``inputs``.
        inputs: with ``per_member=False``, the ``[B, ...]`` input all members were run on: one
            backward pass per member. With ``per_member=True``, ``[K, B, ...]`` from
            :func:`member_inputs`, member k having been run on ``inputs[k]``: one backward pass
            for all K (the faster way; see :func:`member_inputs`). A floating tensor that
            required grad when the losses were computed.
        create_graph: keep the graph of the gradients so that a penalty built on them can be
            differentiated with respect to every member's parameters (double backprop). Pass
            False when the gradients are only measured (they come back detached).
        per_member: whether ``inputs`` holds one input per member (see ``inputs``). Member k's
            loss must then depend on ``inputs[k]`` only, which holds for separate members (PDD
            included: its keep rates are computed from detached features).

    Returns:
        ``[K, B, ...]``: ``result[k] = d losses[k] / d inputs`` (or ``/ d inputs[k]``). The
        graph of ``losses`` is kept, so ``losses`` can still be back-propagated afterwards.

    Raises:
        ValueError: if ``inputs`` does not require grad, if a loss does not depend on
            ``inputs`` (its gradient would silently be zero, which hides a wiring mistake; with
            ``per_member=True`` this is detected for the losses together, not one by one), or
            if ``per_member=True`` and ``inputs`` is not ``[K, ...]``.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> member_input_gradients([(x**2).sum(), (3 * x).sum()], x)
        tensor([[[2., 4.]],
        <BLANKLINE>
                [[3., 3.]]], grad_fn=<StackBackward0>)
        >>> inputs = member_inputs(torch.tensor([[1.0, 2.0]]), 2)
        >>> member_input_gradients([(inputs[0] ** 2).sum(), (3 * inputs[1]).sum()], inputs, per_member=True)
        tensor([[[2., 4.]],
        <BLANKLINE>
                [[3., 3.]]], grad_fn=<...>)
    """
    loss_list = _loss_list(losses, "losses")
    if per_member:
        return _per_member_gradients(loss_list, inputs, create_graph, "inputs")
    return _gradients(loss_list, inputs, create_graph, "inputs", lambda k: f"member {k}'s loss in `losses`")


def deg_penalty(
    models: Sequence[nn.Module] | nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    create_graph: bool = True,
    penalty_fraction: float = 1.0,
) -> GradientPenalty:
    """DEG penalty (eq. 3) of an ensemble on one batch, with the members' logits and losses.

    Runs one forward per member, computes each member's loss ``loss_fn(logits_k, y)`` and its
    gradient with respect to ``x`` (Algorithm 2, lines 1-4) and returns
    :func:`dispersed_gradient_loss` of those gradients (line 5). Eq. 4 is then one line:

    >>> _ = torch.manual_seed(0)
    >>> models = [nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))]
    >>> x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    >>> out = deg_penalty(models, x, y)
    >>> loss = out.losses.mean() + 0.01 * out.penalty  # eq. 4 as in the authors' code
    >>> loss.backward()
    >>> out.logits.shape, out.losses.shape, x.requires_grad
    (torch.Size([2, 5, 3]), torch.Size([2]), False)
    >>> bool(-1.0 <= out.penalty <= 1.0)  # K=2: one pair
    True

    With an :class:`~ensemble_diversity.Ensemble` holding PDD, the same call is PDD+DEG, the
    paper's full method: each member runs once, through PDD in training mode, and
    ``out.losses`` are the dropped members' losses (Algorithm 2 on the outputs of Algorithm 1).

    Args:
        models: K >= 2 modules (architectures may differ), each mapping ``x`` to logits
            ``[B, L]`` of the same shape, or an :class:`~ensemble_diversity.Ensemble` of them, or
            (for ``DistributedDataParallel`` or ``torch.compile``) an
            :class:`~ensemble_diversity.EnsembleMembers` of it inside the wrapper: every forward
            then goes through the wrapper, so DDP all-reduces the gradients. An ``Ensemble``
            inside DDP is refused (its gradients would not be synced). A ``torch.compile``
            wrapper is peeled off and the module beneath runs eagerly: torch.compile does not
            support double backward. The same module twice is refused.
        x: ``[B, ...]`` (batch, input dimensions), floating. It is never modified and its
            ``requires_grad`` flag is left as it was: if it does not require grad, a detached
            copy that does is differentiated instead; if it does (e.g. it is itself the output
            of a trainable module), it is used as is, and ``backward()`` on the penalty also
            reaches it.
        y: targets passed to ``loss_fn``. With the default cross-entropy: class indices ``[B]``
            or class probabilities of the logits' shape.
        loss_fn: ``loss_fn(logits_k, y) -> scalar`` for one member; must reduce over the batch.
        create_graph: see :func:`member_input_gradients`; False gives a penalty without graph
            (for measuring), while ``logits`` and ``losses`` keep theirs.
        penalty_fraction: the share of the batch the penalty is computed on, in (0, 1]: its
            first ``n = ceil(penalty_fraction * B)`` samples (shuffle the batches). The cosine
            of eq. 3 is a mean over samples, so a random sub-batch estimates it without bias,
            and double backprop, the penalty's cost, runs on n samples only; the other samples
            take a plain forward (two forwards per member in all: BatchNorm in training mode,
            and PDD with ``statistics="batch"``, then work per part). ``logits`` and
            ``losses`` still cover the whole batch.

    Returns:
        :class:`GradientPenalty` ``(penalty, logits [K, B, L], losses [K])``.

    Warns (``UserWarning``) when ``create_graph`` is True and a member or PDD is in eval mode:
    a training step would then train with BatchNorm's running statistics and without PDD.

    Notes:
        The per-sample gradient of a batch-reduced loss is that sample's own gradient only
        when samples do not interact in the forward pass: BatchNorm in training mode couples
        them, exactly as it did in the authors' ResNets.
    """
    return _gradient_penalty(models, x, y, loss_fn, create_graph, lambda grads: _dispersion(grads, 1e-12), penalty_fraction)


# Shared with gal.py: everything but the reduction over member pairs.


def _validated_gradients(grads: MemberTensors, name: str, num_members: int | None = None) -> Tensor:
    """``grads`` stacked to ``[K, B, ...]`` after checking K >= 2, the batch axis, dtype and values."""
    stacked = stack_members(grads, name, num_members=num_members)
    check_min_dim(stacked, name, 2, "[K, B, ...]")
    check_nonempty(stacked, name, 1, "batch")
    check_floating(stacked, name)
    if finite_check_wanted(stacked, None):
        check_finite(stacked, name)
    return stacked


def _gradient_penalty(
    models: Sequence[nn.Module] | nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    create_graph: bool,
    reduce_pairs: Callable[[Tensor], Tensor],
    penalty_fraction: float,
) -> GradientPenalty:
    """Forward each member once, take its input gradient on the penalised samples, and reduce
    the ``[K, n, ...]`` gradients to a scalar with ``reduce_pairs`` (eq. 3 for DEG, log-sum-exp
    for GAL)."""
    members = resolve_members(models, double_backward=create_graph)
    _check_input(x)
    check_batch_axis(members.modules[:1], x)
    if create_graph:
        _check_double_backward(members.modules)
        warn_if_not_training(members, "a gradient penalty")
    default_ce = loss_fn is F.cross_entropy
    if default_ce:
        _check_class_index_labels(y, x)
    if default_ce and not (isinstance(y, Tensor) and y.is_floating_point()):
        check_labels(y, "y", x.shape[0])
        y = y.long()  # cross-entropy takes int64 class indices only

    penalised = _penalised_samples(x.shape[0], penalty_fraction)
    # One input per member (views of x, no copy): one backward pass gives all K gradients.
    stacked_inputs = member_inputs(x[:penalised], members.num_members)
    # Members run on their own (a list) get their inputs as separate tensors, so each member's
    # use of its input is checked; an Ensemble runs member k on stacked_inputs[k] itself.
    inputs: Tensor | list[Tensor] = stacked_inputs if members.ensemble is not None else list(stacked_inputs.unbind(0))
    logits = members.member_logits(inputs, per_member=True)
    # The samples outside the penalised part run as a plain forward: no input gradient.
    rest = members.member_logits(x[penalised:], per_member=False) if penalised < x.shape[0] else []
    if rest:
        logits = [torch.cat([part, other]) for part, other in zip(logits, rest)]
    _check_logits(logits, x.shape[0])
    if default_ce:
        _check_cross_entropy_targets(logits, y)
    losses = [loss_fn(member_logits, y) for member_logits in logits]
    _check_losses(losses)
    penalised_losses = losses if not rest else [loss_fn(member_logits[:penalised], y[:penalised]) for member_logits in logits]

    grads = _per_member_gradients(penalised_losses, inputs, create_graph, "x")
    if finite_check_wanted(grads, None) and not bool(torch.isfinite(grads).all()):
        raise NonFiniteError(
            "Expected the members' input gradients to be finite, but they hold NaN or inf; "
            "check the parameters of `models` and the values of `x` and `y`"
        )
    return GradientPenalty(reduce_pairs(grads), torch.stack(logits), torch.stack(losses))


def _penalised_samples(batch: int, fraction: float) -> int:
    """How many of the batch's first samples the penalty is computed on: ``ceil(fraction * B)``, at least 1."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"Expected argument `penalty_fraction` to be a number in (0, 1], but got {fraction!r}")
    return max(1, math.ceil(fraction * batch))


def _loss_list(losses: MemberTensors, name: str) -> list[Tensor]:
    stacked = stack_members(losses, name, min_members=1)
    check_ndim(stacked, name, 1, "[K] (one scalar loss per member)")
    check_floating(stacked, name)
    # Keep the caller's scalars when given a sequence: indexing a stacked copy would work too,
    # but adds a stack/select pair to every member's backward.
    return list(losses) if not isinstance(losses, Tensor) else list(stacked.unbind(0))


def _gradients(
    losses: list[Tensor],
    inputs: Tensor,
    create_graph: bool,
    inputs_name: str,
    describe: Callable[[int], str],
) -> Tensor:
    _check_differentiable_input(inputs, inputs_name)
    grads = []
    # One call per member: with a shared input, a single call on the summed losses would add
    # their gradients up.
    for k, loss in enumerate(losses):
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(
                loss, inputs, retain_graph=True, create_graph=create_graph, allow_unused=True
            )
        if grad is None:
            raise ValueError(
                f"Expected {describe(k)} to depend on `{inputs_name}`, but it does not (its gradient "
                f"is undefined); was `{inputs_name}` detached or replaced before that forward pass?"
            )
        grads.append(grad)
    return torch.stack(grads)


def _per_member_gradients(
    losses: list[Tensor], inputs: Tensor | list[Tensor], create_graph: bool, inputs_name: str
) -> Tensor:
    """One backward pass of the summed losses; ``inputs`` is ``[K, B, ...]`` or K tensors ``[B, ...]``."""
    if isinstance(inputs, Tensor):
        _check_differentiable_input(inputs, inputs_name)
        if inputs.dim() == 0 or inputs.shape[0] != len(losses):
            raise ValueError(
                f"Expected argument `{inputs_name}` to hold one input per member, [K={len(losses)}, B, ...] "
                f"(see member_inputs), but got shape {tuple(inputs.shape)}"
            )
    total = torch.stack(losses).sum()
    grads: tuple[Tensor | None, ...] = (None,)
    if total.requires_grad:
        # Member k's loss depends on its own input only, so the summed loss's gradient holds
        # each member's own gradient in its own row.
        grads = torch.autograd.grad(total, inputs, retain_graph=True, create_graph=create_graph, allow_unused=True)
    if isinstance(inputs, Tensor):
        if grads[0] is None:
            raise ValueError(
                f"Expected the members' losses to depend on `{inputs_name}`, but none does (the gradient "
                f"is undefined); was `{inputs_name}` detached or replaced before that forward pass?"
            )
        return grads[0]
    unused = [k for k, grad in enumerate(grads) if grad is None] if total.requires_grad else list(range(len(losses)))
    if unused:
        raise ValueError(
            f"Expected the loss of `models[{unused[0]}]` to depend on `{inputs_name}`, but it does not (its "
            f"gradient is undefined)"
        )
    return torch.stack(cast(tuple[Tensor, ...], grads))  # none is None: checked above


def _check_differentiable_input(inputs: Tensor, inputs_name: str) -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"Expected argument `{inputs_name}` to be a tensor, but got {type(inputs).__name__}")
    check_floating(inputs, inputs_name)
    if not inputs.requires_grad:
        raise ValueError(
            f"Expected argument `{inputs_name}` to require grad, but it does not; "
            f"call {inputs_name}.requires_grad_() before the forward pass that computes the losses"
        )


def _check_class_index_labels(y: Tensor, x: Tensor) -> None:
    """Name the slips the default cross-entropy's own errors misattribute: float class indices
    (``y.long()``) and a single sample without its batch axis (``x.unsqueeze(0)``)."""
    if isinstance(y, Tensor) and y.dim() == 0:
        raise ValueError(
            f"Expected argument `y` to hold class indices [B], but got one label (shape ()): for one sample, pass "
            f"x.unsqueeze(0) and y.reshape(1) (x has shape {tuple(x.shape)})"
        )
    if not isinstance(y, Tensor) or y.dim() != 1:
        return
    if y.is_floating_point():
        raise TypeError(
            f"Expected argument `y` to hold class indices [B] of an integer dtype (or class probabilities "
            f"[B, L]), but got {y.dtype} of shape {tuple(y.shape)}: pass y.long()"
        )
    if x.dim() >= 2 and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"Expected argument `y` to hold one label per sample of `x` (B = x.shape[0] = {x.shape[0]}), but got "
            f"shape {tuple(y.shape)}: if `x` (shape {tuple(x.shape)}) is one sample without its batch axis, pass "
            f"x.unsqueeze(0); otherwise `y` does not match the batch"
        )


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected argument `x` to be a tensor [B, ...], but got {type(x).__name__}")
    check_min_dim(x, "x", 1, "[B, ...]")
    check_nonempty(x, "x", 0, "batch")
    check_floating(x, "x")
    if finite_check_wanted(x, None):
        check_finite(x, "x")


def _check_logits(logits: list[Tensor], batch: int) -> None:
    for k, member_logits in enumerate(logits):
        if not isinstance(member_logits, Tensor):
            raise TypeError(f"Expected `models[{k}]` to return a tensor [B, L], but it returned {type(member_logits).__name__}")
        if member_logits.dim() == 0 or member_logits.shape[0] != batch:
            raise ValueError(
                f"Expected `models[{k}]` to return logits [B, L] with B={batch} (the batch of `x`), "
                f"but it returned shape {tuple(member_logits.shape)}"
            )
        if member_logits.shape != logits[0].shape:
            raise ValueError(
                f"Expected every member of `models` to return logits of one shape, but member 0 "
                f"returned {tuple(logits[0].shape)} and member {k} returned {tuple(member_logits.shape)}"
            )


_NO_DOUBLE_BACKWARD = (nn.Hardsigmoid,)
"""Modules whose backward torch cannot differentiate again (checked on torch 2.13 and 2.14;
``nn.Hardsigmoid`` sits in torchvision's MobileNetV3 squeeze-excitation blocks)."""


def _check_double_backward(models: Sequence[nn.Module]) -> None:
    """Raise before the forward if a member holds a module that double backprop cannot pass."""
    for k, model in enumerate(models):
        for name, module in model.named_modules():
            if isinstance(module, _NO_DOUBLE_BACKWARD):
                raise ValueError(
                    f"Expected every model in `models` to support double backward (DEG and GAL differentiate "
                    f"the input gradient again to train on it), but `models[{k}]` holds "
                    f"{type(module).__name__} at {name!r}, whose second derivative torch does not implement; "
                    "replace it (e.g. nn.Hardsigmoid with a sigmoid-based gate) or pass create_graph=False "
                    "to only measure the penalty"
                )


def _check_cross_entropy_targets(logits: list[Tensor], y: Tensor) -> None:
    """What the default cross-entropy needs: logits ``[B, L]`` and labels in ``[0, L)`` (or probabilities ``[B, L]``)."""
    if logits[0].dim() != 2:
        raise ValueError(
            f"Expected `models` to return logits [B, L] for the default cross-entropy, but they returned "
            f"shape {tuple(logits[0].shape)}; pass a loss_fn for other outputs"
        )
    if y.is_floating_point():
        if y.shape != logits[0].shape:
            raise ValueError(
                f"Expected argument `y` (class probabilities) to have the logits' shape "
                f"{tuple(logits[0].shape)}, but got shape {tuple(y.shape)}"
            )
    elif finite_check_wanted(y, None):
        check_label_range(y, "y", logits[0].shape[1])


def _check_losses(losses: list[Tensor]) -> None:
    for k, loss in enumerate(losses):
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                f"Expected `loss_fn` to return a scalar tensor (reduce over the batch, e.g. "
                f"reduction='mean'), but for member {k} it returned {got}"
            )
        if not loss.is_floating_point():
            raise TypeError(f"Expected `loss_fn` to return a floating-point scalar, but for member {k} it returned {loss.dtype}")
