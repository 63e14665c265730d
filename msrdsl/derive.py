"""Derivation: score tables -> one operator per edge -> the kept edges -> a Genotype (Eq. 6-9).

Everything here is a pure function of plain tensors, so every property of derivation can be
tested without training anything. A cell type's scores come as two tables over its mixed edges,
in the DARTS order of `CellSpec.edge_list()` (by target node j = inputs..inputs+nodes-1, then
by source i = 0..j-1):

- `op_scores`, E x O (O operators in the space's order): the operator of each edge is the
  argmin or argmax over the row (Eq. 7 for MSR-DARTS, argmax softmax(alpha) for DARTS);
- `edge_scores`, E or E x O: the strength of each edge (Eq. 6, Eq. 8); a table is reduced over
  the allowed operators to its best entry in the rule's direction.

Decisions other stages rely on:

- Ties are broken by the lowest index: among equal scores the operator listed first wins, and
  among equally strong edges the one from the lower-numbered source. That is what DARTS'
  `_parse` does (a strict `>` scan and Python's stable `sorted`); torch's own argmax leaves
  ties unspecified, so it is never used to decide.
- A node keeps min(keep, predecessors) edges (Eq. 9), listed strongest first, as DARTS'
  `_parse` lists them.
- Excluded operators (DARTS' `none`) are never chosen and take no part in edge strength.
- A NaN among the scores that decide is an error, never a silent choice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch

from msrdsl.errors import GenotypeError, RunError
from msrdsl.genotype import CellGenotype, Edge, Genotype, Node

__all__ = [
    "choose_ops",
    "edge_strengths",
    "keep_edges",
    "edge_index",
    "derive_cell",
    "derive_genotype",
    "epoch_choice",
    "EPOCH_RULES",
]

DIRECTIONS = ("argmin", "argmax")
EPOCH_RULES = ("last", "min_valid_loss", "before_valid_loss_rises")


class CellShape(Protocol):
    """What derivation needs of a cell: `msrdsl.ir.CellSpec` satisfies it."""

    inputs: int
    nodes: int
    keep: int


# ---------------------------------------------------------------------------------------------
# Plumbing


def _sign(direction: str) -> float:
    """+1 when larger is better, -1 when smaller is: argmin over s is argmax over -s."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    return 1.0 if direction == "argmax" else -1.0


def _table(scores: Any, name: str) -> torch.Tensor:
    # float64 holds every float32 and every small int exactly, so the conversion keeps order.
    t = torch.as_tensor(scores).detach().to(device="cpu", dtype=torch.float64)
    if t.dim() not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {tuple(t.shape)}")
    return t


def _allowed(excluded_mask: Any, ops: int) -> list[bool]:
    if excluded_mask is None:
        return [True] * ops
    mask = torch.as_tensor(excluded_mask, dtype=torch.bool).reshape(-1).tolist()
    if len(mask) != ops:
        raise ValueError(f"excluded_mask has {len(mask)} entries for {ops} operators")
    if all(mask):
        raise GenotypeError("every operator is excluded, so no edge can choose one")
    return [not m for m in mask]


def _find_nan(rows: list[Any], allowed: list[bool] | None) -> tuple[int, ...] | None:
    """(edge,) or (edge, op) of the first NaN that takes part in a decision, or None."""
    for e, row in enumerate(rows):
        if isinstance(row, float):
            if math.isnan(row):
                return (e,)
            continue
        for k, v in enumerate(row):
            if math.isnan(v) and (allowed is None or allowed[k]):
                return (e, k)
    return None


def _check_no_nan(rows: list[Any], allowed: list[bool] | None, name: str) -> None:
    bad = _find_nan(rows, allowed)
    if bad is not None:
        raise GenotypeError(f"{name}{list(bad)} is NaN, so no choice can be made", hint=_NAN_HINT)


_NAN_HINT = "the search diverged or a score is 0/0; look at the run's scores"


# The decisions themselves are plain Python over the rows: tables are small (tens of edges, a
# handful of operators), and a strict `>` scan states the tie rule more plainly than tensor ops.


def _first_best(row: list[float], sign: float, allowed: list[bool]) -> int:
    """The lowest allowed index holding the row's best value (DARTS' strict `>` scan)."""
    best = -1
    for k, v in enumerate(row):
        if allowed[k] and (best < 0 or sign * v > sign * row[best]):
            best = k
    return best


def _strength(row: list[float] | float, sign: float, allowed: list[bool]) -> float:
    if isinstance(row, float):
        return sign * row
    return max(sign * v for v, ok in zip(row, allowed) if ok)


