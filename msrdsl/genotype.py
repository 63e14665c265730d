"""The Genotype: a derived architecture as plain data (torch-free, frozen).

A cell has `inputs` input nodes (numbered 0..inputs-1: the outputs of the two previous cells in
DARTS), then intermediate nodes numbered from `inputs` on. Each intermediate node sums its kept
edges; each edge applies one operator to an earlier node. The cell's output concatenates the
nodes listed in `concat`.
"""

from __future__ import annotations

from attrs import field, frozen

from msrdsl.errors import Location


@frozen
class Edge:
    """One kept edge: operator `op` applied to node `input`."""

    op: str
    input: int
    loc: Location | None = field(default=None, eq=False, repr=False)


@frozen
class Node:
    """An intermediate node: the sum of its kept edges."""

    edges: tuple[Edge, ...]
    loc: Location | None = field(default=None, eq=False, repr=False)


@frozen
class CellGenotype:
    """One cell type's DAG after derivation."""

    nodes: tuple[Node, ...]
    concat: tuple[int, ...]
    inputs: int = 2
    loc: Location | None = field(default=None, eq=False, repr=False)

    def node_index(self, position: int) -> int:
        """The node number of the `position`-th intermediate node."""
        return self.inputs + position

    @property
    def node_indices(self) -> range:
        return range(self.inputs, self.inputs + len(self.nodes))

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(edge.op for node in self.nodes for edge in node.edges)


@frozen
class Genotype:
    """A whole architecture: the normal and the reduction cell, named, with its source."""

    name: str
    normal: CellGenotype
    reduce: CellGenotype
    source: str | None = None
    loc: Location | None = field(default=None, eq=False, repr=False)

    def cell(self, reduction: bool) -> CellGenotype:
        return self.reduce if reduction else self.normal

    @property
    def cells(self) -> dict[str, CellGenotype]:
        return {"normal": self.normal, "reduce": self.reduce}
