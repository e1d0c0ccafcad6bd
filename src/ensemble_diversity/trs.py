r"""Transferability Reduced Smooth ensembles (TRS), the peer defence of Yang et al., NeurIPS 2021,
"TRS: Transferability Reduced Ensemble via Promoting Gradient Diversity and Model Smoothness"
(arXiv:2104.00671; official code: github.com/AI-secure/Transferability-Reduced-Smooth-Ensemble,
``train/Empirical/trainer.py``, ``utils/Empirical/utils_ensemble.py``).

TRS trains the K members jointly on

.. math::

    \mathcal{L} = \sum_j \ell_j(x)
        + s \, \big(c \, \mathcal{L}_{sim} + \lambda \, \mathcal{L}_{smooth}\big)

    \mathcal{L}_{sim} = \frac{1}{P} \sum_{a < b} \frac{1}{B} \sum_i
        \big|\cos\big(g_a(x_i), g_b(x_i)\big)\big|,
    \qquad
    \mathcal{L}_{smooth} = \frac{1}{K} \sum_j \frac{2}{B} \sum_i \lVert g_j(\tilde x_i) \rVert_2^2

with :math:`g_j = \partial \ell_j / \partial x` the input gradient of member j's batch-mean loss,
:math:`P = K(K-1)/2` and :math:`\tilde x` the batch whose first half is clean and whose second
half is a PGD point ascending the members' summed squared gradient norm
(:func:`trs_perturbation`). :func:`trs_terms` returns both terms separately, with the members'
logits and losses at the clean batch; the caller weighs them (the official defaults, MNIST scale:
``s = 5, c = 2, lambda = 2``; CIFAR-10: ``s c = 40, s lambda = 2.5``).

Where ours differs from the official code (docs/method.md, section "TRS", has the reasons):

- Any K: the official code hard-codes the pairs 01, 02, 12 and divides by 3; we average over
  all P pairs and all K members.
- The smoothing PGD: the official code never clears the input's ``.grad`` between its 6 steps,
  so each sign step follows the *sum* of all gradients so far; ours takes the sign of each
  step's own gradient, standard PGD (``accumulate_gradients=True`` gives the official one).
- Buffers: the official PGD runs the members in training mode and lets their BatchNorm running
  statistics update on every inner step; ours runs them in the mode the caller left them in
  and restores every buffer afterwards (``update_buffers=True`` gives the official behaviour).
- Kept as in the official code, by default: the absolute cosine (``absolute=False`` gives the
  signed one), the factor 2 and the gradients of the *batch-mean* loss in the smoothness term,
  which carry a 1/B factor each, so the term scales as 1/B^2 (``per_sample=True`` uses each
  sample's own loss gradient instead, a term independent of the batch size), the half-clean
  batch (``clean_fraction``), the sum (not mean) of the members' losses.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity._checks import check_finite, check_member_placement, finite_check_wanted
from ensemble_diversity._members import resolve_members
from ensemble_diversity._pairwise import pairwise_cosines
from ensemble_diversity.deg import (
    LossFn,
    _check_cross_entropy_targets,
    _check_double_backward,
    _check_input,
    _gradient_penalty,
    _per_member_gradients,
)
from ensemble_diversity.ensemble import Ensemble, EnsembleMembers

__all__ = ["TRSTerms", "trs_perturbation", "trs_terms"]


class TRSTerms(NamedTuple):
    """What :func:`trs_terms` returns; every tensor keeps its autograd graph."""

    similarity: Tensor
    """Scalar: L_sim, the mean over member pairs of the batch-mean (absolute) gradient cosine at ``x``."""
    smoothness: Tensor
    """Scalar: L_smooth, the mean over members of twice the batch-mean squared input-gradient norm at ``x_smooth``."""
    logits: Tensor
    """``[K, B, L]`` (members, batch, classes): each member's output at the clean ``x``."""
    losses: Tensor
    """``[K]``: each member's ``loss_fn(logits[k], y)`` at the clean ``x``; TRS adds their **sum**."""


