"""Rebuild the kept ensembles of a finished run from its ``model-<method>.pt`` files.

Each model file records how its members were built (architecture, width, input channels,
classes: see ``train.py``), so a later evaluation needs nothing but the run directory.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ensemble_diversity.ensemble import Ensemble

from .members import build_members
from .run_dir import MODEL_PREFIX, load_torch


def load_trained_ensembles(run_dir: Path) -> dict[str, nn.ModuleList]:
    """``{method: members}`` for every kept model in ``run_dir``, members in eval mode, on the CPU.

    Model files written before the architecture was recorded hold the digits CNN members.
    Raises ValueError naming ``run_dir`` when it holds no model file.
    """
    run_dir = Path(run_dir)
    paths = sorted(run_dir.glob(f"{MODEL_PREFIX}*.pt"))
    if not paths:
        raise ValueError(f"Expected run_dir {str(run_dir)!r} to hold {MODEL_PREFIX}<method>.pt files of a finished run, but found none")
    ensembles = {}
    for path in paths:
        saved = load_torch(path)
        members = build_members(
            saved["members"],
            saved["width"],
            saved.get("num_classes", 10),
            arch=saved.get("arch", "cnn"),
            in_channels=saved.get("in_channels", 1),
        )
        # The ensemble's state dict holds the members under "members.<k>."; loading it through
        # Ensemble checks every key and shape.
        Ensemble(members).load_state_dict(saved["ensemble"])
        ensembles[path.stem.removeprefix(MODEL_PREFIX)] = members.eval()
    return ensembles
