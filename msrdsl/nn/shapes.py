"""Shape inference before any module exists: every cell's channels and resolutions, and every
candidate convolution of a supernet with the shape it really runs at. Torch-free.

The network follows DARTS (Liu et al. 2019): a cell's input nodes are the outputs of the
`inputs` previous cells (the stem's output standing in for missing ones), each brought to C
channels at the resolution of the newest input (1x1 ReLUConvBN, or FactorizedReduce when it is
one reduction behind); channels double at reduction cells, whose edges from input nodes have
stride 2; the cell's output concatenates its intermediate nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import frozen

from msrdsl.errors import SpaceError
from msrdsl.ir import OpDef, Primitive, Space
from msrdsl.oplib import last_conv, resolve_op

Pair = tuple[int, int]


def halve(hw: Pair) -> Pair:
    """The map after a stride-2 'same' conv, pool or FactorizedReduce: ceil(h/2) x ceil(w/2)."""
    return ((hw[0] + 1) // 2, (hw[1] + 1) // 2)


@frozen
class Source:
    """What feeds one input node of a cell: channels, resolution and reductions to catch up."""

    channels: int
    hw: Pair
    halvings: int


@frozen
class CellPlan:
    """One cell: its type, inputs, node channels C and resolutions, output channels."""

    index: int
    reduction: bool
    sources: tuple[Source, ...]
    channels: int
    input_hw: Pair  # the input nodes' resolution after preprocessing
    node_hw: Pair  # the intermediate nodes' resolution
    out_channels: int

    @property
    def cell_type(self) -> str:
        return "reduce" if self.reduction else "normal"

    def edge_stride(self, source: int) -> int:
        """DARTS: in a reduction cell the edges leaving input nodes have stride 2."""
        return 2 if self.reduction and source < len(self.sources) else 1


@frozen
class _State:
    channels: int
    hw: Pair
    level: int  # reductions since the network input, to match inputs to the newest one


def plan_cells(cells: int, channels: int, reductions: Sequence[int], inputs: int,
               stems: Sequence[tuple[int, Pair, int]],
               out_nodes: Callable[[bool], int]) -> tuple[CellPlan, ...]:
    """Cell plans for a network: `stems` are (channels, hw, level) of the states cells start from
    (the oldest first); `out_nodes(reduction)` says how many nodes a cell concatenates."""
    states = [_State(*stems[max(len(stems) - inputs + i, 0)]) for i in range(inputs)]
    plans: list[CellPlan] = []
    c = channels
    for k in range(cells):
        reduction = k in reductions
        if reduction:
            c *= 2
        newest = states[-1]
        sources = tuple(Source(s.channels, s.hw, newest.level - s.level) for s in states[-inputs:])
        node_hw = halve(newest.hw) if reduction else newest.hw
        out = out_nodes(reduction) * c
        plans.append(CellPlan(k, reduction, sources, c, newest.hw, node_hw, out))
        states.append(_State(out, node_hw, newest.level + int(reduction)))
    return tuple(plans)


def plan_supernet(space: Space, info: Any) -> tuple[tuple[CellPlan, ...], int]:
    """The search network's cell plans and stem channels (DARTS model_search.Network)."""
    net, cell = space.network, space.cell
    size = _positive(getattr(info, "input_size", None), "the data set's input_size")
    stem = net.stem_multiplier * net.channels
    plans = plan_cells(net.cells, net.channels, net.reduction_indices(), cell.inputs,
                       [(stem, (size, size), 0)], lambda reduction: cell.nodes)
    return plans, stem


@frozen
class ConvShape:
    """One candidate convolution of a supernet and the shape it runs at.

    `key` = (cell, edge, op, conv) identifies it; `conv` counts the operator's convolutions and
    `last` marks the one MSR-DARTS scores. `input_hw` is the map the conv really sees;
    `cell_input_hw` the resolution of its cell's input nodes (where the reference code scores).
    """

    cell: int
    cell_type: str
    edge: tuple[int, int]
    edge_stride: int
    op: str
    conv: int
    last: bool
    in_channels: int
    out_channels: int
    groups: int
    kernel: Pair
    stride: Pair
    dilation: Pair
    padding: Pair
    input_hw: Pair
    output_hw: Pair
    cell_input_hw: Pair

    @property
    def key(self) -> tuple[int, tuple[int, int], str, int]:
        return (self.cell, self.edge, self.op, self.conv)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)


def ops_by_name(ops: Any) -> dict[str, OpDef]:
    """An operator library as a dict: from a Space (or anything with `.ops`), a mapping, OpDefs."""
    if isinstance(ops, Space) or hasattr(ops, "ops"):
        ops = ops.ops
    if isinstance(ops, Mapping):
        return dict(ops)
    return {o.name: o for o in ops}


def resolved_ops(space: Space) -> Callable[[str, int], tuple[Primitive, ...]]:
    """resolve_op for the space's library, cached per (operator, stride)."""
    library = ops_by_name(space)
    cache: dict[tuple[str, int], tuple[Primitive, ...]] = {}

    def get(name: str, stride: int) -> tuple[Primitive, ...]:
        if (name, stride) not in cache:
            cache[name, stride] = resolve_op(library, name, stride)
        return cache[name, stride]

    return get


def shape_table(space: Space, info: Any) -> tuple[ConvShape, ...]:
    """Every candidate convolution of the supernet of `space` on data `info`, in supernet order:
    by cell, edge (DARTS order), operator (the space's order), then convolution."""
    plans, _ = plan_supernet(space, info)
    resolve = resolved_ops(space)
    rows: list[ConvShape] = []
    for plan in plans:
        for src, dst in space.cell.edge_list():
            stride = plan.edge_stride(src)
            for name in space.operators:
                rows.extend(_op_convs(plan, (src, dst), stride, name, resolve(name, stride)))
    return tuple(rows)


def _op_convs(plan: CellPlan, edge: tuple[int, int], stride: int, name: str,
              prims: tuple[Primitive, ...]) -> list[ConvShape]:
    # Edges leaving intermediate nodes of a reduction cell run at the reduced resolution.
    hw = plan.input_hw if edge[0] < len(plan.sources) else plan.node_hw
    out, c, n = [], plan.channels, 0
    final = last_conv(prims)
    for i, p in enumerate(prims):
        after = prim_output_hw(p, hw)
        if p.is_conv:
            groups = c if p.groups == 0 else p.groups
            out.append(ConvShape(plan.index, plan.cell_type, edge, stride, name, n, i == final,
                                 c, c, groups, p.kernel, p.stride, p.dilation, p.padding,
                                 hw, after, plan.input_hw))
            n += 1
        hw = after
    return out


def prim_output_hw(p: Primitive, hw: Pair) -> Pair:
    """The map after one primitive: 'same' padding makes every stride s give ceil(h/s)."""
    if p.kind == "factorized_reduce":
        return halve(hw)
    return (-(-hw[0] // p.stride[0]), -(-hw[1] // p.stride[1]))


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpaceError(f"{what} must be a positive integer, got {value!r}")
    return value
