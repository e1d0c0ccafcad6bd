"""Robustness results: robust accuracy of an ensemble under one attack, and the evaluation's results files.

Two accuracies per attack (both in every result):

- ``accuracy``, the headline: the fraction of **all** evaluated test images that the ensemble
  classifies correctly both before and after the attack (an image it already gets wrong counts
  as an error; an attack that uses the model's own prediction as its label can push such an
  image *onto* its true class, which must not count as robustness);
- ``conditional_accuracy``: the same count over only the images classified correctly before
  the attack, what the authors' code reports (``common_id`` in ``whitebox_test.py``). It is
  the headline divided by clean accuracy, so it looks better the worse the clean model is.

Each result is written to ``results.json`` and ``results.csv`` as soon as its attack finishes
(atomically, see :mod:`huang2021.run_dir`), so a rerun skips it and a crash loses nothing finished.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..run_dir import load_json, save_json, save_text

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
CSV_COLUMNS = (
    "key", "protocol", "attack", "norm", "parameter", "value", "method", "train_seed", "surrogate", "model_output",
    "labels", "images", "clean_correct", "robust_correct", "accuracy", "conditional_accuracy", "seconds",
)


def result_key(protocol: str, attack: str, norm: str, value: float, method: str, surrogate: str | None = None, *, train_seed: int) -> str:
    """The unique name of one result, e.g. ``paper/pgd/inf/0.1/baseline/seed-0`` (``train_seed``: the target run's ``--seed``)."""
    return "/".join([protocol, attack, norm, f"{value:g}", method] + ([surrogate] if surrogate else []) + [f"seed-{train_seed}"])


def robust_result(clean_correct: Tensor, adversarial_correct: Tensor, **fields: Any) -> dict[str, Any]:
    """The JSON-ready result of one attack from ``[N]`` bool masks of correct predictions before and after it."""
    robust = clean_correct & adversarial_correct
    images, clean, kept = len(robust), int(clean_correct.sum()), int(robust.sum())
    return {
        **fields,
        "images": images,
        "clean_correct": clean,
        "robust_correct": kept,
        "accuracy": kept / images,
        "conditional_accuracy": kept / clean if clean else float("nan"),
        "robust": robust.to(torch.uint8).tolist(),
    }


class ResultStore:
    """The finished results of an evaluation directory, keyed by :func:`result_key`."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        path = out_dir / RESULTS_JSON
        self.results: dict[str, dict[str, Any]] = load_json(path)["results"] if path.exists() else {}

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def add(self, result: dict[str, Any]) -> None:
        """Keep ``result`` and rewrite both files (each atomically)."""
        self.results[result["key"]] = result
        self.save()

    def save(self) -> None:
        """Rewrite both files (each atomically) with every kept result."""
        save_json(self.out_dir / RESULTS_JSON, {"results": self.results})
        save_text(self.out_dir / RESULTS_CSV, results_csv(self.results.values()))

    def robust_mask(self, key: str) -> np.ndarray:
        """``[N]`` bool: which images stayed correct under the attack of result ``key``."""
        return np.asarray(self.results[key]["robust"], dtype=bool)


def results_csv(results: Any) -> str:
    """One CSV row per result (the per-image masks stay in the JSON)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(result)
    return buffer.getvalue()
