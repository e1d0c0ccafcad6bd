"""Training under ``torchrun``: DistributedDataParallel over the K members, one shard of each batch per rank.

Every rank holds all K members (the library's ``Ensemble(members, pdd=pdd)``, whose
``member_outputs`` runs PDD between features and heads; DDP wraps the library's
``EnsembleMembers`` of it, here named :data:`EnsembleForward`), draws the same global batch order and the same augmentation, and
trains on its rows of each global batch; DDP averages the gradients, so the members stay
identical on every rank. With ``--pdd-statistics sample`` (the default) PDD's statistics
depend on each sample alone and agree across ranks without communication; with ``batch`` the
library all-reduces them (``sync_statistics=True``). The library also sums PDD's priority
counts over the ranks at every training step, so every rank holds the same counts. Only rank
0 writes the run directory. Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment)
nothing here communicates and a single process trains exactly as before.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ensemble_diversity import EnsembleMembers


class Ranks(NamedTuple):
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks(0, 1, 0)
"""A process trained without ``torchrun``."""


EnsembleForward = EnsembleMembers
"""The module DDP wraps: the library's :class:`~ensemble_diversity.EnsembleMembers`, whose
``forward(x, per_member=...)`` is ``ensemble.member_outputs(x, per_member=...)``.

DDP syncs gradients only for a forward through the wrapped module itself, and an
``Ensemble``'s own forward averages probabilities; the training step needs the members'
outputs (``[K, B, L]`` logits)."""


def init_distributed(device_type: str) -> Ranks:
    """Join the process group ``torchrun`` describes in the environment (NCCL on CUDA, gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    # A false alarm for weights with a size-1 axis (grey input's first convolution), whose
    # strides along it are arbitrary: the memory layout is the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    return ranks


def exit_rank_process() -> None:
    """End a ``torchrun`` rank's process without finalizing the interpreter, once its work is done.

    DDP keeps the gloo process group alive in C++ past ``destroy_process_group``, so its worker
    threads outlive the Python program. A worker that releases the last reference to a finished
    collective's tensor needs the GIL; if the interpreter is finalizing by then, the thread is
    ended inside a C++ destructor and the rank aborts ("terminate called without an active
    exception", SIGABRT; core dumps of torch 2.14 on a loaded 2-core CPU, a few runs in 20;
    the crash pytorch/pytorch pull request 179291 describes). Every file of the run is written and closed
    before this is called; only the streams need flushing. A single process returns normally.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def shard_rows(size: int, ranks: Ranks) -> slice:
    """This rank's rows of a global batch of ``size``: contiguous, as equal as possible."""
    bounds = np.linspace(0, size, ranks.world_size + 1).round().astype(int)
    return slice(int(bounds[ranks.rank]), int(bounds[ranks.rank + 1]))


def all_reduce_sum(tensor: Tensor, ranks: Ranks) -> Tensor:
    """``tensor`` summed over ranks, in place (a no-op in a single process)."""
    if ranks.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: Tensor, ranks: Ranks) -> Tensor:
    """The largest of ``tensor`` over ranks, in place (a no-op in a single process)."""
    if ranks.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_buffers(module: nn.Module, ranks: Ranks) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them at the start of each forward, so after an epoch's last step each rank
    still holds its own; validation and checkpoints need rank 0's everywhere.
    """
    if ranks.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def gather_objects(value: Any, ranks: Ranks) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in a single process)."""
    if not ranks.distributed:
        return [value]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def state_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``module``, in ``state_dict`` order: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        if isinstance(value, Tensor):
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:  # a module's extra state, e.g. PDD's settings
            digest.update(repr(value).encode())
    return digest.hexdigest()


def check_ranks_agree(module: nn.Module, ranks: Ranks) -> str:
    """The digest of ``module``, after checking that every rank holds the same one (RuntimeError if not)."""
    digests = gather_objects(state_digest(module), ranks)
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"Expected every rank to hold the same {type(module).__name__} state after training, but their digests differ: {digests}"
        )
    return digests[0]
