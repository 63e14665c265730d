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

from msrdsl.errors import SpaceError
from msrdsl.nn.shapes import ConvShape
from msrdsl.rank import ConvSpec, batched_operator_norms, power_iteration

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
            u_shape = (s.in_channels, 1) if group.matrix else (s.in_channels, *s.input_hw)
            # Persistent: a resumed search warm-starts where it stopped.
            self.register_buffer(group.buffer, torch.randn(len(members), *u_shape))

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
        if not self.enabled:
            return
        for group in self.groups:
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
        u = getattr(self, group.buffer)
        sigma, u_next = power_iteration(stacked, (s.in_channels, *s.input_hw), stride=s.stride,
                                        padding=s.padding, dilation=s.dilation, groups=s.groups,
                                        iterations=self.iterations, u=u)
        u.copy_(u_next)
        return sigma

    def _matrix_sigmas(self, group: _Group, mats: torch.Tensor) -> torch.Tensor:
        """||W||_2 of (n, C_out, C_in) matrices: exact, or Z batched power iterations (bmm)."""
        if self.method == "exact":
            return torch.linalg.matrix_norm(mats, ord=2)
        u = getattr(self, group.buffer)  # (n, C_in, 1)
        x = _unit(u)
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


def _unit(x: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
    return x / norm.clamp_min(torch.finfo(x.dtype).tiny)
