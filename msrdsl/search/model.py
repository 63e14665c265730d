"""The search loop's view of a compiled supernet: the one place that knows the compiler's API.

The loop needs: a forward pass giving logits; the weights and (alpha mixing) the architecture
parameters; setting score-based mixing weights; and the spectral-norm constraint applied before
every training forward. What the space's mix means for the loop is decided here too.
"""

from __future__ import annotations

from typing import Any

import torch

from msrdsl.ir import Call, Name, Space


def mix_kind(space: Space) -> str:
    """'uniform' (Eq. 2), 'alpha' (softmax(alpha), Eq. 1) or 'score' (softmax(SCORE))."""
    mix = space.supernet.mix
    if isinstance(mix, Name) and mix.id == "uniform":
        return "uniform"
    arg = mix.args[0] if isinstance(mix, Call) and mix.args else None
    if isinstance(arg, Name) and arg.id == "alpha":
        return "alpha"
    return "score"


def build_supernet(space: Space, info: Any, device: torch.device) -> torch.nn.Module:
    from msrdsl.nn import compile_supernet

    return compile_supernet(space, info, device=device, dtype=torch.float32)


def weight_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(net.weight_parameters())


def arch_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(net.arch_parameters())


def set_mix_weights(net: torch.nn.Module, tables: dict[str, torch.Tensor]) -> None:
    net.set_mix_weights(tables)
