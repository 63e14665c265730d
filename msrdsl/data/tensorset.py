"""In-memory image sets (digits, cifar10, synthetic): tensors held once, transformed per item."""

from __future__ import annotations

import torch
from attrs import frozen
from torch.utils.data import Dataset, Subset

from msrdsl.data.common import DatasetInfo, split_indices
from msrdsl.data.transforms import (
    Compose,
    Cutout,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomShift,
    ToFloat,
    Transform,
    default_padding,
)


@frozen(eq=False)
class ImageSet:
    """A loaded set: NxCxHxW images (uint8, or float in [0, 1]), int64 labels, its statistics."""

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Whether a mirrored image is still an image of its class (photos yes, digits no).
    flip_invariant: bool = True


class TensorImageDataset(Dataset):
    """(image, label) pairs from tensors; `transform` turns a stored image into the model's input."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images in [0, 1] (uint8 is scaled first)."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    std = per_channel.std(dim=1).clamp_min(1e-6)
    return tuple(per_channel.mean(dim=1).tolist()), tuple(std.tolist())


def make_transform(data: ImageSet, *, augment: bool, cutout: int = 0) -> Compose:
    """ToFloat, then (if augment) crop+flip or shift, Normalize, then Cutout when cutout > 0."""
    steps: list[Transform] = [ToFloat()]
    if augment:
        padding = default_padding(data.info.input_size)
        if data.flip_invariant:
            steps += [RandomCrop(padding), RandomHorizontalFlip()]
        else:
            steps.append(RandomShift(padding))
    steps.append(Normalize(data.mean, data.std))
    if cutout > 0:
        steps.append(Cutout(cutout))
    return Compose(steps)


def tensor_search_split(
    data: ImageSet, *, split: float, seed: int, augment: bool
) -> tuple[Dataset, Dataset]:
    """The train part cut into (weights, valid) subsets; both share one transform, as in DARTS."""
    transform = make_transform(data, augment=augment)
    base = TensorImageDataset(data.train_images, data.train_labels, transform)
    what = f"dataset '{data.info.name}' search split"
    first, second = split_indices(len(base), split, seed, what=what)
    return Subset(base, first), Subset(base, second)


def tensor_train_test(data: ImageSet, *, augment: bool, cutout: int) -> tuple[Dataset, Dataset]:
    """The whole train part (augmented as asked) and the test part (never augmented)."""
    train = TensorImageDataset(
        data.train_images, data.train_labels, make_transform(data, augment=augment, cutout=cutout)
    )
    test = TensorImageDataset(data.test_images, data.test_labels, make_transform(data, augment=False))
    return train, test
