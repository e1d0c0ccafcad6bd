r"""DVERGE, the peer defence of Yang et al., NeurIPS 2020, "DVERGE: Diversifying Vulnerabilities for
Enhanced Robust Generation of Ensembles" (arXiv:2009.14720; official code: github.com/zjysteven/DVERGE,
``distillation.py``, ``train/train_dverge.py``).

Each member j distils a source batch :math:`x_s` towards a target batch :math:`x_t` at one of
its layers l: a point close to :math:`x_s` that member j sees as :math:`x_t` there, its
"non-robust features" (:func:`feature_distillation`),

.. math::

    x'_j = \operatorname*{arg\,min}_{\lVert z - x_s \rVert_\infty \le \epsilon,\; z \in [0, 1]}
        \big\lVert h^l_j(z) - h^l_j(x_t) \big\rVert_2^2,

then every member i is trained on the *other* members' distilled images with the source labels
(:func:`dverge_loss`), so that it learns to classify what fools them:

.. math::

    \mathcal{L}_i = \sum_{j \ne i} \mathrm{CE}\big(f_i(x'_j), y_s\big).

There is no clean-loss term (the official method; add one yourself if wanted). The official
recipe starts from a trained baseline ensemble and draws the layer uniformly once per epoch
(:func:`draw_layer`).

Where ours differs from the official code (docs/method.md, section "DVERGE", has the reasons):

- Any member, any layer: the official code reaches a layer through its ResNet-20's own
  ``get_features(x, layer)``; ours takes the input of each member's final ``nn.Linear`` (where
  :class:`~ensemble_diversity.Ensemble` splits, the default) or the output of any named
  submodule, and stops the forward there.
- "Before the ReLU": the official layers are taken before their ReLU (a block's output before
  the final ReLU, a conv+BN pair before its ReLU). Ours takes what the named submodule returns:
  name a BatchNorm (``"layer1.0.bn2"``) to get its pre-activation, as the forward stops at it
  before an in-place ReLU can overwrite it; a torchvision ``BasicBlock``'s own output is after
  its final ReLU, so a block output before the ReLU has no submodule to name. The default
  layer, the head's input, is after the ReLU (pooled post-ReLU features).
- The target features are computed once per call (the official code recomputes them at every
  step, the same values in training mode at the cost of a forward per step), all K members are
  distilled in one loop over the steps, and every buffer (BatchNorm running statistics) is
  restored after the distillation (``update_buffers=True`` gives the official behaviour, which
  updates them at every step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_diversity._checks import check_member_placement
from ensemble_diversity._split import final_linear_path
from ensemble_diversity.deg import LossFn, _check_cross_entropy_targets, _check_input
from ensemble_diversity.ensemble import Ensemble
from ensemble_diversity.trs import _check_number, _checked_models, _kept_buffers

__all__ = ["CrossTraining", "distillation_features", "draw_layer", "dverge_loss", "feature_distillation"]


class CrossTraining(NamedTuple):
    """What :func:`dverge_loss` returns; both keep their autograd graph."""

    losses: Tensor
    """``[K]``: member i's summed loss on the other members' distilled images; train on ``losses.sum()``."""
    logits: Tensor
    """``[K, K-1, B, L]``: member i's logits on the m-th other member's distilled images (members j != i, in order)."""


def distillation_features(models: Sequence[nn.Module] | Ensemble, x: Tensor, *, layer: str | None = None) -> Tensor:
    """Each member's activation at ``layer`` on its own input: ``[K, B, ...]``.

    Args:
        models: K >= 2 modules, or an :class:`~ensemble_diversity.Ensemble`.
        x: ``[K, B, ...]``, member k's input ``x[k]``, floating.
        layer: None: the input of each member's head (its last ``nn.Linear``, or the
            Ensemble's split point), ``[B, C]``; a dotted submodule path of every member: its
            output. The forward stops there.
    """
    members, points = _members_and_layers(models, layer)
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != len(members):
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Expected argument `x` to hold one input per member, [K={len(members)}, B, ...], but got {got}")
    _check_input(x[0])
    check_member_placement(members, x)
    activations = [_activation(member, point, member_x, k) for k, (member, point, member_x) in enumerate(zip(members, points, x))]
    shapes = {tuple(activation.shape) for activation in activations}
    if len(shapes) > 1:
        raise ValueError(
            f"Expected every member's activation at argument `layer` ({layer!r}) to have one shape, to stack them, but got {sorted(shapes)}"
        )
    return torch.stack(activations)


def feature_distillation(
    models: Sequence[nn.Module] | Ensemble,
    source: Tensor,
    target: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int = 10,
    layer: str | None = None,
    momentum: float = 1.0,
    random_start: bool = False,
    update_buffers: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Every member's distillation of ``source`` towards ``target`` at ``layer``: ``[K, B, ...]``.

    For all K members in one loop over ``steps`` (official: 10 steps of ``0.007`` within
    ``eps = 0.07`` on CIFAR-10): the mean squared error between member k's activation at the
    current point and at ``target`` is differentiated with respect to the point; the per-sample
    gradient, divided by its L1 norm, is accumulated with momentum
    :math:`g \leftarrow \mu g + \nabla / \lVert \nabla \rVert_1`; the point moves by
    ``-step_size * sign(g)``, then is projected onto the L_inf ball of radius ``eps`` around
    ``source`` and onto [0, 1]. No parameter's ``.grad`` is touched. The members run in the mode
    the caller left them in (official: training mode).

    >>> _ = torch.manual_seed(0)
    >>> models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3)]
    >>> source, target = torch.rand(5, 4), torch.rand(5, 4)
    >>> distilled = feature_distillation(models, source, target, eps=0.1, step_size=0.01)
    >>> distilled.shape, bool((distilled - source).abs().max() <= 0.1 + 1e-6)
    (torch.Size([3, 5, 4]), True)

    Args:
        models: K >= 2 modules, or an :class:`~ensemble_diversity.Ensemble`.
        source: ``[B, ...]`` inputs in [0, 1]; the distilled images stay within ``eps`` of them.
        target: ``[B, ...]``, whose features the distilled images imitate (labels unused).
        eps: L_inf radius, >= 0.
        step_size: each step's size, >= 0.
        steps: iterations, >= 0.
        layer: as in :func:`distillation_features` (None: the features before each head).
        momentum: :math:`\mu` (official 1); 0 takes the sign of each step's own gradient.
        random_start: start at a uniform point of the ball (official: no).
        update_buffers: True: BatchNorm running statistics update at every step (official);
            False: every buffer is restored afterwards.
        generator: draws the random start; None uses the global torch RNG.

    Returns:
        ``[K, B, ...]``, detached: member k's distilled images in row k.
    """
    members, points = _members_and_layers(models, layer)
    _check_input(source)
    if not isinstance(target, Tensor) or target.shape != source.shape:
        got = f"shape {tuple(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"Expected argument `target` to have the shape of `source` {tuple(source.shape)}, but got {got}")
    if target.dtype != source.dtype:
        raise ValueError(f"Expected argument `target` to have the dtype of `source` ({source.dtype}), but got {target.dtype}")
    _check_input(target)
    check_member_placement(members, source)
    _check_number(eps, "eps", minimum=0.0)
    _check_number(step_size, "step_size", minimum=0.0)
    _check_number(momentum, "momentum", minimum=0.0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"Expected argument `steps` to be an integer >= 0, but got {steps!r}")
    num_members = len(members)
    origin = source.detach().unsqueeze(0).expand(num_members, *source.shape)
    point = origin.clone()
    if random_start:
        noise = torch.rand(origin.shape, generator=generator, dtype=origin.dtype, device=origin.device)
        point = (origin + eps * (2 * noise - 1)).clamp(0.0, 1.0)
    velocity = torch.zeros_like(point)
    with _kept_buffers(members, keep=not update_buffers), torch.enable_grad():
        with torch.no_grad():
            goal = [_activation(member, where, target, k) for k, (member, where) in enumerate(zip(members, points))]
        for _ in range(steps):
            point.requires_grad_(True)
            # Member k's distance depends on point[k] only: one backward gives all K gradients.
            distance = sum(
                (F.mse_loss(_activation(member, where, point[k], k), goal[k]) for k, (member, where) in enumerate(zip(members, points))),
                start=point.new_zeros(()),
            )
            (grad,) = torch.autograd.grad(distance, point)
            l1 = grad.flatten(2).abs().sum(dim=-1).clamp_min(1e-12)
            velocity = momentum * velocity + grad / l1.view(*l1.shape, *([1] * (grad.dim() - 2)))
            point = point.detach() - step_size * velocity.sign()
            point = torch.minimum(torch.maximum(point, origin - eps), origin + eps).clamp(0.0, 1.0)
    return point.detach()


