"""Load what ``examples/train.py`` kept: a run directory's trained ensembles, in eval mode.

A training run directory holds ``config.json`` (the resolved flags under ``"flags"``) and one
``model-<method>.pt`` per finished method: ``{"ensemble": Ensemble(members).state_dict(),
"members": K, "width": ..., "arch": ..., "in_channels": ..., "num_classes": ...}``. Each model
file records how its members were built, so a later evaluation needs nothing but the run
directory; files written before the architecture was recorded hold the digits CNN members.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ensemble_diversity.ensemble import Ensemble

from .data import Split, batch_images, load_splits
from .members import build_members
from .methods import parse_methods
from .run_dir import CONFIG, load_json, load_torch, model_path


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
    flags = run_flags(run_dir)
    ensembles = {}
    for method in parse_methods(flags["methods"]):
        path = model_path(run_dir, method)
        if not path.is_file():
            raise ValueError(
                f"Expected {path.name} in {str(run_dir)!r} (its --methods lists {method!r}), but it is missing; "
                f"finish the run with examples/train.py --resume {run_dir}"
            )
        saved = load_torch(path)
        members = build_members(
            saved["members"],
            saved["width"],
            saved.get("num_classes", 10),
            arch=saved.get("arch", "cnn"),
            in_channels=saved.get("in_channels", 1),
        )
        # Ensemble's state dict holds the members under "members.<k>."; loading it through
        # Ensemble checks every key and shape.
        try:
            Ensemble(members).load_state_dict(saved["ensemble"])
        except RuntimeError as error:
            raise ValueError(f"Expected {path} to hold the members it records, but: {error}") from None
        ensembles[method] = members.eval()
    return ensembles


def test_split(flags: dict[str, Any], device: torch.device) -> Split:
    """The test split of a run with these ``flags`` (data set, data root, seed, validation fraction), on ``device``.

    Images as float32 in [0, 1] (the image data sets are held as uint8 for training), ready for attacks.
    """
    test = load_splits(
        flags["dataset"],
        Path(flags.get("data_root") or "data"),
        flags["seed"],
        device,
        val_fraction=flags.get("val_fraction"),
    ).test
    return Split(batch_images(test.images, torch.arange(len(test.labels), device=test.labels.device)), test.labels)
