"""The search supernet (DARTS model_search.Network, generalised to any cell DAG in the IR):
stem, cells whose every edge mixes all candidate operators, global pool, linear classifier.

Mixing (msrdsl.nn.mixing): `uniform` sums the operators (Eq. 2); `softmax(alpha)` weights them
by architecture parameters, one (edges x ops) tensor per cell type (Eq. 1); `softmax(SCORE)`
weights them by a (cells x edges x ops) buffer the search loop sets with `set_mix_weights`.

The spectral-norm constraint (Eq. 4-5), when the space has one, lives in `self.constraint` and
runs at the start of every forward in training mode (`supernet.train()`): the search loop needs
no extra call. `supernet.constraint.enabled = False` switches it off.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from attrs import frozen

from msrdsl.errors import SpaceError
from msrdsl.ir import Space
from msrdsl.nn.constraint import SpectralNorm
from msrdsl.nn.mixing import mix_kind, mixed_sum
from msrdsl.nn.shapes import CellPlan, ConvShape, plan_supernet, resolved_ops, shape_table
from msrdsl.ops import Conv, Operator, build_operator, preprocess
from msrdsl.ops.conv import batch_to_space, space_to_batch
from msrdsl.ops.layout import channels_last_grad

CELL_TYPES = ("normal", "reduce")


@frozen
class CandidateConv:
    """A candidate convolution and its shape; unpacks as (key, module)."""

    shape: ConvShape
    module: nn.Conv2d

    def __iter__(self) -> Iterator[Any]:
        return iter((self.shape.key, self.module))

    def __getattr__(self, name: str) -> Any:  # key, stride, input_hw, cell_input_hw, ...
        if name.startswith("__") or name in ("shape", "module"):
            raise AttributeError(name)  # not set yet (copying, unpickling)
        return getattr(self.shape, name)


class MixedEdge(nn.Module):
    """One edge f_ij: every candidate operator applied to the same input node."""

    def __init__(self, ops: list[Operator]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The cell does not call this: it shares ReLUs and phase splits across edges (_Nodes).
        return [op(x) for op in self.ops]  # each (B, C, h', w')


class _Nodes:
    """A cell's node values during one forward, and what operators share of them: the ReLU most
    operators start with, and (training on CPU) the phase split of dilated operators."""

    def __init__(self, states: list[torch.Tensor], use_phases: bool):
        self.states = states
        self.use_phases = use_phases
        self._shared: dict[tuple, torch.Tensor] = {}

    def relu(self, i: int) -> torch.Tensor:
        if (i, "relu") not in self._shared:
            self._shared[i, "relu"] = F.relu(self.states[i])
        return self._shared[i, "relu"]

    def phase_factor(self, i: int, op: Operator) -> tuple[int, int] | None:
        f = op.phases
        if not self.use_phases or f is None:
            return None
        h, w = self.states[i].shape[-2:]
        return f if h % f[0] == 0 and w % f[1] == 0 else None  # odd maps: per-conv phases

    def apply(self, i: int, op: Operator, factor: tuple[int, int] | None) -> torch.Tensor:
        """o(x_i), or space_to_batch of it when `factor` is given."""
        if factor is None:
            return op.after_relu(self.relu(i)) if op.starts_with_relu else op(self.states[i])
        key = (i, factor, op.starts_with_relu)
        if key not in self._shared:
            x = self.relu(i) if op.starts_with_relu else self.states[i]
            self._shared[key] = space_to_batch(x, *factor)
        return op.on_phases(self._shared[key], relu_done=op.starts_with_relu)


class SearchCell(nn.Module):
    """A supernet cell: input nodes preprocessed to C channels, mixed edges, concat of nodes."""

    def __init__(self, plan: CellPlan, space: Space, resolve: Any, layout_grads: bool):
        super().__init__()
        self.inputs = len(plan.sources)
        self.layout_grads = layout_grads
        self.phase_domain = True  # run dilated operators on phases when training on CPU
        self.preprocess = nn.ModuleList(preprocess(s.channels, plan.channels, s.halvings, False)
                                        for s in plan.sources)
        edges = space.cell.edge_list()
        self.edges = nn.ModuleList(
            MixedEdge([build_operator(name, resolve(name, plan.edge_stride(i)), plan.channels,
                                      affine=False, search=True) for name in space.operators])
            for i, _ in edges)
        self.sources = [i for i, _ in edges]
        # Edges are ordered by target node, so each node's edges are one slice of them.
        targets = [j for _, j in edges]
        self.node_slices = [(targets.index(j), len(targets) - targets[::-1].index(j))
                            for j in sorted(set(targets))]

    def forward(self, inputs: list[torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        states = [pre(x) for pre, x in zip(self.preprocess, inputs)]  # each (B, C, h, w)
        # Phases only in training: in eval mode every conv sees its natural input (criteria
        # hook the candidate convs' inputs).
        nodes = _Nodes(states, self.phase_domain and self.training and states[0].device.type == "cpu")
        for lo, hi in self.node_slices:
            node = self._node(nodes, lo, hi, None if weights is None else weights[lo:hi].flatten())
            states.append(channels_last_grad(node) if self.layout_grads else node)
        return torch.cat(states[self.inputs:], dim=1)  # (B, nodes * C, h', w')

    def _node(self, nodes: _Nodes, lo: int, hi: int, w: torch.Tensor | None) -> torch.Tensor:
        """x_j: its edges' operators mixed (Eq. 1 or 2); those run on phases are summed there
        and brought back to the map once per node, not once per operator."""
        parts: dict[tuple[int, int] | None, tuple[list[torch.Tensor], list[int]]] = {}
        k = 0
        for e in range(lo, hi):
            i = self.sources[e]
            for op in self.edges[e].ops:
                factor = nodes.phase_factor(i, op)
                outs, index = parts.setdefault(factor, ([], []))
                outs.append(nodes.apply(i, op, factor))
                index.append(k)
                k += 1
        node = None
        for factor, (outs, index) in parts.items():
            part = mixed_sum(outs, w if w is None or len(index) == k else w[index])
            if factor is not None:
                part = batch_to_space(part, *factor, nodes.states[0].shape[0])
            node = part if node is None else node + part
        return node


class Supernet(nn.Module):
    """The search network of a space on a data set (`info`: channels, input_size, classes)."""

    def __init__(self, space: Space, info: Any, channels_last: bool = False):
        super().__init__()
        plans, stem = plan_supernet(space, info)
        self.space_name = space.name
        self.plans = plans
        self.cell_types = tuple(p.cell_type for p in plans)
        self.inputs = space.cell.inputs
        self.channels_last = channels_last
        self.mix = mix_kind(space.supernet.mix)
        self.stem = nn.Sequential(Conv(info.channels, stem, (3, 3)), nn.BatchNorm2d(stem))
        resolve = resolved_ops(space)
        self.cells = nn.ModuleList(SearchCell(p, space, resolve, channels_last) for p in plans)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(plans[-1].out_channels, info.classes)

        shape = (space.cell.edges, len(space.operators))
        if self.mix == "alpha":
            init = space.supernet.alpha_init
            self.alphas = nn.ParameterDict({t: nn.Parameter(init * torch.randn(shape))
                                            for t in CELL_TYPES})
        elif self.mix == "score":
            # Equal weights until the search loop's first refresh (softmax of equal scores).
            self.register_buffer("mix_weights", torch.full((len(plans), *shape), 1 / shape[1]))

        self.shapes = shape_table(space, info)
        modules = [conv for cell in self.cells for edge in cell.edges for op in edge.ops
                   for conv in op.convs]
        assert len(modules) == len(self.shapes), "shape table and modules disagree"
        self._candidates = [CandidateConv(s, m) for s, m in zip(self.shapes, modules)]
        sn = space.supernet.spectral_norm
        self.constraint = None if sn is None else SpectralNorm(
            [(c.shape, c.module) for c in self._candidates], sn.bound, sn.method,
            sn.power_iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.constraint is not None:
            self.constraint.rescale()  # Eq. 4-5 before every training forward
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        states = [self.stem(x)] * self.inputs  # (B, stem, H, W)
        alpha_weights = self._alpha_weights()
        for k, cell in enumerate(self.cells):
            states = [*states[1:], cell(states, self._weights(k, alpha_weights))]
        out = states[-1]
        if self.channels_last:
            out = channels_last_grad(out)
        return self.classifier(self.global_pooling(out).flatten(1))  # (B, classes)

    def _alpha_weights(self) -> dict[str, torch.Tensor] | None:
        if self.mix != "alpha":
            return None
        return {t: F.softmax(a, dim=-1) for t, a in self.alphas.items()}  # Eq. 1

    def _weights(self, k: int, alpha_weights: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
        if alpha_weights is not None:
            return alpha_weights[self.cell_types[k]]
        if self.mix == "score":
            return self.mix_weights[k]
        return None

    # -- parameters and mixing --------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        """[alpha_normal, alpha_reduce] with softmax(alpha) mixing, else []."""
        return [self.alphas[t] for t in CELL_TYPES] if self.mix == "alpha" else []

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but alpha: what the weight optimiser trains."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_mix_weights(self, normal: Any, reduce: Any = None) -> None:
        """Set score-based mixing weights: `set_mix_weights({"normal": T, "reduce": T})` or
        `set_mix_weights(T_normal, T_reduce)`, each T (edges, ops) for every cell of the type
        or (cells of the type, edges, ops)."""
        if self.mix != "score":
            raise SpaceError(f"this supernet mixes by {self.mix}; only `softmax(SCORE)` mixing "
                             "takes weights from the search loop")
        tables = normal if isinstance(normal, Mapping) else {"normal": normal, "reduce": reduce}
        for cell_type, table in tables.items():
            cells = self.cells_of_type(cell_type)
            if table is None or not cells:
                continue
            table = torch.as_tensor(table).to(self.mix_weights)
            want = self.mix_weights.shape[1:]
            if table.shape == want:
                table = table.expand(len(cells), *want)
            if table.shape != (len(cells), *want):
                raise SpaceError(f"{cell_type} mixing weights have shape {tuple(table.shape)}, "
                                 f"expected {tuple(want)} or {(len(cells), *want)}")
            self.mix_weights[cells] = table

    # -- structure for criteria and the constraint --------------------------------------------

    def cells_of_type(self, cell_type: str) -> list[int]:
        if cell_type not in CELL_TYPES:
            raise SpaceError(f"unknown cell type '{cell_type}' (expected normal or reduce)")
        return [k for k, t in enumerate(self.cell_types) if t == cell_type]

    def candidate_convs(self) -> list[CandidateConv]:
        """Every convolution inside a mixed edge's operators, in shape_table order."""
        return list(self._candidates)

    def last_convs(self) -> list[CandidateConv]:
        """The last convolution of every candidate operator (what MSR-DARTS scores), in
        (cell, edge, op) order; operators without a convolution are left out."""
        return [c for c in self._candidates if c.shape.last]


def compile_supernet(space: Space, info: Any, device: Any = None, dtype: torch.dtype | None = None,
                     channels_last: bool | None = None) -> Supernet:
    """The supernet of `space` for data `info` (anything with channels, input_size, classes).

    `channels_last=None` picks the faster layout: channels-last on CPU (oneDNN's fast depthwise
    kernels), the default layout elsewhere.
    """
    device = torch.device(device if device is not None else "cpu")
    if channels_last is None:
        channels_last = device.type == "cpu"
    net = Supernet(space, info, channels_last=channels_last)
    net = net.to(device=device, dtype=dtype)
    if channels_last:  # parameters and the constraint's u buffers
        net = net.to(memory_format=torch.channels_last)
    return net
