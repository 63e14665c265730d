"""Parameter and multiply-add counts, as the NAS papers report them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from msrdsl.genotype import Genotype


def count_params(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Parameters, by default without the auxiliary tower (DARTS' count_parameters_in_MB skips
    every parameter whose name contains 'auxiliary'; the papers' tables use that figure)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_auxiliary or "auxiliary" not in name)


def count_mult_adds(model: nn.Module, input_size: int | tuple[int, int] = 224,
                    in_channels: int = 3) -> int:
    """Multiply-adds of one image through `model` in eval mode (no auxiliary tower): every conv
    contributes output elements * C_in/groups * kh * kw, every linear layer in * out. Batch norm,
    activations, pooling and additions are not counted (the papers' convention: DARTS V2 on
    ImageNet 574 M)."""
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() // module.out_features * module.in_features * module.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *hw, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def count_genotype(genotype: Genotype, ops: Any = None, net: str = "cifar",
                   cells: int | None = None, channels: int | None = None,
                   classes: int | None = None, input_size: int | None = None,
                   in_channels: int = 3) -> dict[str, int]:
    """{'params' (auxiliary excluded), 'params_aux' (included), 'mult_adds'} of a genotype's
    evaluation network (defaults per `net` as in build_eval_network; input 32 or 224)."""
    from msrdsl.nn.evalnet import DEFAULTS, build_eval_network

    model = build_eval_network(genotype, ops, net=net, cells=cells, channels=channels,
                               classes=classes, auxiliary=True, in_channels=in_channels)
    size = DEFAULTS[net][3] if input_size is None else input_size
    return {"params": count_params(model), "params_aux": count_params(model, True),
            "mult_adds": count_mult_adds(model, size, in_channels)}
