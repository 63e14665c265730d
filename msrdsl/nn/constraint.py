"""The spectral-norm constraint of MSR-DARTS (Eq. 4-5): before every training forward, each
candidate convolution c (every conv inside a mixed edge's operators; not the stem, the cells'
preprocessing or a FactorizedReduce) is rescaled in place to c * C / sigma_1(c).

sigma_1 is the largest singular value of the conv as a linear operator on the feature map it
really sees. Two methods:

- `power`: Algorithm 1, power iteration through conv and conv-transpose at the conv's real input
  shape with its real zero padding, Z iterations per training forward, warm-started from the
  previous u (a persistent buffer, so it is saved in state_dict and checkpoints). Convolutions
  of one shape run as ONE grouped conv per iteration (their kernels stacked), and 1x1 convs as a
  batched matrix power iteration (bmm): a 1x1 conv's operator norm on any map is its matrix norm.
- `exact`: CIRCULAR padding is assumed (Sedghi et al.): each conv is block diagonal in the 2-D
  Fourier basis, so a depthwise conv's norm comes from the FFT of its kernel per channel and a
  strided one from the aliased spectrum (msrdsl.rank); a 1x1 conv's norm is the matrix 2-norm.
  Near the border this differs from the zero-padded operator the network computes.

Like the reference implementation the weights are rescaled under no_grad: the gradient step
then acts on the rescaled weights. In eval mode nothing is recomputed (the last rescaling stays).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from msrdsl.errors import SpaceError
from msrdsl.nn.shapes import ConvShape
from msrdsl.ops.conv import phase_conv, phase_conv_adjoint, phase_plan
from msrdsl.rank import ConvSpec, batched_operator_norms

METHODS = ("power", "exact")


class _Group:
    """Convolutions of one shape, rescaled together."""

    def __init__(self, shape: ConvShape, modules: list[nn.Conv2d], buffer: str):
        self.shape = shape
        self.modules = modules
        self.buffer = buffer
        self.matrix = shape.kernel == (1, 1) and shape.groups == 1

    @property
    def weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.modules]


class SpectralNorm(nn.Module):
    """Eq. 4-5 over a supernet's candidate convolutions; `rescale()` rescales them all."""

    def __init__(self, convs: Sequence[tuple[ConvShape, nn.Conv2d]], bound: float = 1.0,
                 method: str = "power", iterations: int = 5):
        super().__init__()
        if method not in METHODS:
            raise SpaceError(f"unknown spectral-norm method '{method}' (expected power or exact)")
        if iterations < 1:
            raise SpaceError(f"power_iterations must be at least 1, got {iterations}")
        self.bound, self.method, self.iterations = float(bound), method, iterations
        self.enabled = True
        by_signature: dict[tuple, list[tuple[ConvShape, nn.Conv2d]]] = {}
        for shape, module in convs:
            by_signature.setdefault(_signature(shape), []).append((shape, module))
        self.groups: list[_Group] = []
        for n, members in enumerate(by_signature.values()):
            group = _Group(members[0][0], [m for _, m in members], f"u{n}")
            self.groups.append(group)
            s = group.shape
            if group.matrix:
                u = torch.randn(len(members), s.in_channels, 1)
            else:  # laid out as the stacked conv's input: (1, n * C_in, h, w)
                u = torch.randn(1, len(members) * s.in_channels, *s.input_hw)
            # Persistent: a resumed search warm-starts where it stopped.
            self.register_buffer(group.buffer, u)

    def extra_repr(self) -> str:
        convs = sum(len(g.modules) for g in self.groups)
        return (f"bound={self.bound:g}, method={self.method}, iterations={self.iterations}, "
                f"convs={convs}, groups={len(self.groups)}")

    def apply(self, fn=None):  # type: ignore[override]
        """`apply()`: `rescale()`; `apply(fn)` keeps nn.Module's meaning (fn on every submodule)."""
        if fn is not None:
            return super().apply(fn)
        self.rescale()
        return self

    @torch.no_grad()
    def rescale(self) -> None:
        """Rescale every candidate conv to spectral norm `bound` (one step of Eq. 4-5)."""
        if not self.enabled or not self.groups:
            return
        device = self.groups[0].modules[0].weight.device.type
        with torch.autocast(device, enabled=False):  # sigma in the weights' own precision
            for group in self.groups:
                self._rescale_group(group)

    def _rescale_group(self, group: _Group) -> None:
        sigma = self.sigmas(group)
        scale = self.bound / sigma.clamp_min(torch.finfo(sigma.dtype).tiny)
        weights = group.weights
        torch._foreach_mul_(weights, list(scale.to(weights[0].dtype).unbind()))

    def sigmas(self, group: _Group) -> torch.Tensor:
        """sigma_1 of every conv of `group`, (n,): estimated (advancing u) or exact."""
        stacked = torch.stack([w.detach() for w in group.weights])  # (n, C_out, C_in/g, kh, kw)
        s = group.shape
        if group.matrix:
            return self._matrix_sigmas(group, stacked.flatten(2))
        if self.method == "exact":
            spec = ConvSpec(s.weight_shape, s.input_hw, s.stride, s.dilation, s.groups)
            return batched_operator_norms(list(stacked), [spec] * len(stacked)).spectral
        return self._power_sigmas(group, stacked)

    def _power_sigmas(self, group: _Group, stacked: torch.Tensor) -> torch.Tensor:
        """Algorithm 1 for n convs of one shape at once: their kernels stacked into one grouped
        conv over n * C_in channels, each conv's part of u normalised on its own."""
        s, n = group.shape, stacked.shape[0]
        apply, adjoint = _operator(s, stacked.flatten(0, 1), n)
        u = getattr(self, group.buffer)  # (1, n * C_in, h, w)
        x = u
        if x.device.type == "cpu":  # oneDNN's fast depthwise kernels want channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        x = _unit_blocks(_floor(x, x.numel() // n), n)
        for _ in range(self.iterations):
            # Scale does not change the direction: normalising once per iteration suffices.
            x = _unit_blocks(adjoint(apply(x)), n)
        u.copy_(x)
        return _block_norms(apply(x), n)

    def _matrix_sigmas(self, group: _Group, mats: torch.Tensor) -> torch.Tensor:
        """||W||_2 of (n, C_out, C_in) matrices: exact, or Z batched power iterations (bmm)."""
        if self.method == "exact":
            return torch.linalg.matrix_norm(mats, ord=2)
        u = getattr(self, group.buffer)  # (n, C_in, 1)
        x = _unit(_floor(u, u.shape[1]))
        for _ in range(self.iterations):
            v = _unit(torch.bmm(mats, x))
            x = _unit(torch.bmm(mats.transpose(1, 2), v))
        u.copy_(x)
        return torch.linalg.vector_norm(torch.bmm(mats, x), dim=(1, 2))


