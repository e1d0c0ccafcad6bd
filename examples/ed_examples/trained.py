"""Load what ``examples/train.py`` kept: a run directory's trained ensembles, in eval mode.

A training run directory holds ``config.json`` (the resolved flags under ``"flags"``) and one
``model-<method>.pt`` per finished method: ``{"ensemble": Ensemble(members).state_dict(),
"members": K, "width": ..., ...}`` (see ``ed_examples/run_dir.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ensemble_diversity.ensemble import Ensemble

from .data import NUM_CLASSES
from .members import build_members
from .methods import parse_methods
from .run_dir import CONFIG, load_json, load_torch, model_path


def run_flags(run_dir: Path) -> dict[str, Any]:
    """The flags a training run was started with; ValueError when ``run_dir`` is not a training run directory."""
    if not (run_dir / CONFIG).is_file():
        raise ValueError(f"Expected a training run directory holding {CONFIG}, but {str(run_dir)!r} has none")
    return load_json(run_dir / CONFIG)["flags"]


def load_trained_ensembles(run_dir: Path) -> dict[str, nn.ModuleList]:
    """Every method's kept members in ``run_dir``, in the order of its ``--methods``, in eval mode on the CPU.

    Each value is the K members of one ensemble (``[K]`` modules mapping ``[B, 1, 8, 8]`` to
    logits ``[B, L]``). Raises ValueError naming the file when a method's model is missing (an
    unfinished run) or does not fit the run's flags.
    """
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
        members = build_members(saved["members"], saved["width"], NUM_CLASSES)
        # Ensemble's state dict prefixes the members with "members.", so load through it.
        try:
            Ensemble(members).load_state_dict(saved["ensemble"])
        except RuntimeError as error:
            raise ValueError(f"Expected {path} to hold the members the run's flags describe, but: {error}") from None
        ensembles[method] = members.eval()
    return ensembles
