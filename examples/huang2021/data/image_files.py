"""Readers of the paper's data sets in their published on-disk formats, to ``uint8`` tensors.

- Fashion-MNIST: torchvision's ``FashionMNIST`` reader, ``<root>/FashionMNIST/raw/`` with the
  four idx-ubyte files (``--download`` fetches them).
- CIFAR-100: torchvision's ``CIFAR100`` reader, ``<root>/cifar-100-python/{train,test,meta}``
  (``--download`` fetches them). torchvision refuses files whose md5 differs from the
  published archive's; without ``--download`` this reader only requires the files to exist
  and then checks what they hold (shapes, labels), so that any file in the real format,
  including a test's tiny one, is read (:class:`_PresentCIFAR100`).
- Tiny-ImageNet: no torchvision reader; its standard folder ``<root>/tiny-imagenet-200/``
  with ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` (listed by torchvision's
  ``ImageFolder``) and ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``. The
  official test labels are not public, so the official validation split is the test split.
  It cannot be downloaded from here (manual download).

Every reader returns ``(train, test)``, each ``(images [N, C, H, W] uint8, labels [N] int64)``,
and raises :class:`~huang2021.data.errors.DatasetError` naming ``--data-root`` when the files are missing or malformed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR100, FashionMNIST, ImageFolder
from torchvision.datasets.folder import pil_loader

from .errors import DatasetError

Part = tuple[Tensor, Tensor]
"""``(images [N, C, H, W] uint8, labels [N] int64)``."""

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR100_FILES = ("train", "test", "meta")
SHAPES = {"fashion-mnist": (1, 28, 28, 10), "cifar100": (3, 32, 32, 100), "tiny-imagenet": (3, 64, 64, 200)}
"""Channels, height, width and number of classes of each data set's images."""

# What a malformed file raises in the readers (torchvision's idx reader uses assert).
_READ_ERRORS = (OSError, RuntimeError, ValueError, TypeError, KeyError, IndexError, AssertionError, EOFError, pickle.UnpicklingError)


