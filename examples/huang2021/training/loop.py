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
(:mod:`.distributed`); only rank 0 writes checkpoints and metrics (:mod:`.checkpoints`).

A diverging method stops with :class:`TrainingDiverged`: on the CPU the library's own finite
checks raise :class:`~ensemble_diversity.NonFiniteError` at the first NaN or inf; on an
accelerator, where those checks are off (they would wait for the device), a flag kept on the
device notes the first step whose loss is not finite and is read every ``CHECK_EVERY`` steps
and at the epoch's end. The epoch's checkpoint is then not written, so the last good one stays.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ensemble_diversity import Ensemble, NonFiniteError, PriorityDiversifiedDropout, draw_layer

from ..data.augmentation import CropFlip, epoch_generator
from ..data.splits import DATASETS, Split, Splits, batch_images
from ..measures.clean import correct_on, ensemble_correct
from ..members import build_members
from ..progress import EpochProgress
from ..run_dir import METRICS, append_jsonl, checkpoint_path, load_torch, model_path, save_torch
from .checkpoints import TrainingState, checkpoint, log_missing, restore
from .config import TrainingConfig
from .distributed import SINGLE, EnsembleForward, Ranks, all_reduce_max, all_reduce_sum, broadcast_buffers, shard_rows
from .methods import METHODS, Method, parse_methods
from .objective import PeerStep, training_objective

CHECK_EVERY = 10
"""Steps between reads of the on-device divergence flag: one host synchronisation per 10 steps."""


class TrainingDiverged(RuntimeError):
    """A method's training produced NaN or inf; the message says where, what is kept and what to change."""


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


def train_method(
    name: str,
    config: TrainingConfig,
    splits: Splits,
    run_dir: Path,
    device: torch.device,
    *,
    epoch_budget: int | None = None,
    ranks: Ranks = SINGLE,
) -> TrainedMethod | None:
    """Train method ``name`` from its checkpoint in ``run_dir`` (or from scratch) up to ``--epochs``.

    Returns None when it stopped after ``epoch_budget`` epochs (the caller's
    ``--stop-after-epochs``) before the last one; the checkpoint then lets a later session go
    on exactly where this one stopped. Under ``torchrun`` every rank calls it; rank 0 writes.
    """
    epochs = config.optimisation.epochs
    # The run's thread count (stored in config.json), so a resumed session computes as the first did.
    torch.set_num_threads(config.run.threads)
    state = _fresh_state(config, METHODS[name], device, ranks)
    checkpoint_file = checkpoint_path(run_dir, name)
    epoch, best, history = 0, None, []
    if checkpoint_file.exists():
        epoch, best, history = restore(load_torch(checkpoint_file), state, device, ranks)
        if ranks.is_main:
            log_missing(run_dir, name, history)
    elif METHODS[name].peer == "dverge" and config.peers.dverge_start == "baseline":
        _start_from_baseline(state, config, run_dir, device, ranks)
    first_epoch = epoch

    progress = EpochProgress(name, epoch, epochs) if ranks.is_main else None
    try:
        while epoch < epochs and (epoch_budget is None or epoch - first_epoch < epoch_budget):
            record = _train_epoch(name, config, state, splits, epoch + 1, ranks)
            epoch += 1
            if best is None or record["val_accuracy"] > best["val_accuracy"]:
                best = {"epoch": epoch, "val_accuracy": record["val_accuracy"], "members": copy.deepcopy(state.ensemble.members.state_dict())}
            history.append(record)
            saved = checkpoint(name, epoch, state, best, history, ranks)
            if ranks.is_main:
                # Checkpoint first, then log: a crash in between loses no epoch, and the resumed
                # session appends the missing line from the checkpoint's history.
                save_torch(checkpoint_file, saved)
                append_jsonl(run_dir / METRICS, [record])
                progress.update(record)
    finally:
        if progress is not None:
            progress.close()

    if epoch < epochs:
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


def _start_from_baseline(state: TrainingState, config: TrainingConfig, run_dir: Path, device: torch.device, ranks: Ranks) -> None:
    """DVERGE's official start: the members of this run's kept baseline, when ``--methods`` trained it before dverge."""
    if ranks.distributed:
        torch.distributed.barrier()  # rank 0 writes model-baseline.pt after the baseline's last epoch
    names = parse_methods(config.run.methods)
    baseline = model_path(run_dir, "baseline")
    if "baseline" not in names or names.index("baseline") > names.index("dverge") or not baseline.exists():
        if ranks.is_main:
            print("dverge: no trained baseline in this run (--methods lists baseline before dverge for one): starting from the initial members")
        return
    state.ensemble.load_state_dict(load_torch(baseline)["ensemble"])
    state.ensemble.to(device)
    if ranks.is_main:
        print(f"dverge: starting from this run's baseline ({config.optimisation.epochs} epochs), so its members train {2 * config.optimisation.epochs} epochs in all")


