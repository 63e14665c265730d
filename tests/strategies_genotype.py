"""Hypothesis strategies for valid genotypes and derivation score tables (self-contained)."""

from __future__ import annotations

import keyword

import torch
from hypothesis import strategies as st

from msrdsl.genotype import CellGenotype, Edge, Genotype, Node

DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
EXTRA_OPS = ("sep_conv_7x7", "conv_7x1_1x7")

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s))
op_names = st.sampled_from(DARTS_OPS + EXTRA_OPS) | identifiers
sources = st.none() | st.text(max_size=40)


@st.composite
def cell_genotypes(draw, inputs: int, pairs: bool = False, max_nodes: int = 5) -> CellGenotype:
    """A valid cell: every edge from an earlier node; `pairs`: exactly two edges per node."""
    nodes = []
    for pos in range(draw(st.integers(1, max_nodes))):
        j = inputs + pos
        count = 2 if pairs else draw(st.integers(1, 3))
        edges = tuple(Edge(op=draw(op_names), input=draw(st.integers(0, j - 1)))
                      for _ in range(count))
        nodes.append(Node(edges=edges))
    all_nodes = list(range(inputs + len(nodes)))
    concat = draw(st.lists(st.sampled_from(all_nodes), min_size=1, unique=True))
    return CellGenotype(nodes=tuple(nodes), concat=tuple(concat), inputs=inputs)


@st.composite
def genotypes(draw, inputs: st.SearchStrategy[int] | None = None, pairs: bool | None = None
              ) -> Genotype:
    """A valid genotype; both cells take the same number of inputs."""
    n_inputs = draw(inputs if inputs is not None else st.integers(1, 3))
    two = draw(st.booleans()) if pairs is None else pairs
    return Genotype(name=draw(identifiers), normal=draw(cell_genotypes(n_inputs, two)),
                    reduce=draw(cell_genotypes(n_inputs, two)), source=draw(sources))


@st.composite
def cell_shapes(draw) -> tuple[int, int, int]:
    """(inputs, nodes, keep) of a supernet cell."""
    return (draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4)))


def edge_count(inputs: int, nodes: int) -> int:
    return sum(inputs + p for p in range(nodes))


@st.composite
def score_tables(draw, edges: int, ops: int, low: int = -6, high: int = 6) -> torch.Tensor:
    """E x O integer-valued scores in float64; a narrow range so that ties are common."""
    values = draw(st.lists(st.integers(low, high), min_size=edges * ops, max_size=edges * ops))
    return torch.tensor(values, dtype=torch.float64).reshape(edges, ops)


@st.composite
def distinct_row_tables(draw, edges: int, ops: int) -> torch.Tensor:
    """E x O scores with no tie inside any row (each row a permutation of distinct values)."""
    rows = [draw(st.permutations(range(ops))) for _ in range(edges)]
    shift = draw(st.lists(st.integers(-3, 3), min_size=edges, max_size=edges))
    return torch.tensor([[v + s for v in row] for row, s in zip(rows, shift)], dtype=torch.float64)
