"""Primitive layers, and operators compiled from the primitives an operator resolves to."""

from msrdsl.ops.build import Operator, build_operator
from msrdsl.ops.conv import Conv, phase_conv, phase_plan
from msrdsl.ops.layers import FactorizedReduce, ReLUConvBN, Zero, preprocess

__all__ = ["Conv", "FactorizedReduce", "Operator", "ReLUConvBN", "Zero", "build_operator",
           "phase_conv", "phase_plan", "preprocess"]
