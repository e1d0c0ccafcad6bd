"""Splitting a classifier before its final linear layer, where PDD acts (Algorithm 1).

PDD needs all K members' features before any member's head may run (eq. 2 compares them), so
each member is run in two halves: its *body* (everything up to the final ``nn.Linear``) and its
*head* (that layer). Rather than rebuilding the model, the head is replaced in place by
:class:`SplitHead`, an ``nn.Linear`` holding the *same* parameters that can pass its input
through: with ``passthrough`` on, the model's own ``forward`` returns the body's output. The
model keeps its ``state_dict`` keys, its optimiser's parameters and its behaviour as a
standalone classifier; no hook depends on the order in which modules are called.

The split is only right if the head's output *is* the model's output. Every body pass checks
it: the head records what it returned, and the model must return that very tensor (or a view of
it with the same values); see :func:`check_head_is_last`. Anything after the head (a trailing
``nn.LogSoftmax``, ``torch.tanh(...) * 5``, a division, an ``nn.Dropout`` in training mode) would
otherwise make training compute another function than evaluation, silently.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

WRAPPER_ADVICE = (
    "wrap it so that it returns the logits tensor alone, e.g. "
    "`class Logits(nn.Module): def __init__(self, model): super().__init__(); self.model = model` with "
    "`def forward(self, x): return self.model(x)[0]` (or ['logits'], .logits), and pass the wrapped models "
    "(docs/api.md, 'Models Ensemble can split')"
)
"""The fix for a model that returns a tuple, a list or a dict: the split still finds the head inside the wrapper."""


class SplitHead(nn.Linear):
    """A member's final linear layer; with ``passthrough`` set, it returns its input ``[B, C]`` unchanged.

    While ``returned`` is a list, each call appends what it returned (for :func:`check_head_is_last`).
    """

    passthrough: bool = False
    returned: list[Tensor] | None = None

    @classmethod
    def replacing(cls, linear: nn.Linear) -> SplitHead:
        """A ``SplitHead`` sharing ``linear``'s weight and bias (the very same ``Parameter`` objects)."""
        head = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        head.weight = linear.weight
        head.bias = linear.bias
        head.train(linear.training)
        return head

    def forward(self, input: Tensor) -> Tensor:
        output = input if self.passthrough else F.linear(input, self.weight, self.bias)
        if self.returned is not None:
            self.returned.append(output)
        return output


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
                f"acts), but model {index} ({type(model).__name__}) has none. `head=` names an nn.Linear only: "
                f"PDD drops units of the features [B, C] a linear head takes. A convolutional classifier (a 1x1 "
                f"convolution over the feature map, as in SqueezeNet) cannot be split: give the model an nn.Linear "
                f"head on pooled features, or build the Ensemble without `pdd` (it then averages the models whole)"
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
        conv = (
            " (a convolutional classifier cannot be split: give the model an nn.Linear head on pooled features, "
            "or build the Ensemble without `pdd`)"
            if isinstance(module, nn.modules.conv._ConvNd)
            else ""
        )
        raise ValueError(
            f"Expected argument `head` to name an nn.Linear, but {head!r} of model {index} is "
            f"{type(module).__name__}; its nn.Linear layers are {linears}{conv}"
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
    if isinstance(linear, nn.modules.lazy.LazyModuleMixin) and linear.has_uninitialized_params():
        raise ValueError(
            f"Expected the head {path!r} of model {index} to know its input width C, but it is an uninitialised "
            f"{type(linear).__name__}; run each model once on a batch (model(x)) before building the Ensemble, "
            "which turns it into an nn.Linear"
        )
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


def check_head_is_last(path: str, index: int, output: object, returned: list[Tensor]) -> None:
    """Raise unless ``output``, what model ``index`` returned, is what its head at ``path`` returned in that call (``returned``).

    A view with the same shape, strides and memory counts as the same tensor (``nn.Dropout`` in
    eval mode, ``.view(B, -1)``); anything else means the model computes something after its head.
    """
    if isinstance(output, (tuple, list, dict)):
        raise ValueError(
            f"Expected model {index} to return its logits as one tensor [B, L], but it returned a "
            f"{type(output).__name__}; `head=` cannot help (it names where to split, not which output to use): "
            f"{WRAPPER_ADVICE}"
        )
    if len(returned) != 1:
        raise ValueError(
            f"Expected model {index} to call its head {path!r} exactly once per forward (PDD applies the head once "
            f"to each member's features), but it called it {len(returned)} times; "
            + (
                "a model that reuses its head cannot be split: give each use its own nn.Linear, or build the Ensemble without `pdd`"
                if returned
                else "a model that reads the head's parameters without calling it cannot be split: call the head module"
            )
        )
    if isinstance(output, Tensor) and _same_values(output, returned[0]):
        return
    after = _trailing_operation(output)
    raise ValueError(
        f"Expected the output of model {index} to be the output of its head {path!r} (the head must be the model's "
        f"last operation: PDD runs the body, drops units, then the head, so anything after the head would be left "
        f"out of training), but {after} follows the head. Move it out of the model (e.g. nn.Sequential(*model[:-1]) "
        f"for a trailing layer, and apply it to the ensemble's output instead), or pass `head=` naming an "
        f"nn.Linear that is the model's last operation"
    )


def _same_values(output: Tensor, head_output: Tensor) -> bool:
    if output is head_output:
        return True
    return (
        output.shape == head_output.shape
        and output.stride() == head_output.stride()
        and output.dtype == head_output.dtype
        and output.data_ptr() == head_output.data_ptr()
    )


def _trailing_operation(output: object) -> str:
    """What computed ``output``, as far as autograd knows: e.g. ``an operation (LogSoftmaxBackward0)``."""
    if not isinstance(output, Tensor):
        return f"something that returns {type(output).__name__}"
    if output.grad_fn is not None:
        return f"an operation ({type(output.grad_fn).__name__}: a module or a function such as torch.tanh, a scaling, a log-softmax)"
    return "an operation (a module or a function such as torch.tanh, a scaling, a log-softmax)"
