"""Simultaneous training of one method's K members, one checkpoint per completed epoch.

The recipe is the authors' (github.com/ALIS-Lab/AAAI2021-PDD): one SGD optimiser over all
members' parameters (momentum 0.9, weight decay 5e-4, lr 0.02), cosine annealing of the
learning rate per epoch down to 1e-4, batches of 64. Where they keep the epoch with the best
*test* accuracy, this keeps the one with the best *validation* accuracy, so the test split
is read only by the final evaluation.

``--amp bf16`` runs each training step's forward passes and losses (the adversarial crafting
included) under ``torch.autocast`` to bfloat16, on CUDA and on CPU alike; the backward pass,
the parameters, the optimiser and the validation pass stay in float32. bfloat16 has float32's
exponent range, so no loss scaling is needed.

Under ``torchrun`` each rank trains on its shard of every batch through DistributedDataParallel
(:mod:`ed_examples.distributed`); only rank 0 writes checkpoints and metrics.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ensemble_diversity import Ensemble, PriorityDiversifiedDropout

from .adversarial import DEFAULT_ADVERSARIAL_TRAINING, AdversarialTraining
from .data import DATASETS, CropFlip, Split, Splits, batch_images, epoch_generator, split_batches
from .distributed import (
    SINGLE,
    EnsembleForward,
    Ranks,
    all_reduce_sum,
    broadcast_buffers,
    gather_objects,
    shard_rows,
)
from .members import build_members
from .methods import METHODS, Method, Weights, ensemble_correct, training_objective
from .progress import EpochProgress
from .run_dir import (
    METRICS,
    append_jsonl,
    checkpoint_path,
    load_torch,
    read_jsonl,
    save_torch,
)

PDD_SCALINGS = ("inverted", "authors")
"""``--pdd-scaling``: inverted dropout (the library's default, ``rescale=True``) or the authors' unscaled mask."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a method trains (all from the command line)."""

    dataset: str
    arch: str
    num_members: int
    width: int
    epochs: int
    batch_size: int
    lr: float
    min_lr: float
    momentum: float
    weight_decay: float
    alpha: float
    beta: float
    pdd_scaling: Literal["inverted", "authors"]
    """``--pdd-scaling``: PDD's kept units divided by their keep rate, or passed unchanged (the authors' code)."""
    pdd_statistics: str
    num_intervals: int | None
    weights: Weights
    seed: int
    max_batches: int | None
    eval_batch_size: int
    deg_every: int = 1
    adversarial: AdversarialTraining = DEFAULT_ADVERSARIAL_TRAINING
    """How the ``advt-*`` methods craft and weigh adversarial examples."""
    amp: Literal["none", "bf16"] = "none"
    """Autocast dtype of the training step's forward passes and losses."""


class TrainedMethod(NamedTuple):
    members: nn.ModuleList
    """The kept members (best validation accuracy), in eval mode."""
    pdd: PriorityDiversifiedDropout | None
    """The method's PDD after its last epoch (``priority_counts`` over the whole run), or None."""
    best_epoch: int
    val_accuracy: float
    train_seconds: float
    """Sum of the epochs' wall times, over every session of a resumed run."""
    epochs_run: int
    """Epochs trained in this session (0 when the checkpoint was already complete)."""


class _State(NamedTuple):
    ensemble: Ensemble
    """The K members, with the method's PDD between their features and heads (or none)."""
    model: nn.Module
    """The training forward: ``EnsembleForward(ensemble)``, wrapped in DDP under ``torchrun``."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batch_order: torch.Generator


def train_method(
    name: str,
    recipe: Recipe,
    splits: Splits,
    run_dir: Path,
    device: torch.device,
    *,
    epoch_budget: int | None = None,
    ranks: Ranks = SINGLE,
) -> TrainedMethod | None:
    """Train method ``name`` from its checkpoint in ``run_dir`` (or from scratch) up to ``recipe.epochs``.

    Returns None when it stopped after ``epoch_budget`` epochs (the caller's
    ``--stop-after-epochs``) before the last one; the checkpoint then lets a later session go
    on exactly where this one stopped. Under ``torchrun`` every rank calls it; rank 0 writes.
    """
    state = _fresh_state(recipe, METHODS[name], device, ranks)
    checkpoint_file = checkpoint_path(run_dir, name)
    epoch, best, history = 0, None, []
    if checkpoint_file.exists():
        epoch, best, history = _restore(load_torch(checkpoint_file), state, device, ranks)
        if ranks.is_main:
            _log_missing(run_dir, name, history)
    first_epoch = epoch

    progress = EpochProgress(name, epoch, recipe.epochs) if ranks.is_main else None
    try:
        while epoch < recipe.epochs and (epoch_budget is None or epoch - first_epoch < epoch_budget):
            record = _train_epoch(name, recipe, state, splits, epoch + 1, ranks)
            epoch += 1
            if best is None or record["val_accuracy"] > best["val_accuracy"]:
                best = {"epoch": epoch, "val_accuracy": record["val_accuracy"], "members": copy.deepcopy(state.ensemble.members.state_dict())}
            history.append(record)
            checkpoint = _checkpoint(name, epoch, state, best, history, ranks)
            if ranks.is_main:
                # Checkpoint first, then log: a crash in between loses no epoch, and the resumed
                # session appends the missing line from the checkpoint's history.
                save_torch(checkpoint_file, checkpoint)
                append_jsonl(run_dir / METRICS, [record])
                progress.update(record)
    finally:
        if progress is not None:
            progress.close()

    if epoch < recipe.epochs:
        return None
    members = state.ensemble.members
    members.load_state_dict(best["members"])
    members.eval()
    return TrainedMethod(
        members,
        state.ensemble.pdd,
        best["epoch"],
        best["val_accuracy"],
        sum(record["seconds"] for record in history),
        epoch - first_epoch,
    )


def _fresh_state(recipe: Recipe, method: Method, device: torch.device, ranks: Ranks) -> _State:
    # Same seed for every method: all start from the same initial members and see the
    # batches in the same order, so the comparison isolates the regularisers.
    torch.manual_seed(recipe.seed)
    spec = DATASETS[recipe.dataset]
    members = build_members(
        recipe.num_members, recipe.width, spec.num_classes, arch=recipe.arch, in_channels=spec.in_channels
    )
    pdd = None
    if method.pdd:
        # Batch statistics are all-reduced under torch.distributed, so every rank uses the
        # global batch's; per-sample ones need no syncing (docs/method.md). The priority
        # counts are summed over ranks by the library at every step.
        pdd = PriorityDiversifiedDropout(
            recipe.num_members,
            recipe.num_intervals,
            recipe.alpha,
            recipe.beta,
            statistics=recipe.pdd_statistics,
            rescale=recipe.pdd_scaling == "inverted",
            sync_statistics=recipe.pdd_statistics == "batch",
        )
    # PDD between the members' features and heads; its priority counts are saved with the ensemble.
    ensemble = Ensemble(members, pdd=pdd).to(device)
    optimizer = torch.optim.SGD(
        ensemble.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs, eta_min=recipe.min_lr)
    model: nn.Module = EnsembleForward(ensemble)
    if ranks.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # Same members everywhere, but each rank its own dropout masks for its own samples.
        (rank_seed,) = np.random.SeedSequence([recipe.seed, ranks.rank]).generate_state(1, dtype=np.uint64)
        torch.manual_seed(int(rank_seed))
    # The batch order is the global one, the same on every rank, which then takes its shard.
    return _State(ensemble, model, optimizer, scheduler, torch.Generator().manual_seed(recipe.seed))


def _train_epoch(name: str, recipe: Recipe, state: _State, splits: Splits, epoch: int, ranks: Ranks) -> dict[str, Any]:
    """One pass over the training split, then the ensemble's validation accuracy: the epoch's metrics line."""
    start = time.perf_counter()
    method = METHODS[name]
    lr = state.optimizer.param_groups[0]["lr"]
    state.ensemble.train()
    images, labels = splits.train
    order = torch.randperm(len(labels), generator=state.batch_order).to(labels.device)
    batches = order.split(recipe.batch_size)[: recipe.max_batches]
    # Drawn from (seed, epoch) alone: a resumed run augments as an uninterrupted one.
    augmentation = epoch_generator(recipe.seed, epoch) if DATASETS[recipe.dataset].augment else None
    # Running sums stay on the device: reading them back every batch would stall a GPU.
    loss_sum = torch.zeros((), device=labels.device)
    penalty_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    seen = torch.zeros((), dtype=torch.long, device=labels.device)
    penalised = torch.zeros((), dtype=torch.long, device=labels.device)
    for index, batch in enumerate(batches):
        # Counted from the run's first step, so a resumed run penalises the same steps.
        with_penalty = ((epoch - 1) * len(batches) + index) % recipe.deg_every == 0
        crops = None if augmentation is None else CropFlip.draw(len(batch), augmentation)
        if len(batch) < ranks.world_size:  # a last batch too small to give every rank a row
            continue
        rows = shard_rows(len(batch), ranks)
        batch = batch[rows]
        batch_x = batch_images(images, batch, None if crops is None else crops.select(rows))
        with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=recipe.amp == "bf16"):
            objective = training_objective(
                method, state.ensemble, batch_x, labels[batch], recipe.weights, recipe.adversarial,
                with_penalty=with_penalty, model=state.model,
            )
        state.optimizer.zero_grad(set_to_none=True)
        objective.loss.backward()
        state.optimizer.step()
        size = len(batch)
        loss_sum += objective.loss.detach() * size
        if with_penalty:
            penalty_sum += objective.penalty * size
            penalised += size
        correct += ensemble_correct(objective.logits, labels[batch]).sum()
        seen += size
    state.scheduler.step()
    # DDP gives every rank rank 0's buffers at each forward, so after the epoch's last step each
    # rank still holds its own BatchNorm statistics; validation and checkpoints need rank 0's.
    broadcast_buffers(state.ensemble.members, ranks)
    totals = all_reduce_sum(
        torch.stack([loss_sum, penalty_sum, correct.double(), seen.double(), penalised.double()]).double(), ranks
    ).tolist()
    return {
        "method": name,
        "epoch": epoch,
        "loss": totals[0] / totals[3],
        "penalty": totals[1] / max(totals[4], 1),
        "train_accuracy": totals[2] / totals[3],
        "val_accuracy": validation_accuracy(state.ensemble, splits.validation, recipe.eval_batch_size, ranks),
        "lr": lr,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def validation_accuracy(ensemble: Ensemble, split: Split, batch_size: int, ranks: Ranks = SINGLE) -> float:
    """Accuracy of the ensemble (averaged probabilities) on ``split``, in eval mode, ``batch_size`` images at a time.

    Under ``torchrun`` each rank scores its share of the images and the counts are summed.
    """
    ensemble.eval()
    rows = shard_rows(len(split.labels), ranks)
    shard = Split(split.images[rows], split.labels[rows])
    correct = torch.zeros((), dtype=torch.long, device=split.labels.device)
    for images, labels in split_batches(shard, batch_size):
        correct += ensemble_correct(ensemble.member_logits(images), labels).sum()
    return all_reduce_sum(correct, ranks).item() / len(split.labels)


def _checkpoint(name: str, epoch: int, state: _State, best: dict[str, Any], history: list[dict[str, Any]], ranks: Ranks) -> dict[str, Any]:
    """The state to resume from; under ``torchrun`` it holds every rank's RNG states (a collective call)."""
    rng = _rng_state(state)
    return {
        "method": name,
        "epoch": epoch,
        "ensemble": state.ensemble.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": {**rng, "ranks": gather_objects(rng, ranks) if ranks.distributed else []},
        "best": best,
        "history": history,
    }


def _rng_state(state: _State) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_order": state.batch_order.get_state(),
    }


def _restore(
    checkpoint: dict[str, Any], state: _State, device: torch.device, ranks: Ranks
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    state.ensemble.load_state_dict(checkpoint["ensemble"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    rng = checkpoint["rng"]
    # This rank's own states when the run had as many ranks; rank 0's otherwise (the run then
    # goes on correctly, but with other dropout masks than an uninterrupted one would draw).
    per_rank = rng.get("ranks", [])
    if len(per_rank) == ranks.world_size:
        rng = per_rank[ranks.rank]
    elif ranks.distributed or per_rank:
        print(f"note: the checkpoint was written by {max(len(per_rank), 1)} process(es), this run has {ranks.world_size}; the resumed run draws other dropout masks than an uninterrupted one")
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    state.batch_order.set_state(rng["batch_order"])
    return checkpoint["epoch"], checkpoint["best"], checkpoint["history"]


def _log_missing(run_dir: Path, name: str, history: list[dict[str, Any]]) -> None:
    """Append the checkpointed epochs that ``metrics.jsonl`` lacks (a crash between checkpoint and log)."""
    logged = {record["epoch"] for record in read_jsonl(run_dir / METRICS) if record["method"] == name}
    append_jsonl(run_dir / METRICS, [record for record in history if record["epoch"] not in logged])
