"""What a training run keeps of its models: one checkpoint per method to resume from, and the kept model to evaluate.

- ``checkpoint-<method>.pt`` (:func:`checkpoint`, :func:`restore`): the last completed epoch,
  the training ``Ensemble``'s state (members, and PDD's settings and priority counts),
  optimiser, scheduler, RNG states (every rank's under ``torchrun``), the best members so far
  and the epoch history, so that ``--resume`` continues exactly.
- ``model-<method>.pt`` (:func:`save_kept_model`, :func:`load_trained_ensembles`):
  ``{"ensemble": Ensemble(members).state_dict(), "members": K, "arch": ..., "width": ...,
  "in_channels": ..., "num_classes": ..., "dataset": ..., "best_epoch": ..., "val_accuracy": ...}``,
  enough to rebuild the members from the run directory alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ensemble_diversity import Ensemble

from ..data.splits import DATASETS, Split, batch_images, load_splits
from ..members import build_members
from ..run_dir import CONFIG, METRICS, append_jsonl, load_json, load_torch, model_path, read_jsonl, save_torch
from .config import TrainingConfig
from .distributed import Ranks, gather_objects
from .methods import parse_methods


class TrainingState(NamedTuple):
    """What one method's training holds between steps."""

    ensemble: Ensemble
    """The K members, with the method's PDD between their features and heads (or none)."""
    model: nn.Module
    """The training forward: ``EnsembleForward(ensemble)``, wrapped in DDP under ``torchrun``."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batch_order: torch.Generator


def checkpoint(name: str, epoch: int, state: TrainingState, best: dict[str, Any], history: list[dict[str, Any]], ranks: Ranks) -> dict[str, Any]:
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


def _rng_state(state: TrainingState) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_order": state.batch_order.get_state(),
    }


def restore(saved: dict[str, Any], state: TrainingState, device: torch.device, ranks: Ranks) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Load a :func:`checkpoint` into ``state`` and the RNGs; returns the epoch, the best members so far and the history."""
    state.ensemble.load_state_dict(saved["ensemble"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    # This rank's own states when the run had as many ranks; rank 0's otherwise (the run then
    # goes on correctly, but with other dropout masks than an uninterrupted one would draw).
    per_rank = rng["ranks"]
    if len(per_rank) == ranks.world_size:
        rng = per_rank[ranks.rank]
    elif ranks.distributed or per_rank:
        print(f"note: the checkpoint was written by {max(len(per_rank), 1)} process(es), this run has {ranks.world_size}; the resumed run draws other dropout masks than an uninterrupted one")
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    state.batch_order.set_state(rng["batch_order"])
    return saved["epoch"], saved["best"], saved["history"]


def log_missing(run_dir: Path, name: str, history: list[dict[str, Any]]) -> None:
    """Append the checkpointed epochs that ``metrics.jsonl`` lacks (a crash between checkpoint and log)."""
    logged = {record["epoch"] for record in read_jsonl(run_dir / METRICS) if record["method"] == name}
    append_jsonl(run_dir / METRICS, [record for record in history if record["epoch"] not in logged])


def save_kept_model(run_dir: Path, name: str, members: nn.ModuleList, config: TrainingConfig, *, best_epoch: int, val_accuracy: float) -> None:
    """Write ``model-<method>.pt``: the kept members and what rebuilds them."""
    run = config.run
    spec = DATASETS[run.dataset]
    save_torch(
        model_path(run_dir, name),
        {
            "ensemble": Ensemble(members).state_dict(),
            "members": run.members,
            "arch": run.arch,
            "width": run.width,
            "dataset": run.dataset,
            "in_channels": spec.in_channels,
            "num_classes": spec.num_classes,
            "best_epoch": best_epoch,
            "val_accuracy": val_accuracy,
        },
    )


def run_flags(run_dir: Path) -> dict[str, Any]:
    """The flags a training run was started with; ValueError when ``run_dir`` is not a training run directory."""
    if not (Path(run_dir) / CONFIG).is_file():
        raise ValueError(f"Expected a training run directory holding {CONFIG}, but {str(run_dir)!r} has none")
    return load_json(Path(run_dir) / CONFIG)["flags"]


def load_trained_ensembles(run_dir: Path) -> dict[str, nn.ModuleList]:
    """Every method's kept members in ``run_dir``, in the order of its ``--methods``, in eval mode on the CPU.

    Each value is the K members of one ensemble (modules mapping ``[B, C, H, W]`` to logits
    ``[B, L]``). Raises ValueError naming the file when a method's model is missing (an
    unfinished run) or does not fit what the file records.
    """
    run_dir = Path(run_dir)
    ensembles = {}
    for method in parse_methods(run_flags(run_dir)["methods"]):
        path = model_path(run_dir, method)
        if not path.is_file():
            raise ValueError(
                f"Expected {path.name} in {str(run_dir)!r} (its --methods lists {method!r}), but it is missing; "
                f"finish the run with examples/train.py --resume {run_dir}"
            )
        saved = load_torch(path)
        members = build_members(saved["members"], saved["width"], saved["num_classes"], arch=saved["arch"], in_channels=saved["in_channels"])
        # Ensemble's state dict holds the members under "members.<k>."; loading it through
        # Ensemble checks every key and shape.
        try:
            Ensemble(members).load_state_dict(saved["ensemble"])
        except RuntimeError as error:
            raise ValueError(f"Expected {path} to hold the members it records, but: {error}") from None
        ensembles[method] = members.eval()
    return ensembles


def load_test_split(flags: dict[str, Any], device: torch.device) -> Split:
    """The test split of a run with these ``flags`` (data set, data root, seed, validation fraction), on ``device``.

    Images as float32 in [0, 1] (the image data sets are held as uint8 for training), ready for attacks.
    """
    test = load_splits(flags["dataset"], Path(flags["data_root"]), flags["seed"], device, val_fraction=flags["val_fraction"]).test
    return Split(batch_images(test.images, torch.arange(len(test.labels), device=test.labels.device)), test.labels)
