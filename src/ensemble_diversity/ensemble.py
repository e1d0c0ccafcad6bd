"""The ensemble model of Huang et al. (AAAI 2021): the simple average of K members.

:math:`\\hat y_{\\mathcal{F}} = \\frac{1}{K} \\sum_k F(x; \\theta_k)` (section "Proposed Method").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["Ensemble"]

_COMBINES = ("probabilities", "logits")


class Ensemble(nn.Module):
    r"""Average K member classifiers.

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

    Args:
        members: K >= 1 modules, each mapping ``x`` to logits ``[B, L]`` (batch, classes) of one
            shared shape. Stored in an :class:`torch.nn.ModuleList`, so ``.to()``,
            ``.train()``, ``.eval()`` and ``state_dict()`` reach them.
        combine: ``"probabilities"`` or ``"logits"``.

    Example:
        >>> members = [nn.Linear(4, 3), nn.Linear(4, 3)]
        >>> ensemble = Ensemble(members)
        >>> ensemble
        Ensemble(
          combine='probabilities', num_members=2
          (members): ModuleList(
            (0-1): 2 x Linear(in_features=4, out_features=3, bias=True)
          )
        )
        >>> x = torch.randn(5, 4)
        >>> ensemble.member_logits(x).shape
        torch.Size([2, 5, 3])
        >>> ensemble(x).shape, bool(torch.allclose(ensemble(x).sum(dim=1), torch.ones(5)))
        (torch.Size([5, 3]), True)
    """

    def __init__(self, members: Iterable[nn.Module], *, combine: Literal["probabilities", "logits"] = "probabilities") -> None:
        super().__init__()
        if combine not in _COMBINES:
            raise ValueError(f"Expected argument `combine` to be one of {list(_COMBINES)}, but got {combine!r}")
        # A single model is iterable too (nn.Sequential yields its layers): refuse it rather
        # than build an ensemble of layers.
        if isinstance(members, nn.Module) and not isinstance(members, nn.ModuleList):
            raise TypeError(
                "Expected argument `members` to be a sequence of modules (one per member), but got a "
                f"single {type(members).__name__}; wrap it in a list"
            )
        members = list(members)
        if not members:
            raise ValueError("Expected argument `members` to hold at least 1 module, but got an empty sequence")
        for index, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise TypeError(
                    f"Expected argument `members` to hold nn.Module instances, but member {index} is "
                    f"{type(member).__name__}"
                )
        self.members = nn.ModuleList(members)
        self.combine = combine

    @property
    def num_members(self) -> int:
        """K, the number of members."""
        return len(self.members)

    def member_logits(self, x: Tensor) -> Tensor:
        """Every member's output on ``x``, stacked: ``[K, B, L]`` (members, batch, classes)."""
        outputs = [member(x) for member in self.members]
        for index, output in enumerate(outputs):
            if not isinstance(output, Tensor) or output.dim() != 2:
                got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
                raise ValueError(f"Expected member {index} of `members` to return logits [B, L], but it returned {got}")
            if output.shape != outputs[0].shape:
                raise ValueError(
                    f"Expected every member of `members` to return one shape, but member {index} returned "
                    f"{tuple(output.shape)} and member 0 returned {tuple(outputs[0].shape)}"
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
        return f"combine={self.combine!r}, num_members={self.num_members}"
