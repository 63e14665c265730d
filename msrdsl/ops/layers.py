"""The layers operators and cells are made of, with the structure of the DARTS reference code
(Liu et al. 2019, quark0/darts cnn/operations.py), so that parameter counts match it exactly."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from msrdsl.ops.conv import Conv


class Zero(nn.Module):
    """The `none` operator: zeros shaped like the (strided) output, as DARTS' Zero."""

    def __init__(self, stride: tuple[int, int]):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return x[:, :, ::sh, ::sw].mul(0.0)  # (B, C, H/sh, W/sw)


class FactorizedReduce(nn.Module):
    """DARTS FactorizedReduce: ReLU, two 1x1 stride-2 convs (the second offset by one pixel)
    concatenated, BN. Halves the map, C_in -> C_out."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        # DARTS needs an even C_out; an odd one gives the first half the extra channel.
        self.conv_1 = Conv(c_in, c_out - c_out // 2, (1, 1), (2, 2))
        self.conv_2 = Conv(c_in, c_out // 2, (1, 1), (2, 2))
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = x[:, :, 1:, 1:]
        odd_h, odd_w = x.shape[-2] % 2, x.shape[-1] % 2
        if odd_h or odd_w:  # DARTS fails on odd maps; a zero row/column keeps both halves equal
            shifted = F.pad(shifted, (0, odd_w, 0, odd_h))
        y = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)  # (B, C_out, ceil(H/2), ceil(W/2))
        return self.bn(y)


class ReLUConvBN(nn.Sequential):
    """DARTS ReLUConvBN with a 1x1 kernel: how a cell maps an input of C_in channels to C."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__(nn.ReLU(inplace=False), Conv(c_in, c_out, (1, 1)),
                         nn.BatchNorm2d(c_out, affine=affine))


def preprocess(c_in: int, c_out: int, halvings: int, affine: bool) -> nn.Module:
    """A cell's input adapter: ReLUConvBN at the cell's resolution, FactorizedReduce one level
    above it (DARTS' `reduction_prev`); further levels (3+ inputs) chain more reductions."""
    if halvings == 0:
        return ReLUConvBN(c_in, c_out, affine)
    if halvings == 1:
        return FactorizedReduce(c_in, c_out, affine)
    return nn.Sequential(FactorizedReduce(c_in, c_out, affine),
                         *[FactorizedReduce(c_out, c_out, affine) for _ in range(halvings - 1)])