def dverge_loss(
    models: Sequence[nn.Module] | Ensemble,
    distilled: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
) -> CrossTraining:
    """DVERGE's cross-training loss: member i on every other member's distilled images, with the source labels.

    ``losses[i] = sum_{j != i} loss_fn(f_i(distilled[j]), y)``: K (K - 1) forwards of B images,
    each its own batch (as in the official code, so BatchNorm sees one distilled batch at a
    time). The distilled images are data: detached here, so member i's loss reaches member i's
    parameters only, and ``losses.sum().backward()`` gives each member the gradient the official
    per-member optimisers step on. An :class:`~ensemble_diversity.Ensemble`'s members run whole
    (without PDD, which needs all members on one input).

    >>> _ = torch.manual_seed(0)
    >>> models = [nn.Linear(4, 3) for _ in range(3)]
    >>> source, target, y = torch.rand(5, 4), torch.rand(5, 4), torch.randint(0, 3, (5,))
    >>> out = dverge_loss(models, feature_distillation(models, source, target, eps=0.1, step_size=0.01), y)
    >>> out.losses.shape, out.logits.shape
    (torch.Size([3]), torch.Size([3, 2, 5, 3]))
    >>> out.losses.sum().backward()

    Args:
        models: K >= 2 modules, or an :class:`~ensemble_diversity.Ensemble`.
        distilled: ``[K, B, ...]``, member k's distilled images in row k (:func:`feature_distillation`).
        y: the source batch's targets for ``loss_fn`` (class indices ``[B]`` for the default).
        loss_fn: ``loss_fn(logits, y) -> scalar``, batch-reduced.

    Returns:
        :class:`CrossTraining` ``(losses [K], logits [K, K-1, B, L])``.
    """
    members, _ = _members_and_layers(models, None, need_layers=False)
    num_members = len(members)
    if not isinstance(distilled, Tensor) or distilled.dim() < 2 or distilled.shape[0] != num_members:
        got = f"shape {tuple(distilled.shape)}" if isinstance(distilled, Tensor) else type(distilled).__name__
        raise ValueError(f"Expected argument `distilled` to hold one batch per member, [K={num_members}, B, ...], but got {got}")
    _check_input(distilled[0])
    check_member_placement(members, distilled)
    if not isinstance(y, Tensor) or y.shape[:1] != distilled.shape[1:2]:
        got = f"shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"Expected argument `y` to hold one target per distilled image ([{distilled.shape[1]}, ...]), but got {got}")
    images = distilled.detach()
    logits = torch.stack([torch.stack([member(images[j]) for j in range(num_members) if j != i]) for i, member in enumerate(members)])
    if loss_fn is F.cross_entropy:
        # Out-of-range class indices would otherwise surface as cross-entropy's IndexError.
        _check_cross_entropy_targets(list(logits[0]), y)
    losses = torch.stack([sum((loss_fn(row, y) for row in member_logits), start=logits.new_zeros(())) for member_logits in logits])
    return CrossTraining(losses, logits)


