"""How a mixed edge combines its operators: the plain sum (Eq. 2), softmax(alpha) (Eq. 1), or
softmax of a score the search loop computes (the MSR-DARTS reference code's softmax(-R))."""

from __future__ import annotations

from typing import Any

import torch

from msrdsl.errors import SpaceError
from msrdsl.ir import Call, Name

MIX_KINDS = ("uniform", "alpha", "score")


def mix_kind(mix: Any) -> str:
    """'uniform', 'alpha' or 'score' for a supernet `mix` expression."""
    if isinstance(mix, Name) and mix.id == "uniform":
        return "uniform"
    if isinstance(mix, Call) and mix.name == "softmax" and len(mix.args) == 1:
        arg = mix.args[0]
        return "alpha" if isinstance(arg, Name) and arg.id == "alpha" else "score"
    raise SpaceError("mix must be `uniform`, `softmax(alpha)` or `softmax(SCORE)`",
                     getattr(mix, "loc", None))


def mixed_sum(outputs: list[torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
    """sum_v w_v o_v (Eq. 1), or sum_v o_v (Eq. 2) when `weights` is None, over a node's outputs.

    One accumulator updated in place: no stacked copy of the outputs, and autograd keeps only
    what the backward pass needs (the outputs and weights, for the weights' gradient).
    """
    if weights is None:
        if len(outputs) == 1:
            return outputs[0]
        acc = outputs[0] + outputs[1]
        for o in outputs[2:]:
            acc.add_(o)
        return acc
    acc = outputs[0] * weights[0]
    for o, w in zip(outputs[1:], weights[1:]):
        acc.addcmul_(o, w)
    return acc
