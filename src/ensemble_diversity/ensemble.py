"""The ensemble model of Huang et al. (AAAI 2021): the simple average of K members, with PDD between
their bodies and heads when asked.

:math:`\\hat y_{\\mathcal{F}} = \\frac{1}{K} \\sum_k F(x; \\theta_k)` (section "Proposed Method").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import check_batch_axis, check_distinct_members, check_member_placement
from ._split import WRAPPER_ADVICE, SplitHead, check_head_is_last, final_linear_path, split_model
from .pdd import PriorityDiversifiedDropout

__all__ = ["Ensemble", "EnsembleMembers", "MemberOutputs"]

_COMBINES = ("probabilities", "logits")


class MemberOutputs(NamedTuple):
    """What :meth:`Ensemble.member_outputs` returns."""

    features: Tensor
    """``[K, B, C]`` (members, batch, units): each member's body output, its head's input, before PDD."""
    logits: Tensor
    """``[K, B, L]`` (members, batch, classes): each head applied to the features (dropped by PDD in training mode)."""


class Ensemble(nn.Module):
    r"""Average K member classifiers, with Priority Diversified Dropouts between their bodies and heads.

    .. math::
        \hat y_{\mathcal{F}}(x) = \frac{1}{K} \sum_{k=1}^{K} \operatorname{softmax}(F(x; \theta_k))
        \quad (\texttt{"probabilities"}), \qquad
        \frac{1}{K} \sum_{k=1}^{K} F(x; \theta_k) \quad (\texttt{"logits"})

    ``combine="probabilities"`` (the default) is the paper's ensemble and what the authors' code
    evaluates: :meth:`forward` returns averaged **probabilities**, not logits. Attacks and losses
    that expect logits (``F.cross_entropy``, a C&W margin on logits, most attack libraries) would
    then apply a second softmax to values in [0, 1], which flattens the loss surface and weakens
    gradient-based attacks (a form of gradient masking). Give such code
    ``torch.log(ensemble(x))`` instead: its softmax is the averaged probabilities again, so it
    is a valid logit vector for the same ensemble. ``combine="logits"`` averages the members'
    logits, a different ensemble (the softmax of mean logits is not the mean of softmaxes) whose
    output is logits.

    **PDD on any classifiers.** Each model is split before its *head*, its final linear layer:
    by default the last ``nn.Linear`` registered in it (torchvision's ResNet ``fc``, VGG and
    MobileNet ``classifier[-1]``, DenseNet ``classifier``, ViT ``heads.head``), or the dotted
    path ``head``. The head is replaced in place by an ``nn.Linear`` subclass holding the same
    parameters, which can pass its input through: the model's own forward then yields the
    body's output ``[B, C]``. Parameter objects, ``state_dict`` keys and the model's standalone
    behaviour are unchanged. In training mode with ``pdd``, :meth:`member_logits` runs the K
    bodies, drops units of the stacked features ``[K, B, C]`` with ``pdd`` (Algorithm 1,
    eq. 2), then the K heads: one forward per member. In eval mode PDD is the identity and the
    members run whole. The head must be the model's last operation (its output is the logits):
    every body pass checks that the model returns the very tensor its head returned, and an
    operation after the head, a head called twice or never, or a tuple or dict output is
    refused with the fix (``docs/api.md``, "Models Ensemble can split").

    **Training with DDP.** Wrap :class:`EnsembleMembers` (``forward`` is
    :meth:`member_outputs`), not the ensemble: DDP syncs gradients only for a forward through
    itself. **Saving.** ``torch.save(ensemble.state_dict(), path)``; to load, rebuild the same
    models and ``Ensemble`` and call ``load_state_dict(torch.load(path))``.

    Args:
        models: K >= 1 modules, each mapping ``x`` to logits ``[B, L]`` of one shared shape.
            Stored in an :class:`torch.nn.ModuleList`, so ``.to()``, ``.train()``, ``.eval()``
            and ``state_dict()`` reach them.
        pdd: a :class:`PriorityDiversifiedDropout` for K members, registered as the submodule
            ``pdd`` (it moves with ``.to()``, its ``priority_counts`` are saved), or None.
        head: the dotted path of every model's head (e.g. ``"fc"``); None takes each model's
            last registered ``nn.Linear``.
        combine: ``"probabilities"`` or ``"logits"``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3)]
        >>> ensemble = Ensemble(models, pdd=PriorityDiversifiedDropout(3))
        >>> ensemble.heads
        ('2', '2', '2')
        >>> x = torch.randn(5, 4)
        >>> outputs = ensemble.member_outputs(x)
        >>> outputs.features.shape, outputs.logits.shape
        (torch.Size([3, 5, 8]), torch.Size([3, 5, 3]))
        >>> ensemble(x).shape, bool(torch.allclose(ensemble(x).sum(dim=1), torch.ones(5)))
        (torch.Size([5, 3]), True)
        >>> bool(torch.equal(ensemble.eval().member_logits(x)[0], models[0](x)))
        True
    """

    def __init__(
        self,
        models: Iterable[nn.Module],
        *,
        pdd: PriorityDiversifiedDropout | None = None,
        head: str | None = None,
        combine: Literal["probabilities", "logits"] = "probabilities",
    ) -> None:
        super().__init__()
        if combine not in _COMBINES:
            raise ValueError(f"Expected argument `combine` to be one of {list(_COMBINES)}, but got {combine!r}")
        # A single model is iterable too (nn.Sequential yields its layers): refuse it rather
        # than build an ensemble of layers.
        if isinstance(models, nn.Module) and not isinstance(models, nn.ModuleList):
            raise TypeError(
                "Expected argument `models` to be a sequence of modules (one per member), but got a "
                f"single {type(models).__name__}; wrap it in a list"
            )
        members = list(models)
        if not members:
            raise ValueError("Expected argument `models` to hold at least 1 module, but got an empty sequence")
        for index, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise TypeError(
                    f"Expected argument `models` to hold nn.Module instances, but model {index} is "
                    f"{type(member).__name__}"
                )
        check_distinct_members(members)
        if pdd is not None:
            if not isinstance(pdd, PriorityDiversifiedDropout):
                raise TypeError(f"Expected argument `pdd` to be a PriorityDiversifiedDropout or None, but got {type(pdd).__name__}")
            if pdd.num_members != len(members):
                raise ValueError(
                    f"Expected argument `pdd` to be built for the K={len(members)} models, but it has "
                    f"num_members={pdd.num_members}"
                )
        if head is not None and not isinstance(head, str):
            raise TypeError(f"Expected argument `head` to be a dotted attribute path (str) or None, but got {type(head).__name__}")

        # Models without any nn.Linear can still be averaged; only PDD and features need a head.
        splittable = pdd is not None or head is not None or all(
            any(isinstance(module, nn.Linear) for module in member.modules()) for member in members
        )
        self._heads: list[SplitHead] = []
        self.heads: tuple[str, ...] | None = None
        """Each member's head path, or None when the models are not split."""
        if splittable:
            paths = tuple(final_linear_path(member, head, index) for index, member in enumerate(members))
            split = [split_model(member, path, index) for index, (member, path) in enumerate(zip(members, paths))]
            members = [member for member, _ in split]
            self._heads = [member_head for _, member_head in split]
            self.heads = paths
            if pdd is not None:
                self._check_feature_widths()
        self.members = nn.ModuleList(members)
        self.pdd = pdd
        self.combine = combine

    @property
    def num_members(self) -> int:
        """K, the number of members."""
        return len(self.members)

    def _member_inputs(self, x: Tensor, per_member: bool) -> list[Tensor]:
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected argument `x` to be a tensor, but got {type(x).__name__}")
        check_member_placement(self.members, x)
        if not per_member:
            check_batch_axis(self.members[:1], x)
            return [x] * self.num_members
        if x.dim() < 2 or x.shape[0] != self.num_members:
            raise ValueError(
                f"Expected argument `x` to hold one input per member, [K={self.num_members}, B, ...] "
                f"(see member_inputs), when per_member=True, but got shape {tuple(x.shape)}"
            )
        return list(x.unbind(0))

    def member_outputs(self, x: Tensor, *, per_member: bool = False) -> MemberOutputs:
        """Each member's features and logits on ``x`` ``[B, ...]``, PDD between them in training mode.

        Args:
            x: ``[B, ...]``, the input of every member; with ``per_member=True``, ``[K, B, ...]``
                (from :func:`~ensemble_diversity.member_inputs`), member k running on ``x[k]``,
                so that one backward pass gives all K input gradients.

        Returns:
            :class:`MemberOutputs` ``(features [K, B, C], logits [K, B, L])``.
        """
        if self.heads is None:
            raise ValueError(
                "Expected the models to have a head (an nn.Linear) to split them at, but they have none; "
                "pass head='<dotted path>' to Ensemble"
            )
        self._check_feature_widths()
        inputs = self._member_inputs(x, per_member)
        paths = self.heads
        features = torch.stack([self._body(k, paths[k], member_input) for k, member_input in enumerate(inputs)])
        dropped = self.pdd(features) if self.pdd is not None and self.pdd.training else features
        logits = [head(member_features) for head, member_features in zip(self._heads, dropped)]
        return MemberOutputs(features, self._stacked_logits(logits))

    def _check_feature_widths(self) -> None:
        """The K heads must take one width C: their inputs are stacked to ``[K, B, C]`` (for PDD)."""
        widths = [head.in_features for head in self._heads]
        if any(width != widths[0] for width in widths):
            raise ValueError(
                f"Expected the heads of `models` to take features of one width C (they are stacked to [K, B, C] "
                f"for PDD), but their widths are {widths} (heads {self.heads})"
            )

    def _body(self, index: int, path: str, x: Tensor) -> Tensor:
        """Member ``index`` run up to its head (at ``path``): ``[B, C]``, the head's input."""
        head = self._heads[index]
        advice = "the head must be the model's last operation: name the final nn.Linear with `head=`"
        model = self.members[index]
        # Each pass checks that the model returns what its head returned (free: an identity
        # test), except while torch.compile traces, where the check has been made eagerly.
        returned: list[Tensor] | None = None if torch.compiler.is_compiling() else []
        head.passthrough, head.returned = True, returned
        try:
            features = model(x)
        except RuntimeError as error:
            # Either `x` does not suit the model, or a head that is not the last layer handed the
            # body's output to layers built for the head's.
            raise ValueError(
                f"Expected model {index} to run up to its head {path!r} on `x`, but it raised ({error}): "
                f"either `x` does not suit the model, or {advice}"
            ) from error
        finally:
            head.passthrough, head.returned = False, None
        if returned is not None:
            check_head_is_last(path, index, features, returned)
        if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[1] != head.in_features:
            got = f"shape {tuple(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"Expected model {index}, run on `x` up to its head {path!r}, to return that head's input "
                f"[B, {head.in_features}], but it returned {got}: either `x` does not suit the model, or {advice}"
            )
        return features

    def member_logits(self, x: Tensor, *, per_member: bool = False) -> Tensor:
        """Every member's logits on ``x``, stacked: ``[K, B, L]`` (members, batch, classes).

        With PDD in training mode these are :meth:`member_outputs`' logits (one forward per
        member, the bodies and heads apart); otherwise each member runs whole. ``x`` as in
        :meth:`member_outputs`.
        """
        if self.pdd is not None and self.pdd.training:
            return self.member_outputs(x, per_member=per_member).logits
        inputs = self._member_inputs(x, per_member)
        return self._stacked_logits([member(member_input) for member, member_input in zip(self.members, inputs)])

    def _stacked_logits(self, outputs: list[Tensor]) -> Tensor:
        for index, output in enumerate(outputs):
            if isinstance(output, (tuple, list, dict)):
                raise ValueError(
                    f"Expected model {index} of `models` to return logits [B, L], but it returned a "
                    f"{type(output).__name__}; {WRAPPER_ADVICE}"
                )
            if not isinstance(output, Tensor) or output.dim() != 2:
                got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
                hint = "; is `x` missing its batch axis? pass x.unsqueeze(0)" if isinstance(output, Tensor) and output.dim() == 1 else ""
                raise ValueError(f"Expected model {index} of `models` to return logits [B, L], but it returned {got}{hint}")
            if output.shape != outputs[0].shape:
                raise ValueError(
                    f"Expected every model of `models` to return one shape, but model {index} returned "
                    f"{tuple(output.shape)} and model 0 returned {tuple(outputs[0].shape)}"
                )
        return torch.stack(outputs)

    def forward(self, x: Tensor) -> Tensor:
        """The ensemble's prediction ``[B, L]``, averaged over the member axis.

        Mean softmax probabilities (rows sum to 1) for ``combine="probabilities"``, mean
        logits for ``combine="logits"``.
        """
        logits = self.member_logits(x)
        if self.combine == "probabilities":
            return torch.softmax(logits, dim=-1).mean(dim=0)
        return logits.mean(dim=0)

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}, num_members={self.num_members}, heads={self.heads}"


