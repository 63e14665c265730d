"""Evaluation networks: a Genotype's cells stacked as DARTS does (Liu et al. 2019, quark0/darts
cnn/model.py): NetworkCIFAR and NetworkImageNet with their auxiliary heads and drop-path, built
from the operator library so that any .space operator works and DARTS' parameter counts are
reproduced exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from msrdsl.errors import GenotypeError, did_you_mean
from msrdsl.genotype import CellGenotype, Genotype
from msrdsl.nn.shapes import CellPlan, ops_by_name, plan_cells
from msrdsl.oplib import resolve_op
from msrdsl.ops import Conv, build_operator, preprocess
from msrdsl.ops.layout import channels_last_grad

NETS = ("cifar", "imagenet")
DEFAULTS = {"cifar": (20, 36, 10, 32), "imagenet": (14, 48, 1000, 224)}  # cells, C, classes, input


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """DARTS drop_path: zero whole samples with probability p, scale survivors by 1/(1-p)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x.div(keep) * mask


class EvalCell(nn.Module):
    """A cell of a genotype: input nodes preprocessed to C channels, each intermediate node the
    sum of its kept edges' operators, output the concat of the `concat` nodes."""

    def __init__(self, cell: CellGenotype, plan: CellPlan, library: dict[str, Any]):
        super().__init__()
        self.inputs = len(plan.sources)
        self.preprocess = nn.ModuleList(preprocess(s.channels, plan.channels, s.halvings, True)
                                        for s in plan.sources)
        self.ops = nn.ModuleList()
        self.sources: list[list[int]] = []
        for node in cell.nodes:
            self.sources.append([e.input for e in node.edges])
            for e in node.edges:
                stride = plan.edge_stride(e.input)
                prims = resolve_op(library, e.op, stride, at=e)
                self.ops.append(build_operator(e.op, prims, plan.channels, affine=True, search=False))
        self.concat = list(cell.concat)

    def forward(self, inputs: list[torch.Tensor], drop_prob: float, layout_grads: bool) -> torch.Tensor:
        states = [pre(x) for pre, x in zip(self.preprocess, inputs)]  # each (B, C, h, w)
        ops = iter(self.ops)
        for sources in self.sources:
            node = None
            for i in sources:
                op = next(ops)
                h = op(states[i])
                if self.training and drop_prob > 0.0 and not op.is_identity:
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            states.append(channels_last_grad(node) if layout_grads else node)
        return torch.cat([states[i] for i in self.concat], dim=1)  # (B, len(concat) * C, h', w')


