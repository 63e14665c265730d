"""Resizing whole image tensors once, at load time."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """NxCxHxW to NxCx size x size, bilinear with antialiasing; keeps the dtype (uint8 is rounded)."""
    if images.shape[-2:] == (size, size):
        return images
    x = images.float()
    # Chunks bound the float copy: a whole CIFAR train set in float32 is 600 MB.
    out = torch.cat(
        [F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
         for chunk in x.split(4096)]
    )
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)