def trs_terms(
    models: Sequence[nn.Module] | Ensemble,
    x: Tensor,
    y: Tensor,
    *,
    x_smooth: Tensor | None = None,
    loss_fn: LossFn = F.cross_entropy,
    create_graph: bool = True,
    absolute: bool = True,
    per_sample: bool = False,
) -> TRSTerms:
    """TRS's gradient-similarity and smoothness terms of an ensemble on one batch.

    The official objective is then one line:

    >>> _ = torch.manual_seed(0)
    >>> models = [nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)) for _ in range(3)]
    >>> x, y = torch.rand(6, 4), torch.randint(0, 3, (6,))
    >>> x_smooth = trs_perturbation(models, x, y, eps=0.1)
    >>> terms = trs_terms(models, x, y, x_smooth=x_smooth)
    >>> loss = terms.losses.sum() + 5.0 * (2.0 * terms.similarity + 2.0 * terms.smoothness)
    >>> loss.backward()
    >>> bool(0.0 <= terms.similarity <= 1.0), terms.logits.shape
    (True, torch.Size([3, 6, 3]))

    Args:
        models: K >= 2 modules mapping ``x`` to logits ``[B, L]`` of one shape, or an
            :class:`~ensemble_diversity.Ensemble` of them (through its PDD in training mode).
        x: ``[B, ...]`` clean inputs, floating; never modified (as in
            :func:`~ensemble_diversity.deg_penalty`).
        y: targets for ``loss_fn`` (class indices ``[B]`` for the default cross-entropy).
        x_smooth: ``[B, ...]``, the point of the smoothness term (:func:`trs_perturbation`'s
            output for TRS); None takes ``x`` itself (the official "cos-l2" variant), whose
            gradients the similarity term already has: no second forward.
        loss_fn: ``loss_fn(logits_k, y) -> scalar`` for one member; the official one is the
            batch-mean cross-entropy.
        create_graph: keep the gradients' graph, needed to train on the terms.
        absolute: the absolute cosine (official) or the signed one.
        per_sample: False (official): the gradients of the batch-mean loss, each carrying a 1/B
            factor, so L_smooth scales as 1/B^2; True multiplies L_smooth by B^2, i.e. uses each
            sample's own loss gradient for a batch-mean ``loss_fn``, independent of B.

    Returns:
        :class:`TRSTerms` ``(similarity, smoothness, logits [K, B, L], losses [K])``.
    """
    if not isinstance(absolute, bool):
        raise TypeError(f"Expected argument `absolute` to be a bool, but got {type(absolute).__name__}")
    if not isinstance(per_sample, bool):
        raise TypeError(f"Expected argument `per_sample` to be a bool, but got {type(per_sample).__name__}")

    def similarity(grads: Tensor) -> Tensor:
        cosines = pairwise_cosines(grads)  # [B, P]
        return (cosines.abs() if absolute else cosines).mean(dim=0).mean()

    def smoothness(grads: Tensor) -> Tensor:
        # [K, B, ...] -> per member and sample, the squared L2 norm; x2 as the official code.
        flat = grads.flatten(2)
        norms = flat.to(torch.promote_types(flat.dtype, torch.float32)).pow(2).sum(dim=-1)
        scale = grads.shape[1] ** 2 if per_sample else 1
        return 2.0 * scale * norms.mean(dim=1).mean()

    if x_smooth is None:
        both = _gradient_penalty(models, x, y, loss_fn, create_graph, lambda grads: torch.stack([similarity(grads), smoothness(grads)]), 1.0)
        return TRSTerms(both.penalty[0], both.penalty[1], both.logits, both.losses)
    _check_input(x)
    if not isinstance(x_smooth, Tensor) or x_smooth.shape != x.shape:
        got = f"shape {tuple(x_smooth.shape)}" if isinstance(x_smooth, Tensor) else type(x_smooth).__name__
        raise ValueError(f"Expected argument `x_smooth` to have the shape of `x` {tuple(x.shape)}, but got {got}")
    clean = _gradient_penalty(models, x, y, loss_fn, create_graph, similarity, 1.0)
    smooth = _gradient_penalty(models, x_smooth, y, loss_fn, create_graph, smoothness, 1.0)
    return TRSTerms(clean.penalty, smooth.penalty, clean.logits, clean.losses)


