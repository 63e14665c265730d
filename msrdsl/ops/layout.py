"""Keeping gradients channels-last: on CPU, oneDNN runs channels-last convs and batch norms on
fast kernels, but a gradient that arrives in another layout (from a channel slice of `cat`, or the
broadcast of a global average pool) sends every layer it reaches to slow kernels."""

from __future__ import annotations

import torch


class _ChannelsLastGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.contiguous(memory_format=torch.channels_last)


def channels_last_grad(x: torch.Tensor) -> torch.Tensor:
    """x unchanged; its gradient is made channels-last contiguous (one copy, only if it is not)."""
    return _ChannelsLastGrad.apply(x) if x.requires_grad else x