def draw_layer(layers: Sequence[str | None], *, seed: int, epoch: int) -> str | None:
    """One of ``layers``, drawn uniformly from ``(seed, epoch)`` alone: the official once-per-epoch draw, reproducible on resume.

    >>> draw_layer(["a", "b", "c"], seed=0, epoch=3) == draw_layer(["a", "b", "c"], seed=0, epoch=3)
    True
    """
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"Expected argument `layers` to be a non-empty sequence of layer names (None: the head's input), but got {layers!r}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"Expected argument `{name}` to be an integer >= 0, but got {value!r}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return layers[int(torch.randint(len(layers), (1,), generator=generator))]


class _Reached(Exception):
    """Raised by a hook to stop a member's forward at the distillation layer, carrying its activation."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def _stop_before(module: nn.Module, args: tuple[object, ...]) -> None:
    raise _Reached(args[0])


def _stop_after(module: nn.Module, args: tuple[object, ...], output: object) -> None:
    raise _Reached(output)


def _members_and_layers(
    models: Sequence[nn.Module] | Ensemble, layer: str | None, *, need_layers: bool = True
) -> tuple[list[nn.Module], list[tuple[nn.Module, bool, str]]]:
    """The K members and, per member, (the module where the forward stops, whether at its input, its name)."""
    checked = _checked_models(models)
    members = list(checked.members) if isinstance(checked, Ensemble) else checked
    if not need_layers:
        return members, []
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"Expected argument `layer` to be a dotted submodule path (str) or None, but got {type(layer).__name__}")
    points = []
    for k, member in enumerate(members):
        if layer is None:
            path = checked.heads[k] if isinstance(checked, Ensemble) and checked.heads is not None else final_linear_path(member, None, k)
            points.append((member.get_submodule(path), True, path or "<the model itself>"))
            continue
        try:
            points.append((member.get_submodule(layer), False, layer))
        except AttributeError:
            raise ValueError(
                f"Expected argument `layer` to name a submodule of every model, but `models[{k}]` ({type(member).__name__}) has no {layer!r}"
            ) from None
    return members, points


def _activation(member: nn.Module, point: tuple[nn.Module, bool, str], x: Tensor, index: int) -> Tensor:
    """Member ``index`` run on ``x`` up to ``point``: the layer's input or output, the rest of the forward skipped."""
    module, at_input, name = point
    handle = module.register_forward_pre_hook(_stop_before) if at_input else module.register_forward_hook(_stop_after)
    try:
        member(x)
    except _Reached as reached:
        if not isinstance(reached.value, Tensor):
            raise ValueError(
                f"Expected the layer {name!r} of `models[{index}]` to give a tensor, but it gave {type(reached.value).__name__}"
            ) from None
        return reached.value
    finally:
        handle.remove()
    raise ValueError(f"Expected `models[{index}]` to run its layer {name!r} in its forward, but the forward never called it")