def trs_perturbation(
    models: Sequence[nn.Module] | Ensemble,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 6,
    step_size: float | None = None,
    clean_fraction: float = 0.5,
    random_start: bool = True,
    accumulate_gradients: bool = False,
    update_buffers: bool = False,
    loss_fn: LossFn = F.cross_entropy,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The point :math:`\tilde x` of TRS's smoothness term: PGD ascending the summed squared input-gradient norm.

    The first ``n = floor(clean_fraction * B)`` samples stay clean (official: half the batch);
    the others, as one batch, take ``steps`` signed steps of ``step_size`` (official: 6 of
    ``eps / 3``) from a uniform random start in the L_inf ball, ascending
    :math:`\sum_j \sum_i \lVert \partial \ell_j / \partial x_i \rVert^2` (``\ell_j`` the
    batch-mean loss of member j on those samples; its scale does not matter to a sign step), each
    step projected onto the ball of radius ``eps`` around ``x`` and onto [0, 1]. Each step
    differentiates an input gradient again (double backprop), with respect to the input only: no
    parameter's ``.grad`` is touched. The eps schedule (official: linear in the epoch from
    ``init_eps`` to ``adv_eps``) is the caller's.

    Args:
        models: as in :func:`trs_terms`; they run in the mode the caller left them in (the
            official code: training mode).
        x: ``[B, ...]`` inputs in [0, 1], floating.
        y: targets for ``loss_fn``.
        eps: L_inf radius, a number >= 0.
        steps: PGD iterations, >= 0.
        step_size: each step's size; None: ``eps / 3``.
        clean_fraction: share of the batch (its first samples) left clean, in [0, 1].
        random_start: start at a uniform point of the ball (official) or at ``x``.
        accumulate_gradients: True: each step's sign is taken of the sum of all steps' gradients
            so far, as the official code does by never clearing ``.grad``; False: standard PGD.
        update_buffers: True: BatchNorm running statistics (and any other buffer) update on
            every inner step, as in the official code; False: every buffer is restored afterwards.
        loss_fn: ``loss_fn(logits_k, y) -> scalar``, batch-reduced.
        generator: draws the random start; None uses the global torch RNG.

    Returns:
        ``[B, ...]``, detached, in [0, 1], within ``eps`` of ``x`` in L_inf; equal to ``x`` on its
        first ``n`` samples.
    """
    members = _checked_models(models)
    _check_input(x)
    check_member_placement(members.members if isinstance(members, Ensemble) else members, x)
    _check_number(eps, "eps", minimum=0.0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"Expected argument `steps` to be an integer >= 0, but got {steps!r}")
    if step_size is not None:
        _check_number(step_size, "step_size", minimum=0.0)
    _check_number(clean_fraction, "clean_fraction", minimum=0.0, maximum=1.0)
    if not isinstance(y, Tensor) or y.shape[:1] != x.shape[:1]:
        got = f"shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"Expected argument `y` to hold one target per sample of `x` ([{x.shape[0]}, ...]), but got {got}")
    _check_double_backward(list(members.members) if isinstance(members, Ensemble) else members)
    size = eps / 3 if step_size is None else step_size
    clean = math.floor(clean_fraction * x.shape[0])
    origin, labels = x[clean:].detach(), y[clean:]
    if origin.shape[0] == 0:
        return x.detach().clone()
    start = origin
    if random_start:
        noise = torch.rand(origin.shape, generator=generator, dtype=origin.dtype, device=origin.device)
        start = (origin + eps * (2 * noise - 1)).clamp(0.0, 1.0)
    point = start.detach()
    accumulated = torch.zeros_like(point)
    with _kept_buffers(members, keep=not update_buffers), torch.enable_grad():
        for _ in range(steps):
            point.requires_grad_(True)
            norms = _squared_gradient_norms(members, point, labels, loss_fn)
            (grad,) = torch.autograd.grad(norms.sum(), point)
            accumulated = accumulated + grad if accumulate_gradients else grad
            point = point.detach() + size * accumulated.sign()
            point = torch.minimum(torch.maximum(point, origin - eps), origin + eps).clamp(0.0, 1.0)
    return torch.cat([x[:clean].detach(), point.detach()])


def _squared_gradient_norms(members: list[nn.Module] | Ensemble, point: Tensor, labels: Tensor, loss_fn: LossFn) -> Tensor:
    """``[K, n]``: per member and sample, the squared norm of the input gradient of the member's loss (kept graph)."""
    num_members = members.num_members if isinstance(members, Ensemble) else len(members)
    inputs = point.unsqueeze(0).expand(num_members, *point.shape)  # one view per member: one backward for all K
    if isinstance(members, Ensemble):
        logits = list(members.member_logits(inputs, per_member=True).unbind(0))
    else:
        logits = [model(member_input) for model, member_input in zip(members, inputs.unbind(0))]
    if loss_fn is F.cross_entropy:
        # Out-of-range class indices would otherwise surface as cross-entropy's IndexError.
        _check_cross_entropy_targets(logits, labels)
    losses = [loss_fn(member_logits, labels) for member_logits in logits]
    grads = _per_member_gradients(losses, inputs, True, "x")
    if finite_check_wanted(grads, None):
        check_finite(grads, "the members' input gradients")
    return grads.flatten(2).pow(2).sum(dim=-1)


def _checked_models(models: Sequence[nn.Module] | Ensemble) -> list[nn.Module] | Ensemble:
    """``models`` as the member list or the Ensemble itself, resolved and checked as every penalty's (K >= 2, distinct members).

    These functions call the members themselves, past any DistributedDataParallel wrapper, so
    one is refused rather than silently left out of the gradient sync.
    """
    resolved = resolve_members(models)
    if resolved.call is not None and not isinstance(resolved.call, EnsembleMembers):
        raise TypeError(
            f"Expected argument `models` to be the members or the Ensemble itself, but got one inside {type(resolved.call).__name__}: "
            "the TRS and DVERGE functions run the members directly, outside its gradient sync; pass the unwrapped "
            "ensemble and average the members' gradients across ranks after backward (examples/huang2021/training does)"
        )
    return resolved.ensemble if resolved.ensemble is not None else resolved.modules


def _check_number(value: float, name: str, *, minimum: float, maximum: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum or math.isinf(value):
        bound = f"in [{minimum:g}, {maximum:g}]" if maximum < math.inf else f"a finite number >= {minimum:g}"
        raise ValueError(f"Expected argument `{name}` to be {bound}, but got {value!r}")


@contextlib.contextmanager
def _kept_buffers(models: Sequence[nn.Module] | nn.Module, *, keep: bool = True) -> Iterator[None]:
    """With ``keep``, every buffer of ``models`` (BatchNorm running statistics, PDD's counts) is as before afterwards."""
    modules = [models] if isinstance(models, nn.Module) else list(models)
    buffers = [buffer for module in modules for buffer in module.buffers()]
    saved = [buffer.clone() for buffer in buffers] if keep else []
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