# ---------------------------------------------------------------------------------------------
# Eq. 6-9


def choose_ops(op_scores: Any, direction: str, excluded_mask: Any = None) -> torch.Tensor:
    """Eq. 7 (argmin stable rank) / DARTS argmax alpha: the operator index of every edge.

    Ties go to the lowest operator index; excluded operators are never chosen.
    """
    table = _table(op_scores, "op_scores")
    if table.dim() != 2:
        raise ValueError(f"op_scores must be E x O, got shape {tuple(table.shape)}")
    sign = _sign(direction)
    allowed = _allowed(excluded_mask, table.shape[1])
    rows = table.tolist()
    _check_no_nan(rows, allowed, "op_scores")
    return torch.tensor([_first_best(row, sign, allowed) for row in rows], dtype=torch.long)


def edge_strengths(edge_scores: Any, direction: str, excluded_mask: Any = None) -> torch.Tensor:
    """Eq. 6 / Eq. 8: one strength per edge, larger = stronger.

    A 1-D table is already one score per edge; a 2-D table is reduced to each edge's best
    allowed entry (max for argmax, min for argmin), as `max_over_ops` does in Eq. 6 and 8.
    """
    table = _table(edge_scores, "edge_scores")
    sign = _sign(direction)
    allowed = _allowed(excluded_mask, table.shape[1]) if table.dim() == 2 else []
    rows = table.tolist()
    _check_no_nan(rows, allowed, "edge_scores")
    return torch.tensor([_strength(row, sign, allowed) for row in rows], dtype=torch.float64)


def edge_index(source: int, position: int, inputs: int) -> int:
    """Row of edge source -> node `inputs + position` in the DARTS edge order."""
    # Nodes before this one own inputs + 0, inputs + 1, ... rows each.
    return position * inputs + position * (position - 1) // 2 + source


def _edge_count(cell: CellShape) -> int:
    return sum(cell.inputs + p for p in range(cell.nodes))


def keep_edges(strengths: Any, cell: CellShape) -> list[list[int]]:
    """Eq. 9: per intermediate node, the sources of its min(keep, predecessors) strongest edges,
    strongest first; equal strengths keep the lower source first."""
    s = _table(strengths, "strengths")
    if s.dim() != 1 or s.numel() != _edge_count(cell):
        raise ValueError(f"strengths must hold {_edge_count(cell)} edges, got shape "
                         f"{tuple(s.shape)}")
    values = s.tolist()
    _check_no_nan(values, None, "strengths")
    return _keep(values, cell)


def _keep(values: list[float], cell: CellShape) -> list[list[int]]:
    kept = []
    for pos in range(cell.nodes):
        sources = range(cell.inputs + pos)
        row = [values[edge_index(i, pos, cell.inputs)] for i in sources]
        # A stable sort on (-strength, source): the same order DARTS' `sorted(..., key=-max)`.
        ranked = sorted(sources, key=lambda i: (-row[i], i))
        kept.append(ranked[:min(cell.keep, len(ranked))])
    return kept


def derive_cell(op_scores: Any, edge_scores: Any, op_names: Sequence[str], *, op_direction: str,
                edge_direction: str, cell: CellShape, exclude: Iterable[str] = (),
                cell_name: str = "cell") -> CellGenotype:
    """Eq. 6-9 for one cell type: each kept edge with its chosen operator; concat of all nodes."""
    op_names = list(op_names)
    ops_t = _table(op_scores, "op_scores")
    expected = (_edge_count(cell), len(op_names))
    if tuple(ops_t.shape) != expected:
        raise ValueError(f"{cell_name} op_scores must be {expected[0]} edges x {expected[1]} "
                         f"operators, got shape {tuple(ops_t.shape)}")
    edge_t = _table(edge_scores, "edge_scores")
    if edge_t.shape[0] != expected[0] or (edge_t.dim() == 2 and edge_t.shape[1] != expected[1]):
        raise ValueError(f"{cell_name} edge_scores must be {expected[0]} or {expected[0]} x "
                         f"{expected[1]}, got shape {tuple(edge_t.shape)}")
    excluded = set(exclude)
    allowed = _allowed([name in excluded for name in op_names], len(op_names))
    op_rows, edge_rows = ops_t.tolist(), edge_t.tolist()
    _named_nan_check(op_rows, edge_rows, op_names, allowed, cell, cell_name)
    op_sign, edge_sign = _sign(op_direction), _sign(edge_direction)
    choice = [_first_best(row, op_sign, allowed) for row in op_rows]
    kept = _keep([_strength(row, edge_sign, allowed) for row in edge_rows], cell)
    nodes = []
    for pos, sources in enumerate(kept):
        edges = tuple(Edge(op=op_names[choice[edge_index(i, pos, cell.inputs)]], input=i)
                      for i in sources)
        nodes.append(Node(edges=edges))
    concat = tuple(range(cell.inputs, cell.inputs + cell.nodes))
    return CellGenotype(nodes=tuple(nodes), concat=concat, inputs=cell.inputs)