class AuxiliaryHead(nn.Module):
    """DARTS AuxiliaryHeadCIFAR (pool 5 stride 3, on 8x8 maps) or AuxiliaryHeadImageNet (pool 5
    stride 2, on 7x7 maps, no BN after the 2x2 conv, as in the published code).

    Both pool to 2x2 so the 2x2 conv leaves one pixel; on maps of other sizes an adaptive pool
    to 2x2 takes the fixed pool's place (same parameters).
    """

    def __init__(self, c_in: int, classes: int, imagenet: bool):
        super().__init__()
        self.pool_stride = 2 if imagenet else 3
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False)]
        if not imagenet:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if all((n - 5) // self.pool_stride + 1 == 2 for n in x.shape[-2:]):
            x = F.avg_pool2d(x, 5, stride=self.pool_stride)  # (B, C, 2, 2)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))  # (B, classes)


class EvalNetwork(nn.Module):
    """NetworkCIFAR or NetworkImageNet of a genotype; forward gives (logits, aux logits or None)."""

    def __init__(self, genotype: Genotype, library: dict[str, Any], net: str, cells: int,
                 channels: int, classes: int, auxiliary: bool, drop_path: float, in_channels: int,
                 reductions: Sequence[int]):
        super().__init__()
        self.genotype_name = genotype.name
        self.net = net
        self.drop_path_prob = drop_path
        inputs = genotype.normal.inputs
        c = channels
        if net == "cifar":
            stem = 3 * c
            self.stem = nn.Sequential(Conv(in_channels, stem, (3, 3)), nn.BatchNorm2d(stem))
            stems = [(stem, (1, 1), 0)]
        else:
            self.stem0 = nn.Sequential(
                Conv(in_channels, c // 2, (3, 3), (2, 2)), nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True), Conv(c // 2, c, (3, 3), (2, 2)), nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), Conv(c, c, (3, 3), (2, 2)),
                                       nn.BatchNorm2d(c))
            stems = [(c, (1, 1), 0), (c, (1, 1), 1)]  # stem1 is one reduction past stem0
        plans = plan_cells(cells, channels, reductions, inputs, stems,
                           lambda reduction: len(genotype.cell(reduction).concat))
        self.cells = nn.ModuleList(EvalCell(genotype.cell(p.reduction), p, library) for p in plans)
        # DARTS hangs the auxiliary head after cell 2*cells//3 (the second reduction).
        self.aux_after = 2 * cells // 3
        self.auxiliary_head = (AuxiliaryHead(plans[self.aux_after].out_channels, classes,
                                             net == "imagenet")
                               if auxiliary and self.aux_after < cells else None)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # = DARTS' AvgPool2d(7) on 224x224 ImageNet
        self.classifier = nn.Linear(plans[-1].out_channels, classes)
        self.inputs = inputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        layout_grads = x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4
        if self.net == "cifar":
            states = [self.stem(x)] * self.inputs  # (B, 3C, H, W)
        else:
            s0 = self.stem0(x)  # (B, C, H/4, W/4)
            states = [s0] * (self.inputs - 1) + [self.stem1(s0)]
        aux = None
        for k, cell in enumerate(self.cells):
            states = [*states[1:], cell(states, self.drop_path_prob, layout_grads)]
            if k == self.aux_after and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(states[-1])
        out = states[-1]
        if layout_grads:
            out = channels_last_grad(out)
        return self.classifier(self.global_pooling(out).flatten(1)), aux  # (B, classes)


def build_eval_network(genotype: Genotype, space_or_ops: Any = None, net: str = "cifar",
                       cells: int | None = None, channels: int | None = None,
                       classes: int | None = None, auxiliary: bool = True, drop_path: float = 0.0,
                       in_channels: int = 3, reduce_at: Sequence[int] | None = None,
                       device: Any = None, dtype: torch.dtype | None = None) -> EvalNetwork:
    """The evaluation network of `genotype` with the operators of `space_or_ops` (a Space, OpDefs
    or a name -> OpDef mapping; None: the prelude). `net` 'cifar' (defaults 20 cells, 36
    channels, 10 classes) or 'imagenet' (14, 48, 1000); reductions at cells//3 and 2*cells//3."""
    if net not in NETS:
        raise GenotypeError(f"unknown network style '{net}'", hint=did_you_mean(net, NETS))
    d_cells, d_channels, d_classes, _ = DEFAULTS[net]
    cells = d_cells if cells is None else cells
    channels = d_channels if channels is None else channels
    classes = d_classes if classes is None else classes
    for what, value in (("cells", cells), ("channels", channels), ("classes", classes),
                        ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenotypeError(f"{what} must be a positive integer, got {value!r}")
    if net == "imagenet" and channels < 2:
        raise GenotypeError("the ImageNet stem halves the channels: channels must be at least 2")
    library = _library(space_or_ops)
    check_genotype(genotype, library)
    reductions = (cells // 3, 2 * cells // 3) if reduce_at is None else tuple(reduce_at)
    model = EvalNetwork(genotype, library, net, cells, channels, classes, auxiliary, drop_path,
                        in_channels, reductions)
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


def _library(space_or_ops: Any) -> dict[str, Any]:
    if space_or_ops is None:
        from msrdsl.lang.interpret import prelude_ops

        return prelude_ops()
    return ops_by_name(space_or_ops)


def check_genotype(genotype: Genotype, library: dict[str, Any]) -> None:
    """GenotypeError for an operator the library lacks, an input that is not an earlier node,
    a concat of a missing node, or cells with different numbers of inputs."""
    if genotype.normal.inputs != genotype.reduce.inputs:
        raise GenotypeError(f"genotype '{genotype.name}': the normal cell has "
                            f"{genotype.normal.inputs} inputs but the reduction cell "
                            f"{genotype.reduce.inputs}", genotype.loc)
    for cell_type, cell in genotype.cells.items():
        nodes = cell.inputs + len(cell.nodes)
        for position, node in enumerate(cell.nodes):
            j = cell.node_index(position)
            if not node.edges:
                raise GenotypeError(f"{cell_type} cell: node {j} has no edges", node.loc)
            for e in node.edges:
                if e.op not in library:
                    raise GenotypeError(f"{cell_type} cell, node {j}: unknown operator '{e.op}'",
                                        e.loc, did_you_mean(e.op, library))
                if not 0 <= e.input < j:
                    raise GenotypeError(f"{cell_type} cell, node {j}: input {e.input} is out of "
                                        f"range (node {j} can take nodes 0..{j - 1})", e.loc)
        for i in cell.concat:
            if not 0 <= i < nodes:
                raise GenotypeError(f"{cell_type} cell: concat names node {i}, but the cell has "
                                    f"nodes 0..{nodes - 1}", cell.loc)
        if not cell.concat:
            raise GenotypeError(f"{cell_type} cell: concat is empty", cell.loc)
