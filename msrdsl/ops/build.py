"""Operators compiled from resolved primitives (`msrdsl.oplib.resolve_op`), not from a table of
hand-written classes: whatever a .space file defines, this builds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from msrdsl.errors import SpaceError
from msrdsl.ir import Primitive
from msrdsl.ops.conv import Conv
from msrdsl.ops.layers import FactorizedReduce, Zero


class Operator(nn.Sequential):
    """One operator o_v: its primitive layers in order, and which of them are convolutions."""

    def __init__(self, name: str, layers: Sequence[nn.Module], conv_layers: Sequence[int],
                 prims: tuple[Primitive, ...]):
        super().__init__(*layers)
        self.name = name
        self.prims = prims
        self.conv_layers = tuple(conv_layers)  # layer index of each conv primitive, in order
        self.is_identity = all(p.kind == "identity" for p in prims)
        self.starts_with_relu = bool(prims) and prims[0].kind == "relu"
        self.phases = phase_factor(prims)

    @property
    def convs(self) -> list[nn.Conv2d]:
        """The operator's convolution primitives (Eq. 4-5 constrain them; the last one is scored)."""
        return [self[i] for i in self.conv_layers]

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """The operator on an input its leading ReLU was already applied to (shared per node)."""
        for layer in list(self)[1:]:
            x = layer(x)
        return x

    def on_phases(self, x: torch.Tensor, relu_done: bool) -> torch.Tensor:
        """The operator on space_to_batch(x, *self.phases), giving space_to_batch of its output:
        its dilated convs run undilated on the phases, every other layer is pixelwise."""
        for layer in list(self)[1:] if relu_done else self:
            x = layer.on_phases(x) if isinstance(layer, Conv) else layer(x)
        return x


def build_operator(name: str, prims: tuple[Primitive, ...], channels: int, *, affine: bool,
                   search: bool) -> Operator:
    """Layers for `prims` on `channels` channels (C -> C). Supernet (`search`): BN without affine,
    `search_bn` present; evaluation network: affine BN, no `search_bn` (DARTS' two variants)."""
    layers: list[nn.Module] = []
    conv_layers: list[int] = []
    for p in prims:
        if p.kind == "search_bn" and not search:
            continue
        if p.is_conv:
            conv_layers.append(len(layers))
        layers.append(_layer(name, p, channels, affine))
    return Operator(name, layers, conv_layers, prims)


_PIXELWISE = frozenset({"relu", "bn", "search_bn", "identity"})


def phase_factor(prims: tuple[Primitive, ...]) -> tuple[int, int] | None:
    """(fh, fw) when the whole operator can run on the fh x fw phases of its input: stride 1,
    its dilated convs of one dilation, every other primitive pixelwise (batch-norm statistics
    are over all pixels, so the phase order does not change them). Otherwise None."""
    factors = set()
    for p in prims:
        if p.is_conv and p.stride == (1, 1) and p.dilation != (1, 1):
            factors.add(p.dilation)
        elif not (p.kind in _PIXELWISE or (p.is_conv and p.kernel == (1, 1) and p.stride == (1, 1))):
            return None
    return factors.pop() if len(factors) == 1 else None


def _layer(name: str, p: Primitive, c: int, affine: bool) -> nn.Module:
    if p.kind == "relu":
        return nn.ReLU(inplace=False)
    if p.kind == "conv":
        groups = c if p.groups == 0 else p.groups
        if c % groups:
            raise SpaceError(f"operator '{name}': a convolution with groups={groups} needs a "
                             f"channel count divisible by it, the cell has {c}")
        return Conv(c, c, p.kernel, p.stride, p.dilation, groups)
    if p.kind in ("bn", "search_bn"):
        return nn.BatchNorm2d(c, affine=affine and p.kind == "bn")
    if p.kind == "max_pool":
        return nn.MaxPool2d(p.kernel, stride=p.stride, padding=p.padding)
    if p.kind == "avg_pool":
        return nn.AvgPool2d(p.kernel, stride=p.stride, padding=p.padding, count_include_pad=False)
    if p.kind == "identity":
        return nn.Identity()
    if p.kind == "zero":
        return Zero(p.stride)
    if p.kind == "factorized_reduce":
        return FactorizedReduce(c, c, affine)
    raise SpaceError(f"operator '{name}': no layer for primitive '{p.kind}'")
