"""`imagenet`: ImageNet-style class folders, read lazily with torchvision's ImageFolder.

Layout: root/train/<class>/*.JPEG and root/val/<class>/*.JPEG (any image extension PIL reads);
classes are the train folder's sub-folders in sorted order, and val must have the same ones.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typing import TYPE_CHECKING

from torch.utils.data import Dataset, Subset

from msrdsl.data.common import DatasetInfo, split_indices
from msrdsl.data.transforms import Cutout
from msrdsl.errors import DataError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

# torchvision is imported inside the functions that need it: it takes about two seconds, and
# digits/cifar10/synthetic users should not pay for it.

NAME = "imagenet"
DEFAULT_INPUT_SIZE = 224
CHANNELS = 3
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LAYOUT = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"


def class_names(folder: Path) -> list[str]:
    """Sorted sub-folder names of a split folder (cheap: lists one directory)."""
    if not folder.is_dir():
        raise DataError(
            f"dataset '{NAME}': folder {folder} does not exist; expected {LAYOUT}",
            hint="point root at the folder that holds train/ and val/",
        )
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    if not names:
        raise DataError(
            f"dataset '{NAME}': {folder} has no class folders; expected {LAYOUT}",
            hint=f"put each class's images in its own folder: {folder}/<class>/*.JPEG",
        )
    return names


def info(root: Path, input_size: int) -> DatasetInfo:
    """Channels, size and the number of class folders under root/train; opens no image."""
    return DatasetInfo(NAME, CHANNELS, input_size, len(class_names(root / "train")))


def train_transform(input_size: int, *, jitter: bool = True, cutout: int = 0):
    """DARTS' ImageNet recipe: random resized crop, flip, colour jitter, normalise (+ cutout)."""
    from torchvision import transforms as T

    steps: list = [T.RandomResizedCrop(input_size), T.RandomHorizontalFlip()]
    if jitter:
        steps.append(T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2))
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def eval_transform(input_size: int):
    """Resize the short side to input_size * 256/224, centre-crop input_size, normalise."""
    from torchvision import transforms as T

    resize = int(input_size * 256 / 224)
    return T.Compose(
        [T.Resize(resize), T.CenterCrop(input_size), T.ToTensor(), T.Normalize(MEAN, STD)]
    )


def search_split(
    root: Path, input_size: int, *, split: float, seed: int, augment: bool
) -> tuple[Dataset, Dataset]:
    """The train folder cut into (weights, valid); augment means crop+flip only, no jitter."""
    transform = train_transform(input_size, jitter=False) if augment else eval_transform(input_size)
    base = _image_folder(root / "train", transform)
    first, second = split_indices(len(base), split, seed, what=f"dataset '{NAME}' search split")
    return Subset(base, first), Subset(base, second)


def train_test(root: Path, input_size: int, *, augment: bool, cutout: int) -> tuple[Dataset, Dataset]:
    """root/train with the training recipe (or none) and root/val with the evaluation transform."""
    if augment:
        transform = train_transform(input_size, cutout=cutout)
    else:
        transform = eval_transform(input_size)
        if cutout > 0:
            transform.transforms.append(Cutout(cutout))
    train = _image_folder(root / "train", transform)
    test = _image_folder(root / "val", eval_transform(input_size))
    if test.classes != train.classes:
        only_train = sorted(set(train.classes) - set(test.classes))[:5]
        only_val = sorted(set(test.classes) - set(train.classes))[:5]
        raise DataError(
            f"dataset '{NAME}': {root}/train and {root}/val have different class folders "
            f"(only in train: {only_train}, only in val: {only_val})",
            hint="labels are folder positions, so both splits need exactly the same class folders",
        )
    return train, test


def _image_folder(folder: Path, transform) -> ImageFolder:
    from torchvision.datasets import ImageFolder

    class_names(folder)  # the clearer error for a missing or class-less folder
    try:
        return ImageFolder(str(folder), transform=transform, loader=_load_rgb)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            f"dataset '{NAME}': {folder} has a class folder without images ({exc}); expected {LAYOUT}",
            hint="remove empty class folders or add their images (.jpg, .jpeg, .png, ...)",
        ) from None


def _load_rgb(path: str) -> Image.Image:
    """Open an image as RGB; an unreadable file is a DataError naming it."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"dataset '{NAME}': cannot read image {path} ({exc})",
            hint="delete or replace the damaged file",
        ) from None
