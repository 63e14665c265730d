"""Derivation (Eq. 6-9) and the epoch rules: properties over plain tensors, and hand examples."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msrdsl.derive import (choose_ops, derive_cell, derive_genotype, edge_index, edge_strengths,
                           epoch_choice, keep_edges)
from msrdsl.errors import GenotypeError, RunError
from msrdsl.genotype_io import from_darts
from msrdsl.ir import CellSpec, Name, Rule, Selection
from strategies_genotype import (DARTS_OPS, cell_shapes, distinct_row_tables, edge_count,
                                 score_tables)

MSR_OPS = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def rule(op: str, edge: str, exclude: tuple[str, ...] = ()) -> Rule:
    return Rule("r", Selection(op, Name("s")), Selection(edge, Name("s")), exclude=exclude)


DARTS_RULE = rule("argmax", "argmax", ("none",))
MSR_RULE = rule("argmin", "argmax")


def cell_of(shape: tuple[int, int, int]) -> CellSpec:
    inputs, nodes, keep = shape
    return CellSpec(inputs=inputs, nodes=nodes, keep=keep)


@st.composite
def problems(draw, table=score_tables, edge_1d: bool | None = None):
    """A cell shape, operator names, an op table and an edge table (1-D or 2-D)."""
    cell = cell_of(draw(cell_shapes()))
    names = list(draw(st.permutations(DARTS_OPS)))[:draw(st.integers(1, len(DARTS_OPS)))]
    e = edge_count(cell.inputs, cell.nodes)
    ops = draw(table(e, len(names)))
    one_d = draw(st.booleans()) if edge_1d is None else edge_1d
    edges = draw(score_tables(e, 1)).reshape(-1) if one_d else draw(table(e, len(names)))
    return cell, names, ops, edges


def derive(cell, names, ops, edges, r: Rule = MSR_RULE):
    return derive_cell(ops, edges, names, op_direction=r.op.direction,
                       edge_direction=r.edge.direction, exclude=r.exclude, cell=cell)


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=60, deadline=None)
@given(problems())
def test_every_node_keeps_min_k_distinct_earlier_predecessors(p) -> None:
    cell, names, ops, edges = p
    for r in (MSR_RULE, rule("argmax", "argmin"), DARTS_RULE):
        if all(n in r.exclude for n in names):
            continue
        derived = derive(cell, names, ops, edges, r)
        assert len(derived.nodes) == cell.nodes
        assert derived.concat == tuple(range(cell.inputs, cell.inputs + cell.nodes))
        for pos, node in enumerate(derived.nodes):
            j = cell.inputs + pos
            sources = [e.input for e in node.edges]
            assert len(sources) == min(cell.keep, j) == len(set(sources))
            assert all(0 <= i < j for i in sources)
            assert all(e.op in names and e.op not in r.exclude for e in node.edges)


TRANSFORMS = {
    "affine": lambda t: 3 * t + 7,
    "cube": lambda t: t ** 3,
    "exp": lambda t: torch.exp(t / 4),
    "atan": torch.atan,
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@settings(max_examples=60, deadline=None)
@given(p=problems())
def test_invariant_under_strictly_increasing_transforms(name: str, p) -> None:
    cell, names, ops, edges = p
    f = TRANSFORMS[name]
    assert derive(cell, names, f(ops), f(edges)) == derive(cell, names, ops, edges)
    assert torch.equal(choose_ops(f(ops), "argmin"), choose_ops(ops, "argmin"))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_max_rule_on_scores_is_min_rule_on_negated_scores(p) -> None:
    cell, names, ops, edges = p
    assert (derive(cell, names, ops, edges, rule("argmax", "argmax"))
            == derive(cell, names, -ops, -edges, rule("argmin", "argmin")))
    assert (derive(cell, names, ops, edges, rule("argmax", "argmin"))
            == derive(cell, names, -ops, -edges, rule("argmin", "argmax")))


@settings(max_examples=60, deadline=None)
@given(p=problems(table=distinct_row_tables), data=st.data())
def test_permuting_operators_changes_nothing(p, data) -> None:
    cell, names, ops, edges = p
    perm = data.draw(st.permutations(range(len(names))))
    permuted_names = [names[k] for k in perm]
    permuted_edges = edges if edges.dim() == 1 else edges[:, perm]
    for r in (MSR_RULE, DARTS_RULE):
        if all(n in r.exclude for n in names):
            continue
        assert (derive(cell, permuted_names, ops[:, perm], permuted_edges, r)
                == derive(cell, names, ops, edges, r))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_dtype_and_container_do_not_matter(p) -> None:
    cell, names, ops, edges = p
    expected = derive(cell, names, ops, edges)
    assert derive(cell, names, ops.float(), edges.float()) == expected
    assert derive(cell, names, ops.tolist(), edges.tolist()) == expected


def darts_parse(weights: list[list[float]], names: list[str], inputs: int, nodes: int,
                keep: int) -> list[list[tuple[str, int]]]:
    """DARTS' `_parse` as its paper and code describe it, in plain Python, for comparison:
    rank each node's incoming edges by their best non-`none` weight with a stable sort, keep
    the top `keep`, and give each the first op of largest weight (a strict `>` scan)."""
    out, start = [], 0
    allowed = [k for k, n in enumerate(names) if n != "none"]
    for pos in range(nodes):
        n = inputs + pos
        rows = weights[start:start + n]
        ranked = sorted(range(n), key=lambda x: -max(rows[x][k] for k in allowed))[:keep]
        node = []
        for x in ranked:
            best = None
            for k in allowed:
                if best is None or rows[x][k] > rows[x][best]:
                    best = k
            node.append((names[best], x))
        out.append(node)
        start += n
    return out


@settings(max_examples=60, deadline=None)
@given(p=problems(edge_1d=False))
def test_darts_rule_matches_darts_parse(p) -> None:
    cell, names, ops, _ = p
    if names == ["none"]:
        return
    alpha = torch.softmax(ops, dim=1)
    derived = derive(cell, names, alpha, alpha, DARTS_RULE)
    expected = darts_parse(alpha.tolist(), names, cell.inputs, cell.nodes, cell.keep)
    assert [[(e.op, e.input) for e in node.edges] for node in derived.nodes] == expected


# ---------------------------------------------------------------------------------------------
# Hand examples


def test_darts_rule_on_a_hand_made_alpha_table() -> None:
    # softmax(alpha) rows, DARTS' operator order; unnamed entries are 0.01.
    rows = {
        (0, 2): {"none": 0.5, "sep_conv_3x3": 0.3},
        (1, 2): {"skip_connect": 0.4},
        (0, 3): {"dil_conv_3x3": 0.2},
        (1, 3): {"max_pool_3x3": 0.6},
        (2, 3): {"sep_conv_5x5": 0.35},
        (0, 4): {"none": 0.9, "avg_pool_3x3": 0.05},  # `none` wins the row but is excluded
        (1, 4): {"dil_conv_5x5": 0.25},
        (2, 4): {"sep_conv_3x3": 0.25},  # ties with (1, 4): the lower source ranks first
        (3, 4): {"skip_connect": 0.1},
        (0, 5): {"sep_conv_5x5": 0.45},
        (1, 5): {"sep_conv_3x3": 0.2},
        (2, 5): {n: 0.125 for n in DARTS_OPS},  # a tie across ops: the first allowed op
        (3, 5): {"skip_connect": 0.5},
        (4, 5): {"dil_conv_3x3": 0.3},
    }
    cell = CellSpec()
    assert list(rows) == cell.edge_list()
    table = torch.tensor([[rows[e].get(n, 0.01) for n in DARTS_OPS] for e in cell.edge_list()])
    g = derive_genotype("hand", (table, table), (table, table), DARTS_OPS, DARTS_RULE, cell)
    expected = from_darts(
        "hand = Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('max_pool_3x3', 1), "
        "('sep_conv_5x5', 2), ('dil_conv_5x5', 1), ('sep_conv_3x3', 2), ('skip_connect', 3), "
        "('sep_conv_5x5', 0)], normal_concat=range(2, 6), reduce=[('skip_connect', 1), "
        "('sep_conv_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_5x5', 2), ('dil_conv_5x5', 1), "
        "('sep_conv_3x3', 2), ('skip_connect', 3), ('sep_conv_5x5', 0)], "
        "reduce_concat=range(2, 6))")
    assert g == expected


def test_msr_rule_on_a_hand_made_stable_rank_table() -> None:
    # Mean stable ranks (Eq. 7) per edge and op; edge scores max_v(-R) (Eq. 8) as criteria give them.
    cell = CellSpec(nodes=2)
    ranks = torch.tensor([
        [5.0, 4.0, 9.0, 6.0],  # 0 -> 2: sep_conv_5x5 (4.0)
        [3.0, 8.0, 7.0, 3.5],  # 1 -> 2: sep_conv_3x3 (3.0)
        [6.0, 6.0, 2.0, 7.0],  # 0 -> 3: dil_conv_3x3 (2.0)
        [9.0, 9.0, 9.0, 9.0],  # 1 -> 3: all equal: sep_conv_3x3
        [2.5, 1.0, 3.0, 4.0],  # 2 -> 3: sep_conv_5x5 (1.0)
    ])
    strength = (-ranks).max(dim=1).values
    derived = derive_cell(ranks, strength, MSR_OPS, op_direction="argmin", edge_direction="argmax",
                          cell=cell)
    assert [[(e.op, e.input) for e in n.edges] for n in derived.nodes] == [
        [("sep_conv_3x3", 1), ("sep_conv_5x5", 0)],
        [("sep_conv_5x5", 2), ("dil_conv_3x3", 0)],
    ]


def test_ties_go_to_the_lowest_index() -> None:
    zeros = torch.zeros(14, 4)
    assert choose_ops(zeros, "argmin").tolist() == [0] * 14
    assert choose_ops(zeros, "argmax", [True, False, False, False]).tolist() == [1] * 14
    assert keep_edges(torch.zeros(14), CellSpec()) == [[0, 1]] * 4
    # -0.0 and 0.0 are equal scores, not a reason to prefer one.
    assert choose_ops(torch.tensor([[0.0, -0.0]]), "argmax").tolist() == [0]
    assert choose_ops(torch.tensor([[-0.0, 0.0]]), "argmin").tolist() == [0]
    # Infinite scores are ordinary ones; an excluded entry never ties with them.
    inf = math.inf
    assert choose_ops(torch.tensor([[-inf, -inf, 1.0]]), "argmax", [False, False, True]).tolist() == [0]
    assert choose_ops(torch.tensor([[inf, inf]]), "argmin").tolist() == [0]
    ranked = keep_edges(torch.tensor([1.0, 1.0, 2.0, 2.0, 2.0]), CellSpec(nodes=2, keep=3))
    assert ranked == [[0, 1], [0, 1, 2]]


def test_keep_edges_ranks_strongest_first() -> None:
    strengths = torch.tensor([0.1, 0.9, 0.3, 0.2, 0.8, 0.5, 0.7, 0.6, 0.4])
    assert keep_edges(strengths, CellSpec(nodes=3)) == [[1, 0], [2, 0], [1, 2]]
    assert keep_edges(strengths, CellSpec(nodes=3, keep=1)) == [[1], [2], [1]]


def test_edge_index_follows_cellspec_edge_list() -> None:
    for inputs in (1, 2, 3):
        cell = CellSpec(inputs=inputs, nodes=5)
        for row, (i, j) in enumerate(cell.edge_list()):
            assert edge_index(i, j - inputs, inputs) == row


def test_edge_strengths_reduce_over_allowed_ops() -> None:
    table = torch.tensor([[9.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    assert edge_strengths(table, "argmax", [True, False, False]).tolist() == [2.0, 5.0]
    assert edge_strengths(table, "argmin").tolist() == [-1.0, 1.0]
    assert edge_strengths(torch.tensor([3.0, -2.0]), "argmin").tolist() == [-3.0, 2.0]


def test_nan_scores_are_errors() -> None:
    cell = CellSpec(nodes=1)
    ops = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    with pytest.raises(GenotypeError, match=r"normal cell: the op score of edge 0 -> 2 for "
                                            r"b is NaN"):
        derive_cell(ops, torch.zeros(2), ["a", "b"], op_direction="argmin",
                    edge_direction="argmax", cell=cell, cell_name="normal")
    # ... unless the NaN belongs to an excluded operator, which takes no part.
    derived = derive_cell(ops, ops, ["a", "b"], op_direction="argmin", edge_direction="argmax",
                          cell=cell, exclude=("b",))
    assert [e.op for e in derived.nodes[0].edges] == ["a", "a"]
    with pytest.raises(GenotypeError, match="edge score of edge 1 -> 2 is NaN"):
        derive_cell(torch.zeros(2, 2), torch.tensor([0.0, float("nan")]), ["a", "b"],
                    op_direction="argmin", edge_direction="argmax", cell=cell)
    with pytest.raises(GenotypeError, match="NaN"):
        choose_ops(ops, "argmax")
    with pytest.raises(GenotypeError, match="NaN"):
        keep_edges(torch.tensor([float("nan"), 1.0]), cell)


def test_misuse_is_reported() -> None:
    cell = CellSpec(nodes=1)
    with pytest.raises(ValueError, match="2 edges x 2 operators"):
        derive_cell(torch.zeros(3, 2), torch.zeros(3), ["a", "b"], op_direction="argmin",
                    edge_direction="argmax", cell=cell)
    with pytest.raises(ValueError, match="direction"):
        choose_ops(torch.zeros(2, 2), "min")
    with pytest.raises(GenotypeError, match="every operator is excluded"):
        choose_ops(torch.zeros(2, 2), "argmin", [True, True])


def test_per_cell_type_operator_lists() -> None:
    cell = CellSpec(nodes=1)
    g = derive_genotype("g", (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.zeros(2)),
                        (torch.tensor([[0.0], [0.0]]), torch.zeros(2)),
                        {"normal": ["a", "b"], "reduce": ["c"]}, MSR_RULE, cell, source="test")
    assert [e.op for e in g.normal.nodes[0].edges] == ["a", "b"]
    assert [e.op for e in g.reduce.nodes[0].edges] == ["c", "c"] and g.source == "test"


# ---------------------------------------------------------------------------------------------
# Epoch rules

losses_st = st.lists(st.integers(0, 8).map(float), min_size=1, max_size=30)


def before_rise_by_definition(losses: list[float], patience: int) -> int:
    """The first e with losses[e+1..e+patience] all above min(losses[0..e]); else the last."""
    for e in range(len(losses) - patience):
        floor = min(losses[:e + 1])
        if all(x > floor for x in losses[e + 1:e + 1 + patience]):
            return e
    return len(losses) - 1


@settings(max_examples=300, deadline=None)
@given(losses_st, st.integers(1, 5))
def test_before_valid_loss_rises_matches_its_definition(losses: list[float], patience: int) -> None:
    e = epoch_choice(losses, "before_valid_loss_rises", patience)
    assert e == before_rise_by_definition(losses, patience)
    if e < len(losses) - 1:  # a confirmed rise: the chosen epoch holds the running minimum
        assert losses[e] == min(losses[:e + 1])
        assert all(x > losses[e] for x in losses[e + 1:e + 1 + patience])
    assert epoch_choice(torch.tensor(losses), "before_valid_loss_rises", patience) == e


@settings(max_examples=60, deadline=None)
@given(losses_st)
def test_last_and_min_rules(losses: list[float]) -> None:
    assert epoch_choice(losses, "last") == len(losses) - 1
    m = epoch_choice(losses, "min_valid_loss")
    assert losses[m] == min(losses) and min(losses) not in losses[:m]


@settings(max_examples=60, deadline=None)
@given(losses_st, st.integers(1, 5))
def test_rise_needs_patience_epochs(losses: list[float], patience: int) -> None:
    # A longer patience can only confirm a rise later (or never).
    assert (epoch_choice(losses, "before_valid_loss_rises", patience)
            <= epoch_choice(losses, "before_valid_loss_rises", patience + 1))


def test_epoch_rule_examples() -> None:
    # Like the paper's Fig.: lowest near epoch 35, rising after it.
    curve = [2.0 - 0.04 * t for t in range(36)] + [0.62, 0.63, 0.61, 0.65, 0.7, 0.72]
    assert epoch_choice(curve, "min_valid_loss") == 35
    assert epoch_choice(curve, "before_valid_loss_rises", 3) == 35
    assert epoch_choice([5, 4, 3, 2, 1], "before_valid_loss_rises", 1) == 4  # never rises
    assert epoch_choice([1, 2, 3, 4], "before_valid_loss_rises", 3) == 0
    assert epoch_choice([1, 2, 3], "before_valid_loss_rises", 3) == 2  # cut short: not a rise
    assert epoch_choice([3, 1, 2, 1, 2, 3, 4], "before_valid_loss_rises", 2) == 3  # ties reset
    assert epoch_choice([3, 1, 2, 0.5, 2, 3, 4], "before_valid_loss_rises", 1) == 1


def test_epoch_rule_errors() -> None:
    with pytest.raises(RunError, match="epoch 2 is NaN"):
        epoch_choice([1.0, 0.5, float("nan")], "min_valid_loss")
    with pytest.raises(ValueError):
        epoch_choice([], "last")
    with pytest.raises(ValueError):
        epoch_choice([1.0], "first")
    with pytest.raises(ValueError):
        epoch_choice([1.0], "before_valid_loss_rises", 0)
