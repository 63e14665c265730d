"""Augmentations on CxHxW tensors, small and composable.

Every random draw comes from torch's global RNG (no private generators), so a caller who seeds
torch at the start of an epoch, with loading in the main process, replays that epoch bit for bit.
Each transform draws the same count of numbers whatever it decides, keeping the stream aligned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class ToFloat:
    """uint8 in [0, 255] to float in [0, 1]; float input passes through unchanged."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            return x.float().div_(255.0)
        return x.float()

    def __repr__(self) -> str:
        return "ToFloat()"


class Normalize:
    """Per-channel (x - mean) / std; returns a new tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class RandomCrop:
    """Zero-pad each side by `padding` px, then cut a random window of the original size."""

    def __init__(self, padding: int):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        offsets = torch.randint(0, 2 * p + 1, (2,))
        if p == 0:
            return x
        top, left = int(offsets[0]), int(offsets[1])
        height, width = x.shape[-2:]
        padded = F.pad(x, (p, p, p, p))
        return padded[..., top : top + height, left : left + width]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding})"


class RandomShift(RandomCrop):
    """Move the image by up to `max_shift` px each way, filling with zeros.

    The same operation as a padded random crop, named for what it does to digits: it teaches
    position invariance without the mirror images a flip would create.
    """

    def __init__(self, max_shift: int):
        super().__init__(max_shift)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Cutout:
    """DARTS' Cutout: zero one `length` x `length` square whose centre is uniform over the image.

    The square is clipped at the borders, so near an edge less than length^2 pixels go dark.
    Applied after normalisation, as in DARTS, so the hole reads as the data set's mean.
    """

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"cutout length must be >= 1, got {length}")
        self.length = length

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        cy = int(torch.randint(0, height, ()))
        cx = int(torch.randint(0, width, ()))
        half = self.length // 2
        top, bottom = max(cy - half, 0), min(cy + half, height)
        left, right = max(cx - half, 0), min(cx + half, width)
        # Clone: the input may be a view of the stored data set.
        out = x.clone()
        out[..., top:bottom, left:right] = 0.0
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


def default_padding(input_size: int) -> int:
    """Crop padding for square images: 4 px at 32 px (the CIFAR recipe), scaled with the side."""
    return max(1, input_size // 8)
