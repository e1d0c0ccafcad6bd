"""What the training runs measured themselves, beside a merged evaluation: clean accuracy,
the diversity metrics (ambiguity entropy E, eq. 5; discrimination score L_F, eq. 6; the
members' gradient angle, Fig. 3), epochs and training time, per method over the seeds.

An evaluation part may hold the run's ``results.json`` as :data:`TRAINING_JSON` and its
``config.json`` as :data:`TRAINING_CONFIG` (``examples/mnist_study.sh`` copies both beside the
evaluation's own files), so a report can be assembled from committed files alone, without the
models.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..run_dir import load_json

TRAINING_JSON = "training.json"
TRAINING_CONFIG = "training-config.json"

COLUMNS = (
    ("test acc %", "test_accuracy", 100.0, 1),
    ("E (eq. 5)", "ambiguity_entropy", 1.0, 3),
    ("L_F (eq. 6)", "discrimination_score", 1.0, 3),
    ("angle deg", "gradient_angle_degrees", 1.0, 1),
    ("train min", "train_seconds", 1 / 60, 1),
)
"""(header, key in the run's results, scale, decimals)."""


def total_epochs(method: str, flags: dict[str, Any]) -> int:
    """Epochs the method's members trained in all: DVERGE started from its run's trained baseline adds the baseline's."""
    epochs = int(flags["epochs"])
    methods = flags["methods"].split(",")
    if method == "dverge" and flags.get("dverge_start") == "baseline" and "baseline" in methods:
        return 2 * epochs
    return epochs


def training_section(parts: list[Path]) -> str:
    """A Markdown section over every part holding :data:`TRAINING_JSON` and :data:`TRAINING_CONFIG` ("" if none does).

    A cell is the value of one seed, or ``mean ± std`` (ddof 1) over the seeds; a method that two
    parts of one seed both trained is refused (ValueError naming the parts).
    """
    values: dict[str, dict[int, dict[str, Any]]] = {}
    where: dict[tuple[str, int], Path] = {}
    for part in parts:
        if not (part / TRAINING_JSON).exists() or not (part / TRAINING_CONFIG).exists():
            continue
        flags = load_json(part / TRAINING_CONFIG)["flags"]
        seed = int(flags["seed"])
        for method, measured in load_json(part / TRAINING_JSON)["methods"].items():
            if (method, seed) in where:
                raise ValueError(f"Expected one training result per method and seed, but {method!r} of seed {seed} is in both {str(where[method, seed])!r} and {str(part)!r}")
            where[method, seed] = part
            values.setdefault(method, {})[seed] = {**measured, "epochs": total_epochs(method, flags)}
    if not values:
        return ""
    header = ["method", "seeds", *(name for name, *_ in COLUMNS), "epochs"]
    rows = []
    for method, seeds in values.items():
        cells = [mean_std([seeds[s][key] * scale for s in sorted(seeds)], decimals) for _, key, scale, decimals in COLUMNS]
        epochs = sorted({seeds[s]["epochs"] for s in seeds})
        rows.append([method, ", ".join(str(s) for s in sorted(seeds)), *cells, "/".join(str(e) for e in epochs)])
    lines = [
        "## Training runs: clean accuracy and diversity",
        "",
        "As each training run measured its kept ensemble on all test images of its seed's split "
        "(`examples/train.py`'s table): test accuracy and the ambiguity entropy E (eq. 5) over all of them; "
        "L_F (eq. 6) and the members' gradient angle (Fig. 3) over the images that every method *of that run* "
        "classifies correctly, so methods trained in different runs are measured on slightly different images. "
        "\"epochs\": the members' epochs in all (DVERGE adds those of the baseline it starts from); "
        "\"train min\": the method's own training, one thread. One seed: the value; several: mean ± std (ddof 1).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def mean_std(values: list[float], decimals: int) -> str:
    """One value, or ``mean ± std`` (ddof 1) of several, with ``decimals`` decimals."""
    if len(values) == 1:
        return f"{values[0]:.{decimals}f}"
    return f"{statistics.mean(values):.{decimals}f} ± {statistics.stdev(values):.{decimals}f}"
