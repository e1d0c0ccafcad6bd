"""K members of one architecture run as one vectorised module (``torch.func``).

An ensemble trained simultaneously (eq. 1) runs K forward and backward passes of the same
architecture on every batch. :class:`VectorizedMembers` stacks the K members' parameters and
buffers (``torch.func.stack_module_state``) and runs them with ``torch.func.vmap`` over
``torch.func.functional_call``: one call, batched kernels (a convolution becomes one grouped
convolution) instead of K launches per layer. Results equal the loop over members (tested);
whether it is faster depends on the device and the members' size (``docs/performance.md``).

BatchNorm in training mode updates each member's running statistics in its own row of the
stacked buffers, as K separate modules would. Randomness inside the members (dropout) is
drawn independently per member.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap


class VectorizedMembers(nn.Module):
    """K modules of one architecture as one module whose output has the members on the first axis.

    ``forward(x)`` with ``x`` ``[B, ...]`` (shared input) or, with ``per_member=True``,
    ``[K, B, ...]`` (member k runs on ``x[k]``, e.g. from
    :func:`ensemble_diversity.deg.member_inputs`), returns ``[K, B, ...]``, what
    ``torch.stack([m(x) for m in members])`` returns. The stacked parameters are this module's
    own (``members`` are copied, not shared): optimise ``VectorizedMembers.parameters()`` and
    get ordinary modules back with :meth:`unstack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> members = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(5)]
        >>> vectorized = VectorizedMembers(members)
        >>> x = torch.randn(2, 4)
        >>> vectorized(x).shape
        torch.Size([5, 2, 3])
        >>> torch.allclose(vectorized(x), torch.stack([m(x) for m in members]))
        True
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        member_list = _check_members(members)
        params, buffers = stack_module_state(member_list)
        self._parameter_names = list(params)
        self._buffer_names = list(buffers)
        for name, value in params.items():
            self.register_parameter(_attribute(name), nn.Parameter(value.detach()))
        for name, value in buffers.items():
            self.register_buffer(_attribute(name), value)
        # A stateless copy of the architecture (on the meta device, no memory); kept in a list
        # so that it is not registered as a submodule with parameters of its own.
        self._template = [copy.deepcopy(member_list[0]).to("meta")]
        self.num_members = len(member_list)
        self.train(member_list[0].training)

    def train(self, mode: bool = True) -> VectorizedMembers:
        super().train(mode)
        self._template[0].train(mode)
        return self

    def forward(self, x: Tensor, *, per_member: bool = False) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected argument `x` to be a tensor, but got {type(x).__name__}")
        if per_member and (x.dim() == 0 or x.shape[0] != self.num_members):
            raise ValueError(
                f"Expected argument `x` to be [K={self.num_members}, B, ...] with per_member=True, "
                f"but got shape {tuple(x.shape)}"
            )
        params = {name: getattr(self, _attribute(name)) for name in self._parameter_names}
        buffers = {name: getattr(self, _attribute(name)) for name in self._buffer_names}
        run = vmap(self._member_forward, in_dims=(0, 0, 0 if per_member else None), randomness="different")
        return run(params, buffers, x)

    def _member_forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        output: Tensor = functional_call(self._template[0], (params, buffers), (x,))
        return output

    def unstack(self) -> nn.ModuleList:
        """K ordinary modules holding copies of the current parameters and buffers, in this module's mode."""
        members = nn.ModuleList()
        device = next(iter(self.parameters()), torch.empty(0)).device
        for k in range(self.num_members):
            member = copy.deepcopy(self._template[0]).to_empty(device=device)
            state = {name: getattr(self, _attribute(name))[k].detach().clone() for name in self._parameter_names + self._buffer_names}
            member.load_state_dict(state, strict=False)
            members.append(member)
        return members.train(self.training)


def _attribute(name: str) -> str:
    """Parameter names hold dots (``0.weight``), which module attributes cannot."""
    return "stacked__" + name.replace(".", "__")


def _check_members(members: Sequence[nn.Module]) -> list[nn.Module]:
    if isinstance(members, nn.Module) and not isinstance(members, nn.ModuleList):
        raise TypeError(f"Expected argument `members` to be a sequence of K modules, but got a single {type(members).__name__}")
    member_list = list(members)
    if not member_list:
        raise ValueError("Expected argument `members` to hold at least one module, but it is empty")
    for k, member in enumerate(member_list):
        if not isinstance(member, nn.Module):
            raise TypeError(f"Expected every entry of `members` to be an nn.Module, but `members[{k}]` is {type(member).__name__}")
    reference = _layout(member_list[0])
    if not reference:
        raise ValueError("Expected the modules in `members` to have parameters or buffers to stack, but they have none")
    for k, member in enumerate(member_list[1:], start=1):
        if type(member) is not type(member_list[0]) or _layout(member) != reference:
            raise ValueError(
                f"Expected every entry of `members` to have the architecture of `members[0]` (same type, "
                f"parameter and buffer names, shapes and dtypes), but `members[{k}]` differs"
            )
    return member_list


def _layout(member: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    tensors = [*member.named_parameters(), *member.named_buffers()]
    return [(name, tuple(value.shape), value.dtype) for name, value in tensors]
