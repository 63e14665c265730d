"""Data sets for search and evaluation (digits, cifar10, imagenet, synthetic) and their loaders."""

from msrdsl.data.api import DATASETS, dataset_info, search_split, train_test
from msrdsl.data.common import DatasetInfo
from msrdsl.data.loader import EpochSampler, make_loader
from msrdsl.data.transforms import (
    Compose,
    Cutout,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomShift,
    ToFloat,
)

__all__ = [
    "DATASETS",
    "Compose",
    "Cutout",
    "DatasetInfo",
    "EpochSampler",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomShift",
    "ToFloat",
    "dataset_info",
    "make_loader",
    "search_split",
    "train_test",
]
