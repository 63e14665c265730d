"""The data sets by name: shape facts, the search split and the train/test pair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from msrdsl.data import cifar, digits, imagenet, synthetic
from msrdsl.data.common import DatasetInfo, check_input_size, check_options, check_root
from msrdsl.data.tensorset import ImageSet, tensor_search_split, tensor_train_test
from msrdsl.errors import DataError, did_you_mean


class _TensorSource:
    """A set held in memory; search and evaluation share the generic tensor code."""

    def __init__(
        self,
        name: str,
        default_size: int,
        info: Callable[[Path | None, int, dict[str, Any]], DatasetInfo],
        load: Callable[[Path | None, int, dict[str, Any]], ImageSet],
        *,
        needs_root: bool = False,
        layout: str = "",
    ):
        self.name, self.default_size = name, default_size
        self._info, self._load = info, load
        self.needs_root, self.layout = needs_root, layout

    def root(self, root: str | None) -> Path | None:
        # Built-in sets have no folder; a root given to them is ignored rather than an error.
        return check_root(self.name, root, self.layout) if self.needs_root else None

    def info(self, root, size, options) -> DatasetInfo:
        return self._info(root, size, options)

    def search_split(self, root, size, options, *, split, seed, augment):
        data = self._load(root, size, options)
        return tensor_search_split(data, split=split, seed=seed, augment=augment)

    def train_test(self, root, size, options, *, augment, cutout):
        return tensor_train_test(self._load(root, size, options), augment=augment, cutout=cutout)


class _ImageNetSource:
    """Class folders on disk, decoded lazily per item."""

    name, default_size, layout = imagenet.NAME, imagenet.DEFAULT_INPUT_SIZE, imagenet.LAYOUT

    def root(self, root: str | None) -> Path:
        return check_root(self.name, root, "train/<class>/ and val/<class>/")

    def info(self, root, size, options) -> DatasetInfo:
        check_options(self.name, options, {})
        return imagenet.info(root, size)

    def search_split(self, root, size, options, *, split, seed, augment):
        check_options(self.name, options, {})
        return imagenet.search_split(root, size, split=split, seed=seed, augment=augment)

    def train_test(self, root, size, options, *, augment, cutout):
        check_options(self.name, options, {})
        return imagenet.train_test(root, size, augment=augment, cutout=cutout)


def _no_options(name: str, fn: Callable) -> Callable:
    """Wrap a (root, size) function of a set that takes no extra options."""

    def call(root, size, options):
        check_options(name, options, {})
        return fn(root, size)

    return call


_SOURCES = {
    digits.NAME: _TensorSource(
        digits.NAME,
        digits.DEFAULT_INPUT_SIZE,
        _no_options(digits.NAME, lambda root, size: digits.info(size)),
        _no_options(digits.NAME, lambda root, size: digits.load(size)),
    ),
    synthetic.NAME: _TensorSource(
        synthetic.NAME,
        synthetic.DEFAULT_INPUT_SIZE,
        lambda root, size, options: synthetic.info(size, options),
        lambda root, size, options: synthetic.load(size, options),
    ),
    cifar.NAME: _TensorSource(
        cifar.NAME,
        cifar.DEFAULT_INPUT_SIZE,
        _no_options(cifar.NAME, lambda root, size: cifar.info(size)),
        _no_options(cifar.NAME, cifar.load),
        needs_root=True,
        layout=f"{cifar.ARCHIVE} or {cifar.FOLDER}/",
    ),
    imagenet.NAME: _ImageNetSource(),
}

DATASETS = tuple(sorted(_SOURCES))


def _source(name: str):
    source = _SOURCES.get(name)
    if source is None:
        raise DataError(f"unknown dataset '{name}'", hint=did_you_mean(str(name), DATASETS))
    return source


def dataset_info(
    name: str, *, root: str | None = None, input_size: int | None = None, **options: Any
) -> DatasetInfo:
    """Channels, input size and classes of a data set, without loading it.

    cifar10, digits and synthetic are constants; imagenet lists the class folders of root/train.
    `options` are the set's own settings (only synthetic has any: channels, classes, count,
    data_seed).
    """
    source = _source(name)
    size = check_input_size(name, input_size, source.default_size)
    return source.info(source.root(root), size, options)


def search_split(
    name: str,
    *,
    root: str | None = None,
    input_size: int | None = None,
    split: float = 0.8,
    seed: int = 0,
    augment: bool = False,
    **options: Any,
) -> tuple[Dataset, Dataset]:
    """The train part cut by a seeded permutation into (train_weights, valid), `split` : 1 - split.

    Never touches the test part. augment=False gives plain normalised images; True adds DARTS'
    crop+flip (digits: a random shift; imagenet: random resized crop + flip), to both parts.
    """
    source = _source(name)
    size = check_input_size(name, input_size, source.default_size)
    return source.search_split(
        source.root(root), size, options, split=split, seed=seed, augment=augment
    )


def train_test(
    name: str,
    *,
    root: str | None = None,
    input_size: int | None = None,
    augment: bool = True,
    cutout: int = 0,
    seed: int = 0,
    **options: Any,
) -> tuple[Dataset, Dataset]:
    """The whole train part (augmented, with Cutout of `cutout` px if > 0) and the plain test part.

    `seed` is accepted so callers can pass the run's seed uniformly, but nothing here is random at
    build time: the train/test split of every set is fixed, so test accuracy is comparable across
    seeds; augmentation randomness comes from torch's RNG while iterating (see make_loader).
    """
    del seed  # documented above: the split is fixed on purpose
    if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
        raise DataError(f"cutout must be a whole number of pixels >= 0, got {cutout!r}")
    source = _source(name)
    size = check_input_size(name, input_size, source.default_size)
    return source.train_test(source.root(root), size, options, augment=augment, cutout=cutout)