def _peer_step(config: TrainingConfig, method: Method, ensemble: Ensemble, epoch: int) -> PeerStep | None:
    """The peer's settings with this epoch's TRS radius and DVERGE layer; None for the other methods."""
    if method.peer is None:
        return None
    peers, epochs = config.peers, config.optimisation.epochs
    low, high = peers.trs_eps
    # The official ramp: epoch counted from 0, so the last epoch stays one step short of END.
    trs_eps = low + (high - low) * (epoch - 1) / epochs
    layer: str | None = peers.dverge_layer
    if layer == "features":
        layer = None
    elif layer == "random":
        layer = draw_layer(distillation_layers(ensemble), seed=config.run.seed, epoch=epoch)
    return PeerStep(peers, trs_eps, layer)


def distillation_layers(ensemble: Ensemble) -> list[str | None]:
    """``--dverge-layer random``'s candidates: every BatchNorm of the members (a conv's pre-activation), None (the head's input) and the head (logits)."""
    member = ensemble.members[0]
    norms = [name for name, module in member.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    head = ensemble.heads[0] if ensemble.heads is not None else None
    return [*norms, None, *([head] if head else [])]


def _fresh_state(config: TrainingConfig, method: Method, device: torch.device, ranks: Ranks) -> TrainingState:
    run, optimisation, settings = config.run, config.optimisation, config.pdd
    # Same seed for every method: all start from the same initial members and see the
    # batches in the same order, so the comparison isolates the regularisers.
    torch.manual_seed(run.seed)
    spec = DATASETS[run.dataset]
    members = build_members(run.members, run.width, spec.num_classes, arch=run.arch, in_channels=spec.in_channels)
    pdd = None
    if method.pdd:
        # Batch statistics are all-reduced under torch.distributed, so every rank uses the
        # global batch's; per-sample ones need no syncing (docs/method.md). The priority
        # counts are summed over ranks by the library at every step.
        pdd = PriorityDiversifiedDropout(
            run.members,
            settings.num_intervals,
            settings.alpha,
            settings.beta,
            statistics=settings.pdd_statistics,
            rescale=settings.pdd_scaling == "inverted",
            sync_statistics=settings.pdd_statistics == "batch",
        )
    # PDD between the members' features and heads; its priority counts are saved with the ensemble.
    ensemble = Ensemble(members, pdd=pdd).to(device)
    optimizer = torch.optim.SGD(
        ensemble.parameters(), lr=optimisation.lr, momentum=optimisation.momentum, weight_decay=optimisation.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optimisation.epochs, eta_min=optimisation.min_lr)
    model: nn.Module = EnsembleForward(ensemble)
    if ranks.distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # Same members everywhere, but each rank its own dropout masks for its own samples.
        (rank_seed,) = np.random.SeedSequence([run.seed, ranks.rank]).generate_state(1, dtype=np.uint64)
        torch.manual_seed(int(rank_seed))
    # The batch order is the global one, the same on every rank, which then takes its shard.
    return TrainingState(ensemble, model, optimizer, scheduler, torch.Generator().manual_seed(run.seed))


def _train_epoch(name: str, config: TrainingConfig, state: TrainingState, splits: Splits, epoch: int, ranks: Ranks) -> dict[str, Any]:
    """One pass over the training split, then the ensemble's validation accuracy: the epoch's metrics line."""
    start = time.perf_counter()
    method = METHODS[name]
    run, weights = config.run, config.weights
    lr = state.optimizer.param_groups[0]["lr"]
    state.ensemble.train()
    images, labels = splits.train
    order = torch.randperm(len(labels), generator=state.batch_order).to(labels.device)
    batches = order.split(config.optimisation.batch_size)[: run.max_batches]
    # Drawn from (seed, epoch) alone: a resumed run augments as an uninterrupted one.
    augmentation = epoch_generator(run.seed, epoch) if DATASETS[run.dataset].augment else None
    # Running sums stay on the device: reading them back every batch would stall a GPU.
    loss_sum = torch.zeros((), device=labels.device)
    penalty_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    seen = torch.zeros((), dtype=torch.long, device=labels.device)
    penalised = torch.zeros((), dtype=torch.long, device=labels.device)
    peer = _peer_step(config, method, state.ensemble, epoch)
    # The first step (1-based) whose loss was not finite, and that loss; -1 while none.
    diverged_step = torch.full((), -1, dtype=torch.long, device=labels.device)
    diverged_loss = torch.zeros((), device=labels.device)
    for index, batch in enumerate(batches):
        # Counted from the run's first step, so a resumed run penalises the same steps.
        with_penalty = ((epoch - 1) * len(batches) + index) % config.optimisation.deg_every == 0
        crops = None if augmentation is None else CropFlip.draw(len(batch), augmentation)
        if len(batch) < ranks.world_size:  # a last batch too small to give every rank a row
            continue
        rows = shard_rows(len(batch), ranks)
        batch = batch[rows]
        batch_x = batch_images(images, batch, None if crops is None else crops.select(rows))
        try:
            with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=config.optimisation.amp == "bf16"):
                objective = training_objective(
                    method, state.model, batch_x, labels[batch], weights, config.adversarial, with_penalty=with_penalty,
                    **({"peer": peer} if peer is not None else {}),
                )  # fmt: skip
        except NonFiniteError as error:
            what = f"a value the library checks became NaN or inf ({error})"
            raise TrainingDiverged(divergence_message(name, config, epoch, index + 1, what)) from None
        state.optimizer.zero_grad(set_to_none=True)
        objective.loss.backward()
        if ranks.distributed and method.peer is not None:
            _average_gradients(state.ensemble, ranks)
        state.optimizer.step()
        loss = objective.loss.detach()
        first = (diverged_step < 0) & ~torch.isfinite(loss)
        diverged_step = torch.where(first, index + 1, diverged_step)
        diverged_loss = torch.where(first, loss, diverged_loss)
        if (index + 1) % CHECK_EVERY == 0 or index + 1 == len(batches):
            # Every rank must stop together: the largest step any rank saw diverge.
            step = int(all_reduce_max(diverged_step, ranks).item())
            if step > 0:
                what = f"its training loss was {diverged_loss.item()}"
                raise TrainingDiverged(divergence_message(name, config, epoch, step, what))
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
        "val_accuracy": validation_accuracy(state.ensemble, splits.validation, run.eval_batch_size, ranks),
        "lr": lr,
        "seconds": time.perf_counter() - start,
    }


