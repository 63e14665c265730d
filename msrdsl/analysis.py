"""Pure measures for comparing genotypes and rules: cell depth and width, Kendall's tau.

Depth and width follow MSR-DARTS section 4.5, after Shu et al. ("Understanding architectures
learnt by cell-based neural architecture search", ICLR 2020):
- depth: the number of operators on the longest path from a cell input to the cell output
  (the output's concat adds no operator);
- width: the number of intermediate nodes fed directly by a cell input, in multiples of the
  cell's channel count C (every intermediate node has C channels).
"""

from __future__ import annotations

from collections.abc import Sequence

from msrdsl.genotype import CellGenotype, Genotype


def node_depths(cell: CellGenotype) -> dict[int, int]:
    """Operators on the longest path from a cell input to each node (inputs have depth 0)."""
    depth = {i: 0 for i in range(cell.inputs)}
    for number, node in zip(cell.node_indices, cell.nodes):
        depth[number] = max(depth[e.input] + 1 for e in node.edges) if node.edges else 0
    return depth


def cell_depth(cell: CellGenotype) -> int:
    """The longest input-to-output path, in operators."""
    depths = node_depths(cell)
    return max(depths[c] for c in cell.concat)


def cell_width(cell: CellGenotype) -> int:
    """Intermediate nodes fed directly by a cell input (the cell's width, in units of C)."""
    return sum(1 for node in cell.nodes if any(e.input < cell.inputs for e in node.edges))


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings of the same items (ties handled as tau-b does)."""
    if len(a) != len(b):
        raise ValueError("kendall_tau needs two sequences of the same length")
    concordant = discordant = ties_a = ties_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def edge_ops(cell: CellGenotype) -> dict[tuple[int, int], str]:
    """(source, target) -> operator for every kept edge of a cell."""
    return {(e.input, number): e.op
            for number, node in zip(cell.node_indices, cell.nodes) for e in node.edges}


def differing_edges(genotypes: Sequence[Genotype], cell_type: str) -> set[tuple[int, int]]:
    """Edges that are not kept with the same operator by every genotype."""
    maps = [edge_ops(g.cell(cell_type == "reduce")) for g in genotypes]
    every = set().union(*maps)
    return {edge for edge in every if len({m.get(edge) for m in maps}) > 1}
