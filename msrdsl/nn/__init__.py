"""Networks compiled from a Space or a Genotype: the search supernet (with mixing and the
spectral-norm constraint), evaluation networks, shape inference and counts."""

from msrdsl.nn.constraint import SpectralNorm
from msrdsl.nn.counts import count_genotype, count_mult_adds, count_params
from msrdsl.nn.evalnet import EvalNetwork, build_eval_network, drop_path
from msrdsl.nn.shapes import CellPlan, ConvShape, plan_supernet, shape_table
from msrdsl.nn.supernet import CandidateConv, Supernet, compile_supernet

__all__ = [
    "CandidateConv", "CellPlan", "ConvShape", "EvalNetwork", "SpectralNorm", "Supernet",
    "build_eval_network", "compile_supernet", "count_genotype", "count_mult_adds", "count_params",
    "drop_path", "plan_supernet", "shape_table",
]