class EnsembleMembers(nn.Module):
    """The module to wrap in ``DistributedDataParallel`` or ``torch.compile`` for training: ``forward`` is
    :meth:`Ensemble.member_outputs`.

    DDP synchronises gradients only for a forward through the wrapped module itself, and
    :meth:`Ensemble.forward` averages the members' probabilities, while a training step needs
    the members' outputs ``[K, B, L]``. Wrap this instead, and give the wrapper to
    :func:`~ensemble_diversity.deg_penalty` or :func:`~ensemble_diversity.gal_penalty` (which
    then run every forward through it), or call it in your own loop::

        train_model = DistributedDataParallel(EnsembleMembers(ensemble))
        out = deg_penalty(train_model, x, y)            # gradients all-reduced, PDD in between
        logits = train_model(x).logits                  # [K, B, L], for a loss of your own

    It holds no parameters of its own: ``state_dict`` keys are the ensemble's under
    ``ensemble.``; save and load the :class:`Ensemble` itself.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> ensemble = Ensemble([nn.Linear(4, 3) for _ in range(2)], pdd=PriorityDiversifiedDropout(2))
        >>> outputs = EnsembleMembers(ensemble)(torch.randn(5, 4))
        >>> outputs.features.shape, outputs.logits.shape
        (torch.Size([2, 5, 4]), torch.Size([2, 5, 3]))
    """

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        if not isinstance(ensemble, Ensemble):
            raise TypeError(f"Expected argument `ensemble` to be an Ensemble, but got {type(ensemble).__name__}")
        self.ensemble = ensemble

    def forward(self, x: Tensor, *, per_member: bool = False) -> MemberOutputs:
        """:meth:`Ensemble.member_outputs`: ``(features [K, B, C], logits [K, B, L])``."""
        return self.ensemble.member_outputs(x, per_member=per_member)