def read_image_dataset(name: str, root: Path, *, download: bool = False) -> tuple[Part, Part]:
    """The official train and test parts of data set ``name`` under ``root`` (``--data-root``)."""
    reader = {"fashion-mnist": _read_fashion_mnist, "cifar100": _read_cifar100, "tiny-imagenet": _read_tiny_imagenet}[name]
    root = Path(root)
    try:
        train, test = reader(root, download)
    except _READ_ERRORS as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(
            f"Expected --data-root {str(root)!r} to hold {name} in its published format, but reading it failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    for part_name, part in (("training", train), ("test", test)):
        _check_part(name, root, part_name, part)
    return train, test


def _missing(name: str, root: Path, folder: Path, files: tuple[str, ...], how: str) -> DatasetError:
    absent = [file for file in files if not (folder / file).exists()]
    return DatasetError(
        f"Expected --data-root {str(root)!r} to hold {name} in {str(folder)!r} ({', '.join(files)}), "
        f"but {', '.join(absent)} {'is' if len(absent) == 1 else 'are'} missing; {how}"
    )


def _check_part(name: str, root: Path, part_name: str, part: Part) -> None:
    images, labels = part
    channels, height, width, num_classes = SHAPES[name]
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (channels, height, width):
        raise DatasetError(
            f"Expected --data-root {str(root)!r} to hold {name} images of shape {channels}x{height}x{width} (uint8), "
            f"but its {part_name} images are {'x'.join(map(str, images.shape[1:]))} ({images.dtype})"
        )
    if len(images) == 0 or len(images) != len(labels):
        raise DatasetError(
            f"Expected --data-root {str(root)!r} to hold as many {name} {part_name} labels as images (at least one), "
            f"but got {len(images)} images and {len(labels)} labels"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(
            f"Expected --data-root {str(root)!r} to hold {name} {part_name} labels in [0, {num_classes}), "
            f"but got labels from {int(labels.min())} to {int(labels.max())}"
        )


def _read_fashion_mnist(root: Path, download: bool) -> tuple[Part, Part]:
    folder = root / "FashionMNIST" / "raw"
    if not download and not all((folder / file).exists() for file in FASHION_MNIST_FILES):
        raise _missing("fashion-mnist", root, folder, FASHION_MNIST_FILES, "add --download to fetch them with torchvision")

    def part(train: bool) -> Part:
        reader = FashionMNIST(str(root), train=train, download=download)
        return reader.data[:, None].contiguous(), reader.targets.long()

    return part(True), part(False)


class _PresentCIFAR100(CIFAR100):
    """torchvision's CIFAR-100 reader, requiring the files' presence rather than the published md5 sums."""

    def _check_integrity(self) -> bool:
        return all((Path(self.root) / self.base_folder / file).exists() for file, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with (Path(self.root) / self.base_folder / self.meta["filename"]).open("rb") as file:
            self.classes = pickle.load(file, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}


def _read_cifar100(root: Path, download: bool) -> tuple[Part, Part]:
    folder = root / CIFAR100.base_folder
    if not download and not all((folder / file).exists() for file in CIFAR100_FILES):
        raise _missing("cifar100", root, folder, CIFAR100_FILES, "add --download to fetch them with torchvision")
    # Downloading goes through torchvision's own checks (md5 of the archive and of each file).
    reader = CIFAR100 if download else _PresentCIFAR100

    def part(train: bool) -> Part:
        dataset = reader(str(root), train=train, download=download)
        if len(dataset.classes) != 100:
            raise DatasetError(
                f"Expected --data-root {str(root)!r} to hold CIFAR-100, whose meta file lists 100 class names, "
                f"but {str(folder / 'meta')!r} lists {len(dataset.classes)}"
            )
        images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        return images, torch.tensor(dataset.targets, dtype=torch.long)

    return part(True), part(False)


def _read_tiny_imagenet(root: Path, download: bool) -> tuple[Part, Part]:
    folder = root / "tiny-imagenet-200"
    how = f"download {TINY_IMAGENET_URL} and unzip it into --data-root (torchvision has no Tiny-ImageNet downloader)"
    if download:
        how = f"--download cannot fetch Tiny-ImageNet; {how}"
    files = ("wnids.txt", "train", "val/images", "val/val_annotations.txt")
    if not all((folder / file).exists() for file in files):
        raise _missing("tiny-imagenet", root, folder, files, how)

    wnids = sorted((folder / "wnids.txt").read_text().split())
    train = ImageFolder(str(folder / "train"))
    if train.classes != wnids:
        extra, absent = sorted(set(train.classes) - set(wnids)), sorted(set(wnids) - set(train.classes))
        raise DatasetError(
            f"Expected --data-root {str(root)!r} to hold one folder per wnid of wnids.txt in {str(folder / 'train')!r}, "
            f"but folders not in wnids.txt: {extra[:5]}, wnids without a folder: {absent[:5]}"
        )
    train_part = _decode_all([path for path, _ in train.samples], [label for _, label in train.samples])

    paths, labels = [], []
    for line_number, line in enumerate((folder / "val" / "val_annotations.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in train.class_to_idx:
            raise DatasetError(
                f"Expected --data-root {str(root)!r}: line {line_number} of val/val_annotations.txt to read "
                f"'<file>\\t<wnid of wnids.txt>\\t<bbox>', but got {line!r}"
            )
        paths.append(str(folder / "val" / "images" / fields[0]))
        labels.append(train.class_to_idx[fields[1]])
    return train_part, _decode_all(paths, labels)


def _decode_all(paths: list[str], labels: list[int]) -> Part:
    """Decode with ImageFolder's PIL loader, which converts the few greyscale JPEGs of the real set to RGB."""
    images = [torch.from_numpy(np.array(pil_loader(path))).permute(2, 0, 1) for path in paths]
    return (torch.stack(images) if images else torch.empty(0, 3, 64, 64, dtype=torch.uint8)), torch.tensor(labels, dtype=torch.long)
