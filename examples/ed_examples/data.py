"""The embedded default data set: scikit-learn's ``load_digits``, split into train/validation/test.

1797 grey 8x8 images of the digits 0-9, shipped inside scikit-learn, so the main command
needs no download. Pixel values 0..16 are divided by 16 to lie in [0, 1], as the paper
normalises image intensities to 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

DATASETS = ("digits",)
"""Data sets this version supports (``--dataset``)."""

NUM_CLASSES = 10


class Split(NamedTuple):
    """One part of the data set, already on the training device."""

    images: Tensor
    """``[N, 1, 8, 8]`` float32 in [0, 1]."""
    labels: Tensor
    """``[N]`` int64 class indices."""


class Splits(NamedTuple):
    train: Split
    validation: Split
    test: Split


def digits_splits(seed: int, device: torch.device, *, validation: float = 0.2, test: float = 0.2) -> Splits:
    """Shuffle digits with ``seed`` and split it, stratified by class, into train / validation / test.

    The validation part selects the model kept (best epoch); the test part is only read by the
    final evaluation.
    """
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8]
    labels = digits.target.astype(np.int64)
    indices = np.arange(len(labels))
    train_idx, held_out = train_test_split(
        indices, test_size=validation + test, stratify=labels, random_state=seed
    )
    val_idx, test_idx = train_test_split(
        held_out, test_size=test / (validation + test), stratify=labels[held_out], random_state=seed
    )

    def split(part: np.ndarray) -> Split:
        return Split(torch.from_numpy(images[part]).to(device), torch.from_numpy(labels[part]).to(device))

    return Splits(split(train_idx), split(val_idx), split(test_idx))
