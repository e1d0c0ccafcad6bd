"""The data splits and the training augmentation (``huang2021/data/splits.py``, ``augmentation.py``)."""

from __future__ import annotations

import torch
from huang2021.data.augmentation import CROP_PADDING, CropFlip, epoch_generator
from huang2021.data.splits import batch_images, load_splits
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), size=st.integers(1, 6))
def test_crop_flip_matches_padding_and_slicing_each_image(seed, size):
    images = torch.rand(size, 3, 5, 7, generator=torch.Generator().manual_seed(seed))
    crops = CropFlip.draw(size, torch.Generator().manual_seed(seed))
    out = crops.apply(images)

    padded = torch.nn.functional.pad(images, (CROP_PADDING,) * 4)
    for image, (top, left), flip, result in zip(padded, crops.shifts.tolist(), crops.flips.tolist(), out):
        expected = image[:, top : top + 5, left : left + 7]
        torch.testing.assert_close(result, expected.flip(-1) if flip else expected, rtol=0, atol=0)


def test_augmentation_depends_on_seed_and_epoch_only():
    draws = [CropFlip.draw(64, epoch_generator(seed, epoch)) for seed, epoch in ((0, 1), (0, 1), (0, 2), (1, 1))]
    assert torch.equal(draws[0].shifts, draws[1].shifts) and torch.equal(draws[0].flips, draws[1].flips)
    assert not torch.equal(draws[0].shifts, draws[2].shifts) and not torch.equal(draws[0].shifts, draws[3].shifts)
    # a shard of the global batch's draws is what a rank applies to its shard of the images
    assert torch.equal(draws[0].select(slice(32, 64)).shifts, draws[0].shifts[32:])


def test_uint8_batches_are_scaled_to_unit_range_and_float_ones_kept():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1)
    torch.testing.assert_close(batch_images(images, torch.tensor([2, 1])).flatten(), torch.tensor([1.0, 0.2]))
    floats = torch.rand(4, 1, 8, 8)
    assert torch.equal(batch_images(floats, torch.tensor([3, 0])), floats[[3, 0]])


def test_digits_split_sizes_add_up_and_follow_the_validation_fraction(tmp_path):
    splits = load_splits("digits", tmp_path, seed=0, device=torch.device("cpu"))
    sizes = [len(split.labels) for split in splits]
    assert sizes == [1078, 359, 360]  # 60/20/20, as before --val-fraction
    smaller = load_splits("digits", tmp_path, seed=0, device=torch.device("cpu"), val_fraction=0.1)
    assert sum(len(split.labels) for split in smaller) == 1797 and len(smaller.test.labels) == 180
