"""A comparison of genotypes (or of the rules that chose them): the data `compare` shows.

Built once, rendered by msrdsl.render (terminal) or dumped as JSON; everything here is computed
from the genotypes and score tables, so it is the same in both views.
"""

from __future__ import annotations

import itertools
from typing import Any

from attrs import field, frozen

from msrdsl.analysis import cell_depth, cell_width, differing_edges, edge_ops, kendall_tau
from msrdsl.genotype import Genotype
from msrdsl.genotype_io import to_json

CELL_TYPES = ("normal", "reduce")


@frozen
class Comparison:
    labels: tuple[str, ...]
    genotypes: tuple[Genotype, ...]
    # label -> cell type -> {"op": (E, O) table, "edge": (E,) strengths}; only for rules on a run
    scores: dict[str, Any] = field(factory=dict)
    epoch: int | None = None
    derived_from: dict[str, str] = field(factory=dict)
    # label -> {"params": .., "params_aux": .., "mult_adds": .., "setting": ".."}
    counts: dict[str, dict[str, Any]] = field(factory=dict)
    operators: tuple[str, ...] = ()
    edges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, labels, genotypes, *, scores=None, epoch=None, eval_space=None, counts=True,
           derived_from=None) -> Comparison:
        space_ops = tuple(eval_space.operators) if eval_space is not None else ()
        edge_list = tuple(eval_space.cell.edge_list()) if eval_space is not None else ()
        return cls(tuple(labels), tuple(genotypes), scores or {}, epoch, derived_from or {},
                   _counts(labels, genotypes, eval_space) if counts else {}, space_ops, edge_list)

    def rows(self, cell_type: str) -> list[tuple[tuple[int, int], list[str | None], bool]]:
        """Every edge kept by some genotype: (edge, op per genotype or None, differs)."""
        maps = [edge_ops(g.cell(cell_type == "reduce")) for g in self.genotypes]
        differ = differing_edges(self.genotypes, cell_type)
        edges = sorted(set().union(*maps), key=lambda e: (e[1], e[0]))
        return [(e, [m.get(e) for m in maps], e in differ) for e in edges]

    def shape(self, label: str) -> dict[str, dict[str, int]]:
        g = self.genotypes[self.labels.index(label)]
        return {t: {"depth": cell_depth(g.cell(t == "reduce")), "width": cell_width(g.cell(t == "reduce"))}
                for t in CELL_TYPES}

    def taus(self) -> dict[tuple[str, str], dict[str, float]]:
        """Kendall's tau between the edge rankings of each pair of rules, per cell type."""
        out = {}
        for a, b in itertools.combinations([lbl for lbl in self.labels if lbl in self.scores], 2):
            out[(a, b)] = {t: kendall_tau(self.scores[a][t]["edge"], self.scores[b][t]["edge"])
                           for t in CELL_TYPES}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "labels": list(self.labels),
            "genotypes": {lbl: to_json(g) for lbl, g in zip(self.labels, self.genotypes)},
            "derived_from": self.derived_from,
            "differs": {t: [list(e) for e, _, d in self.rows(t) if d] for t in CELL_TYPES},
            "shape": {lbl: self.shape(lbl) for lbl in self.labels},
            "kendall_tau": {f"{a} vs {b}": v for (a, b), v in self.taus().items()},
            "scores": self.scores,
            "counts": self.counts,
        }


def _counts(labels, genotypes, space) -> dict[str, dict[str, Any]]:
    """Parameters and mult-adds of each genotype at the space's evaluation settings."""
    from msrdsl.nn import count_genotype

    ev = space.evaluate if space is not None else None
    net = ev.net if ev else "cifar"
    cells = ev.cells if ev else 20
    channels = ev.channels if ev else 36
    ops = space.ops if space is not None else None
    out = {}
    for label, g in zip(labels, genotypes):
        out[label] = {**count_genotype(g, ops, net=net, cells=cells, channels=channels),
                      "setting": f"{net}, {cells} cells, {channels} channels"}
    return out
