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
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from ensemble_diversity.pdd import PriorityDiversifiedDropout

from .adversarial import DEFAULT_ADVERSARIAL_TRAINING, AdversarialTraining
from .data import NUM_CLASSES, Split, Splits
from .members import build_members, member_outputs
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


@dataclass(frozen=True)
class Recipe:
    """Everything that decides how a method trains (all from the command line)."""

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
    pdd_rescale: bool
    num_intervals: int | None
    weights: Weights
    seed: int
    max_batches: int | None
    deg_every: int = 1
    adversarial: AdversarialTraining = DEFAULT_ADVERSARIAL_TRAINING
    """How the ``advt-*`` methods craft and weigh adversarial examples."""
    amp: Literal["none", "bf16"] = "none"
    """Autocast dtype of the training step's forward passes and losses."""


class TrainedMethod(NamedTuple):
    members: nn.ModuleList
    """The kept members (best validation accuracy), in eval mode."""
    best_epoch: int
    val_accuracy: float
    train_seconds: float
    """Sum of the epochs' wall times, over every session of a resumed run."""
    epochs_run: int
    """Epochs trained in this session (0 when the checkpoint was already complete)."""


class _State(NamedTuple):
    members: nn.ModuleList
    pdd: nn.Module | None
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
) -> TrainedMethod | None:
    """Train method ``name`` from its checkpoint in ``run_dir`` (or from scratch) up to ``recipe.epochs``.

    Returns None when it stopped after ``epoch_budget`` epochs (the caller's
    ``--stop-after-epochs``) before the last one; the checkpoint then lets a later session go
    on exactly where this one stopped.
    """
    state = _fresh_state(recipe, METHODS[name], device)
    checkpoint_file = checkpoint_path(run_dir, name)
    epoch, best, history = 0, None, []
    if checkpoint_file.exists():
        epoch, best, history = _restore(load_torch(checkpoint_file), state, device)
        _log_missing(run_dir, name, history)
    first_epoch = epoch

    progress = EpochProgress(name, epoch, recipe.epochs)
    try:
        while epoch < recipe.epochs and (epoch_budget is None or epoch - first_epoch < epoch_budget):
            record = _train_epoch(name, recipe, state, splits, epoch + 1)
            epoch += 1
            if best is None or record["val_accuracy"] > best["val_accuracy"]:
                best = {"epoch": epoch, "val_accuracy": record["val_accuracy"], "members": copy.deepcopy(state.members.state_dict())}
            history.append(record)
            # Checkpoint first, then log: a crash in between loses no epoch, and the resumed
            # session appends the missing line from the checkpoint's history.
            save_torch(checkpoint_file, _checkpoint(name, epoch, state, best, history))
            append_jsonl(run_dir / METRICS, [record])
            progress.update(record)
    finally:
        progress.close()

    if epoch < recipe.epochs:
        return None
    members = state.members
    members.load_state_dict(best["members"])
    members.eval()
    return TrainedMethod(
        members,
        best["epoch"],
        best["val_accuracy"],
        sum(record["seconds"] for record in history),
        epoch - first_epoch,
    )


def _fresh_state(recipe: Recipe, method: Method, device: torch.device) -> _State:
    # Same seed for every method: all start from the same initial members and see the
    # batches in the same order, so the comparison isolates the regularisers.
    torch.manual_seed(recipe.seed)
    members = build_members(recipe.num_members, recipe.width, NUM_CLASSES).to(device)
    pdd = None
    if method.pdd:
        pdd = PriorityDiversifiedDropout(
            recipe.num_members, recipe.num_intervals, recipe.alpha, recipe.beta, rescale=recipe.pdd_rescale
        ).to(device)
    optimizer = torch.optim.SGD(
        members.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs, eta_min=recipe.min_lr)
    return _State(members, pdd, optimizer, scheduler, torch.Generator().manual_seed(recipe.seed))


def _train_epoch(name: str, recipe: Recipe, state: _State, splits: Splits, epoch: int) -> dict[str, Any]:
    """One pass over the training split, then the ensemble's validation accuracy: the epoch's metrics line."""
    start = time.perf_counter()
    method = METHODS[name]
    lr = state.optimizer.param_groups[0]["lr"]
    state.members.train()
    if state.pdd is not None:
        state.pdd.train()
    images, labels = splits.train
    order = torch.randperm(len(labels), generator=state.batch_order).to(labels.device)
    batches = order.split(recipe.batch_size)[: recipe.max_batches]
    # Running sums stay on the device: reading them back every batch would stall a GPU.
    loss_sum = torch.zeros((), device=labels.device)
    penalty_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    seen = penalised = 0
    for index, batch in enumerate(batches):
        # Counted from the run's first step, so a resumed run penalises the same steps.
        with_penalty = ((epoch - 1) * len(batches) + index) % recipe.deg_every == 0
        with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=recipe.amp == "bf16"):
            objective = training_objective(
                method, state.members, state.pdd, images[batch], labels[batch], recipe.weights, recipe.adversarial,
                with_penalty=with_penalty,
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
    return {
        "method": name,
        "epoch": epoch,
        "loss": loss_sum.item() / seen,
        "penalty": penalty_sum.item() / max(penalised, 1),
        "train_accuracy": correct.item() / seen,
        "val_accuracy": validation_accuracy(state.members, splits.validation),
        "lr": lr,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def validation_accuracy(members: nn.ModuleList, split: Split) -> float:
    """Accuracy of the ensemble (averaged probabilities) on ``split``, members in eval mode."""
    members.eval()
    logits = member_outputs(members, split.images).logits
    return ensemble_correct(logits, split.labels).float().mean().item()


def _checkpoint(name: str, epoch: int, state: _State, best: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "method": name,
        "epoch": epoch,
        "members": state.members.state_dict(),
        "pdd": None if state.pdd is None else state.pdd.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batch_order": state.batch_order.get_state(),
        },
        "best": best,
        "history": history,
    }


def _restore(checkpoint: dict[str, Any], state: _State, device: torch.device) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    state.members.load_state_dict(checkpoint["members"])
    if state.pdd is not None:
        state.pdd.load_state_dict(checkpoint["pdd"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if device.type == "cuda" and checkpoint["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    state.batch_order.set_state(checkpoint["rng"]["batch_order"])
    return checkpoint["epoch"], checkpoint["best"], checkpoint["history"]


def _log_missing(run_dir: Path, name: str, history: list[dict[str, Any]]) -> None:
    """Append the checkpointed epochs that ``metrics.jsonl`` lacks (a crash between checkpoint and log)."""
    logged = {record["epoch"] for record in read_jsonl(run_dir / METRICS) if record["method"] == name}
    append_jsonl(run_dir / METRICS, [record for record in history if record["epoch"] not in logged])
