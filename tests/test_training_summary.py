"""``huang2021/evaluation/training_summary.py``: the training runs' own measurements (clean
accuracy, E, L_F, angle, epochs, time) per method over seeds, from the files a part carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huang2021.evaluation.training_summary import TRAINING_CONFIG, TRAINING_JSON, total_epochs, training_section


def _part(root: Path, name: str, seed: int, methods: dict[str, float], *, epochs: int = 10, dverge_start: str = "baseline") -> Path:
    """A part whose run trained ``methods`` (name -> test accuracy) with ``seed``."""
    part = root / name
    part.mkdir()
    measured = {
        method: {"test_accuracy": accuracy, "ambiguity_entropy": 0.1 * (seed + 1), "discrimination_score": 0.5,
                 "gradient_angle_degrees": 80.0 + seed, "train_seconds": 60.0 * (seed + 1), "best_epoch": epochs, "val_accuracy": accuracy}
        for method, accuracy in methods.items()
    }
    (part / TRAINING_JSON).write_text(json.dumps({"test_images": 1000, "methods": measured}))
    flags = {"seed": seed, "epochs": epochs, "methods": ",".join(methods), "dverge_start": dverge_start}
    (part / TRAINING_CONFIG).write_text(json.dumps({"flags": flags}))
    return part


def _row(section: str, method: str) -> list[str]:
    line = next(line for line in section.splitlines() if line.startswith(f"| {method} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_one_row_per_method_with_mean_and_std_over_the_seeds(tmp_path):
    parts = [_part(tmp_path, "a0", 0, {"baseline": 0.90, "dverge": 0.80}), _part(tmp_path, "b0", 0, {"trs": 0.70}),
             _part(tmp_path, "a1", 1, {"baseline": 0.80, "dverge": 0.84})]
    section = training_section(parts)
    # baseline: 90 and 80 -> mean 85.0, std (ddof 1) 7.07; E 0.1 and 0.2; angle 80 and 81; 1 and 2 minutes.
    assert _row(section, "baseline") == ["baseline", "0, 1", "85.0 ± 7.1", "0.150 ± 0.071", "0.500 ± 0.000", "80.5 ± 0.7", "1.5 ± 0.7", "10"]
    assert _row(section, "trs") == ["trs", "0", "70.0", "0.100", "0.500", "80.0", "1.0", "10"]
    # DVERGE started from its run's baseline trained 10 + 10 epochs.
    assert _row(section, "dverge")[-1] == "20"


def test_epochs_count_the_baseline_dverge_starts_from_only_when_it_does():
    flags = {"epochs": 7, "methods": "baseline,dverge", "dverge_start": "baseline"}
    assert (total_epochs("dverge", flags), total_epochs("baseline", flags)) == (14, 7)
    assert total_epochs("dverge", {**flags, "dverge_start": "scratch"}) == 7
    assert total_epochs("dverge", {**flags, "methods": "dverge"}) == 7


def test_parts_without_training_files_give_no_section_and_a_method_twice_per_seed_is_refused(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    assert training_section([bare]) == ""
    parts = [_part(tmp_path, "a0", 0, {"pdd": 0.9}), _part(tmp_path, "b0", 0, {"pdd": 0.8})]
    with pytest.raises(ValueError, match="'pdd' of seed 0 is in both"):
        training_section(parts)
