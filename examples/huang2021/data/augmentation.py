"""The training augmentation of CIFAR-100 and Tiny-ImageNet: random crop with zero padding 4 and horizontal flip.

The authors' recipe (``RandomCrop(size, padding=4)`` and ``RandomHorizontalFlip``), drawn per
image for a whole batch tensor; Fashion-MNIST and digits are not augmented (``DatasetSpec.augment``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

CROP_PADDING = 4
"""Zero padding of the random crop (the authors' ``RandomCrop(size, padding=4)``)."""


class CropFlip(NamedTuple):
    """Per-image random crop (zero padding :data:`CROP_PADDING`) and horizontal flip, drawn up front.

    torchvision's transforms draw one crop per call, i.e. per image in a DataLoader but one for
    a whole batch tensor; this draws one per image and applies them to the batch at once. The
    draws come from a generator seeded with (seed, epoch) (:func:`epoch_generator`), for the
    whole global batch, so a resumed run and every rank of a distributed one see the same
    augmentation as an uninterrupted single process.
    """

    shifts: Tensor
    """``[B, 2]`` int64 in [0, 2 * padding]: the crop's top-left corner in the padded image."""
    flips: Tensor
    """``[B]`` bool: flip this image left-right."""

    @classmethod
    def draw(cls, batch_size: int, generator: torch.Generator) -> CropFlip:
        shifts = torch.randint(0, 2 * CROP_PADDING + 1, (batch_size, 2), generator=generator)
        flips = torch.rand(batch_size, generator=generator) < 0.5
        return cls(shifts, flips)

    def select(self, rows: slice) -> CropFlip:
        return CropFlip(self.shifts[rows], self.flips[rows])

    def apply(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> the crops of the zero-padded images, flipped where drawn (one gather)."""
        size, channels, height, width = images.shape
        padded = torch.nn.functional.pad(images, (CROP_PADDING,) * 4)
        shifts, flips = self.shifts.to(images.device), self.flips.to(images.device)
        rows = shifts[:, 0, None] + torch.arange(height, device=images.device)  # [B, H]
        columns = torch.arange(width, device=images.device)
        # A flipped crop reads its columns right to left.
        columns = shifts[:, 1, None] + torch.where(flips[:, None], columns.flip(0), columns)  # [B, W]
        index = rows[:, :, None] * padded.shape[-1] + columns[:, None, :]
        index = index.view(size, 1, height * width).expand(size, channels, height * width)
        return padded.flatten(2).gather(2, index).view(size, channels, height, width)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone: the epoch's augmentation draws."""
    (state,) = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state))
