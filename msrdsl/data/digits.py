"""`digits`: scikit-learn's 8x8 handwritten digits, shipped inside sklearn so it works offline."""

from __future__ import annotations

import functools

import torch

from msrdsl.data.common import FIXED_SPLIT_SEED, TEST_FRACTION, DatasetInfo, split_indices
from msrdsl.data.resize import resize_images
from msrdsl.data.tensorset import ImageSet, channel_stats

NAME = "digits"
DEFAULT_INPUT_SIZE = 16
CLASSES = 10
CHANNELS = 1
# load_digits stores 4-bit intensities: 0 (background) to 16 (full ink).
_MAX_INTENSITY = 16.0


def info(input_size: int) -> DatasetInfo:
    """Constant shape facts; loads nothing."""
    return DatasetInfo(NAME, CHANNELS, input_size, CLASSES)


@functools.lru_cache(maxsize=4)
def load(input_size: int) -> ImageSet:
    """All 1,797 digits resized to input_size, split 80/20 into train/test by a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / _MAX_INTENSITY
    images = resize_images(images, input_size).clamp_(0.0, 1.0)
    labels = torch.from_numpy(bunch.target).long()
    train, test = split_indices(
        len(labels), 1.0 - TEST_FRACTION, FIXED_SPLIT_SEED, what="dataset 'digits'"
    )
    # Statistics from the train part only, so nothing about the test images leaks into the inputs.
    mean, std = channel_stats(images[train])
    return ImageSet(
        info=info(input_size),
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        mean=mean,
        std=std,
        # A mirrored 2, 3, 5 or 7 is not that digit (and not any digit), so no flips.
        flip_invariant=False,
    )