def _average_gradients(ensemble: Ensemble, ranks: Ranks) -> None:
    """Under ``torchrun``, for the peers, whose passes bypass DDP's wrapper: each gradient averaged over the ranks."""
    for parameter in ensemble.parameters():
        if parameter.grad is not None:
            all_reduce_sum(parameter.grad, ranks).div_(ranks.world_size)


def divergence_message(name: str, config: TrainingConfig, epoch: int, step: int, what: str) -> str:
    """What a user reads when method ``name`` diverges: where, what is kept, the usual causes."""
    optimisation, weights = config.optimisation, config.weights
    kept = f"the checkpoint of epoch {epoch - 1}, with the best members so far, is kept" if epoch > 1 else "no epoch completed, so nothing is kept"
    return (
        f"{name} diverged in epoch {epoch}, step {step}: {what}. The method stops ({kept}); the run's other "
        f"methods still train. Usual causes: a learning rate too high (--lr {optimisation.lr}), a regulariser "
        f"weight too large (--deg-lambda {weights.deg_lambda}, --gal-lambda {weights.gal_lambda}, --adp-alpha "
        f"{weights.adp_alpha}, --adp-beta {weights.adp_beta}, --trs-similarity {config.peers.trs_similarity}, "
        f"--trs-smoothness {config.peers.trs_smoothness}) or bfloat16 (--amp {optimisation.amp}). Start a new run "
        "with a lower --lr; --resume would go on from the last good epoch with the same flags."
    )


def validation_accuracy(ensemble: Ensemble, split: Split, batch_size: int, ranks: Ranks = SINGLE) -> float:
    """Accuracy of the ensemble (averaged probabilities) on ``split``, in eval mode, ``batch_size`` images at a time.

    Under ``torchrun`` each rank scores its share of the images and the counts are summed.
    """
    rows = shard_rows(len(split.labels), ranks)
    correct = correct_on(ensemble, Split(split.images[rows], split.labels[rows]), batch_size).sum()
    return all_reduce_sum(correct, ranks).item() / len(split.labels)
