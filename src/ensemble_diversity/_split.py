"""Splitting a classifier before its final linear layer, where PDD acts (Algorithm 1).

PDD needs all K members' features before any member's head may run (eq. 2 compares them), so
each member is run in two halves: its *body* (everything up to the final ``nn.Linear``) and its
*head* (that layer). Rather than rebuilding the model, the head is replaced in place by
:class:`SplitHead`, an ``nn.Linear`` holding the *same* parameters that can pass its input
through: with ``passthrough`` on, the model's own ``forward`` returns the body's output. The
model keeps its ``state_dict`` keys, its optimiser's parameters and its behaviour as a
standalone classifier; no hook depends on the order in which modules are called.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SplitHead(nn.Linear):
    """A member's final linear layer; with ``passthrough`` set, it returns its input ``[B, C]`` unchanged."""

    passthrough: bool = False

    @classmethod
    def replacing(cls, linear: nn.Linear) -> SplitHead:
        """A ``SplitHead`` sharing ``linear``'s weight and bias (the very same ``Parameter`` objects)."""
        head = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        head.weight = linear.weight
        head.bias = linear.bias
        head.train(linear.training)
        return head

    def forward(self, input: Tensor) -> Tensor:
        if self.passthrough:
            return input
        return F.linear(input, self.weight, self.bias)


def final_linear_path(model: nn.Module, head: str | None, index: int) -> str:
    """The dotted path of member ``index``'s head: ``head`` if given, else its last registered ``nn.Linear``.

    The last registered ``nn.Linear`` is torchvision's ``fc`` (ResNet), ``classifier.6`` (VGG),
    ``classifier`` (DenseNet), ``classifier.1``/``classifier.3`` (MobileNet, EfficientNet) and
    ``heads.head`` (ViT). ``""`` means the model itself is the linear layer.
    """
    linears: list[str] = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if head is None:
        if not linears:
            raise ValueError(
                f"Expected every model in `models` to contain an nn.Linear (its final layer, before which PDD "
                f"acts), but model {index} ({type(model).__name__}) has none; pass head='<dotted path>' to name it"
            )
        return linears[-1]
    try:
        module = model.get_submodule(head)
    except AttributeError:
        raise ValueError(
            f"Expected argument `head` to name a submodule of every model, but model {index} "
            f"({type(model).__name__}) has no {head!r}; its nn.Linear layers are {linears}"
        ) from None
    if not isinstance(module, nn.Linear):
        raise ValueError(
            f"Expected argument `head` to name an nn.Linear, but {head!r} of model {index} is "
            f"{type(module).__name__}; its nn.Linear layers are {linears}"
        )
    return head


def split_model(model: nn.Module, path: str, index: int) -> tuple[nn.Module, SplitHead]:
    """Install a :class:`SplitHead` at ``path`` in ``model``; returns (the member module, its head).

    The member module is ``model`` itself, or the new head when ``path`` is ``""`` (the model
    *is* its linear layer and has no body).
    """
    linear = model.get_submodule(path)
    if isinstance(linear, SplitHead):  # already split, e.g. by an earlier Ensemble of the same models
        return model, linear
    if not isinstance(linear, nn.Linear) or type(linear).forward is not nn.Linear.forward:
        raise ValueError(
            f"Expected the head {path!r} of model {index} to compute nn.Linear's forward, but "
            f"{type(linear).__name__} overrides it; name a plain nn.Linear with `head=`"
        )
    head = SplitHead.replacing(linear)
    if not path:
        return head, head
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path), name, head)
    return model, head