def _named_nan_check(op_rows: list[Any], edge_rows: list[Any], op_names: list[str],
                     allowed: list[bool], cell: CellShape, cell_name: str) -> None:
    """The NaN error worded with the cell, the edge and the operator, where derive knows them."""
    for what, rows in (("op", op_rows), ("edge", edge_rows)):
        bad = _find_nan(rows, allowed)
        if bad is not None:
            edges = [(i, cell.inputs + p) for p in range(cell.nodes) for i in range(cell.inputs + p)]
            source, target = edges[bad[0]]
            op = f" for {op_names[bad[1]]}" if len(bad) == 2 else ""
            raise GenotypeError(
                f"cannot derive the {cell_name} cell: the {what} score of edge {source} -> "
                f"{target}{op} is NaN", hint=_NAN_HINT)


def derive_genotype(name: str, normal_tables: Sequence[Any], reduce_tables: Sequence[Any],
                    op_names: Sequence[str] | Mapping[str, Sequence[str]], rule: Any,
                    cell: CellShape, *, source: str | None = None) -> Genotype:
    """Eq. 6-9 for both cell types. Each `*_tables` is (op_scores, edge_scores); `rule` is an
    `ir.Rule` (or anything with `.op.direction`, `.edge.direction`, `.exclude`); `op_names` is one
    operator list or one per cell type ({"normal": [...], "reduce": [...]})."""
    cells = {}
    for cell_name, tables in (("normal", normal_tables), ("reduce", reduce_tables)):
        names = op_names[cell_name] if isinstance(op_names, Mapping) else op_names
        op_scores, edge_scores = tables
        cells[cell_name] = derive_cell(
            op_scores, edge_scores, names, op_direction=rule.op.direction,
            edge_direction=rule.edge.direction, cell=cell, exclude=tuple(rule.exclude),
            cell_name=cell_name)
    return Genotype(name=name, normal=cells["normal"], reduce=cells["reduce"], source=source)


# ---------------------------------------------------------------------------------------------
# Which epoch's architecture is the result


def epoch_choice(valid_losses: Sequence[float] | torch.Tensor, rule: str, patience: int = 3) -> int:
    """The 0-based epoch whose genotype is the search result.

    - `last`: the final epoch.
    - `min_valid_loss`: the epoch of the lowest validation loss (the earliest, on ties).
    - `before_valid_loss_rises` (MSR-DARTS, Sec. 4: "the architecture generated before the
      increase in the validation loss"): the epoch e just before the first rise, where a rise
      is `patience` consecutive epochs e+1..e+patience whose losses all stay strictly above
      min(loss[0..e]), the running minimum at e. If no rise is confirmed within the epochs run
      (a rise cut short by the end does not count), the last epoch. When a rise is confirmed,
      the chosen e holds the running minimum: loss[e] == min(loss[0..e]).
    """
    losses = [float(x) for x in (valid_losses.tolist() if isinstance(valid_losses, torch.Tensor)
                                 else valid_losses)]
    if not losses:
        raise ValueError("epoch_choice needs at least one epoch")
    if any(math.isnan(x) for x in losses):
        epoch = next(i for i, x in enumerate(losses) if math.isnan(x))
        raise RunError(f"the validation loss of epoch {epoch} is NaN, so no epoch can be chosen")
    if rule == "last":
        return len(losses) - 1
    if rule == "min_valid_loss":
        return min(range(len(losses)), key=lambda i: (losses[i], i))
    if rule == "before_valid_loss_rises":
        if patience < 1:
            raise ValueError(f"patience must be at least 1, not {patience}")
        return _before_rise(losses, patience)
    raise ValueError(f"epoch rule must be one of {EPOCH_RULES}, not {rule!r}")


def _before_rise(losses: list[float], patience: int) -> int:
    running_min = losses[0]
    above = 0  # consecutive epochs, up to now, strictly above the running minimum
    for t in range(1, len(losses)):
        if losses[t] > running_min:
            above += 1
            if above == patience:
                return t - patience
        else:
            running_min, above = losses[t], 0
    return len(losses) - 1