def _signature(s: ConvShape) -> tuple:
    if s.kernel == (1, 1) and s.groups == 1:
        return ("matrix", s.in_channels, s.out_channels)
    return ("conv", s.in_channels, s.out_channels, s.groups, s.kernel, s.stride, s.dilation,
            s.padding, s.input_hw)


def _operator(s: ConvShape, kernel: torch.Tensor, n: int):
    """(conv, its adjoint) for n stacked convs of shape `s` on (1, n*C_in, h, w) inputs, zero
    padded as the network pads; dilated ones through the same phase formulation as Conv."""
    groups = n * s.groups
    plan = phase_plan(s.kernel, s.stride, s.dilation)
    if plan is not None and kernel.device.type == "cpu":
        return (lambda x: phase_conv(x, kernel, plan, groups),
                lambda y: phase_conv_adjoint(y, kernel, plan, groups, s.input_hw))
    # conv_transpose2d restores the rows a strided conv skips with output_padding.
    extra = tuple(n_in + 2 * p - d * (k - 1) - 1 - (o - 1) * st for n_in, k, st, p, d, o in
                  zip(s.input_hw, s.kernel, s.stride, s.padding, s.dilation, s.output_hw))
    return (lambda x: F.conv2d(x, kernel, None, s.stride, s.padding, s.dilation, groups),
            lambda y: F.conv_transpose2d(y, kernel, None, s.stride, s.padding, extra, groups,
                                         s.dilation))


def _block_norms(x: torch.Tensor, n: int) -> torch.Tensor:
    """Euclidean norm of each of the n channel blocks of x (1, n*C, h, w), in any layout."""
    return (x * x).sum(dim=(0, 2, 3)).view(n, -1).sum(dim=1).sqrt()


def _unit_blocks(x: torch.Tensor, n: int) -> torch.Tensor:
    scale = 1.0 / _block_norms(x, n).clamp_min(torch.finfo(x.dtype).tiny)
    return x * scale.repeat_interleave(x.shape[1] // n).view(1, -1, 1, 1)


def _floor(u: torch.Tensor, size: int) -> torch.Tensor:
    """u plus a tiny constant (1e-6 of a unit vector's typical entry, size = entries per block).

    A warm-started u loses the directions of the smaller singular values geometrically; without
    a floor they sink into denormal floats (10-50x slower arithmetic on CPU) and could never grow
    back if training made them dominant. The estimate moves by O(1e-12).
    """
    return u + 1e-6 / size**0.5


def _unit(x: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny)
