"""`synthetic`: deterministic random images for benchmarks, learnable but meaningless."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

from msrdsl.data.common import (
    FIXED_SPLIT_SEED,
    TEST_FRACTION,
    DatasetInfo,
    check_options,
    positive_int,
    split_indices,
)
from msrdsl.data.tensorset import ImageSet, channel_stats
from msrdsl.errors import DataError

NAME = "synthetic"
DEFAULT_INPUT_SIZE = 32
# `data_seed`, not `seed`: the run's seed shuffles and splits; this one fixes the pixels, so runs
# with different seeds still see the same data set.
OPTIONS: Mapping[str, Any] = {"channels": 3, "classes": 10, "count": 512, "data_seed": 0}


def parse_options(options: Mapping[str, Any]) -> dict[str, int]:
    """The synthetic options with defaults filled in and checked."""
    merged = check_options(NAME, options, OPTIONS)
    for key in ("channels", "classes", "count"):
        positive_int(NAME, key, merged[key])
    seed = merged["data_seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"dataset '{NAME}': option data_seed must be an integer >= 0, got {seed!r}")
    return merged


def info(input_size: int, options: Mapping[str, Any]) -> DatasetInfo:
    """Shape facts from the options; generates nothing."""
    opts = parse_options(options)
    return DatasetInfo(NAME, opts["channels"], input_size, opts["classes"])


def load(input_size: int, options: Mapping[str, Any]) -> ImageSet:
    """`count` images split 80/20 into train/test, the same ones for the same options."""
    opts = parse_options(options)
    return _generate(input_size, opts["channels"], opts["classes"], opts["count"], opts["data_seed"])


@functools.lru_cache(maxsize=4)
def _generate(input_size: int, channels: int, classes: int, count: int, data_seed: int) -> ImageSet:
    generator = torch.Generator().manual_seed(data_seed)
    shape = (channels, input_size, input_size)
    # Each class has a fixed pattern; images are that pattern under heavy noise, so a model can
    # learn something (benchmarks can watch loss fall) yet the task is not trivial.
    patterns = torch.rand((classes, *shape), generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    noise = torch.rand((count, *shape), generator=generator)
    images = (0.5 * patterns[labels] + 0.5 * noise).mul_(255).round_().to(torch.uint8)
    train, test = split_indices(
        count, 1.0 - TEST_FRACTION, FIXED_SPLIT_SEED, what="dataset 'synthetic'"
    )
    mean, std = channel_stats(images[train])
    return ImageSet(
        info=DatasetInfo(NAME, channels, input_size, classes),
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        mean=mean,
        std=std,
    )
