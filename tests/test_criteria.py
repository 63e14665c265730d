"""Criteria: score expressions evaluated on a stand-in supernet whose last convolutions are known.

The stand-in gives every candidate operator a 1x1 last convolution, for which the stable rank has
a closed form (h * w times the stable rank of the weight matrix, Sedghi et al.), so the expected
tables are computed here independently of msrdsl.rank.
"""

from __future__ import annotations

import pytest
import torch
from attrs import define

from msrdsl.criteria import ScoreContext, base_calls, derive_with_rule, mix_weights, rule_tables, tables
from msrdsl.errors import SpaceError
from msrdsl.lang import parse_space, parse_value

SPACE = """
space tiny {
  operators [sep_conv_3x3, dil_conv_3x3, sep_conv_5x5]
  cell { inputs 2  nodes 2  keep 2 }
  network { cells 3  channels 4  reduce_at [1] }
  select msr { record [msr_max] }
}
"""


@define
class FakeConv:
    module: torch.nn.Conv2d
    input_hw: tuple[int, int]
    cell_input_hw: tuple[int, int]
    edge_stride: int
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


class FakeSupernet(torch.nn.Module):
    """Cells 0 and 2 normal at 8x8, cell 1 reducing 8x8 -> 4x4; one 1x1 last conv per op."""

    def __init__(self, space, alpha: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.cell_types = ["normal", "reduce", "normal"]
        edges = space.cell.edge_list()
        self.convs = torch.nn.ModuleList()
        self.records = []
        for cell, kind in enumerate(self.cell_types):
            res = (4, 4) if cell == 2 else (8, 8)
            for source, _target in edges:
                stride = 2 if kind == "reduce" and source < space.cell.inputs else 1
                real = (4, 4) if kind == "reduce" else res
                for _ in space.operators:
                    conv = torch.nn.Conv2d(3, 3, 1, bias=False)
                    self.convs.append(conv)
                    self.records.append(FakeConv(conv, real, res, stride))
        n_ops = len(space.operators)
        self.alphas = [torch.randn(len(edges), n_ops), torch.randn(len(edges), n_ops)] if alpha else []

    def last_convs(self):
        return self.records

    def arch_parameters(self):
        return self.alphas


def _matrix_rank(w: torch.Tensor) -> float:
    s = torch.linalg.svdvals(w.detach().double().reshape(w.shape[0], -1))
    return float((s**2).sum() / s.max() ** 2)


@pytest.fixture()
def space():
    return parse_space(SPACE)


def test_stable_rank_tables_match_closed_form(space):
    net = FakeSupernet(space)
    ctx = ScoreContext(space, net)
    got = tables(ctx, parse_value("stable_rank(last_conv)"))
    assert got["normal"].shape == (2, 5, 3) and got["reduce"].shape == (1, 5, 3)
    flat = [8 * 8 * _matrix_rank(c.module.weight) if i < 15 else None for i, c in enumerate(net.records)]
    assert got["normal"][0].flatten().tolist() == pytest.approx(flat[:15], rel=1e-5)
    # Cell 2 runs at 4x4.
    expected = [16 * _matrix_rank(c.module.weight) for c in net.records[30:45]]
    assert got["normal"][1].flatten().tolist() == pytest.approx(expected, rel=1e-5)


def test_cell_input_resolution_inflates_intermediate_edges_of_reduction_cells(space):
    net = FakeSupernet(space)
    ctx = ScoreContext(space, net)
    real = tables(ctx, parse_value("stable_rank(last_conv)"))["reduce"][0]
    ref = tables(ctx, parse_value("stable_rank(last_conv, at=cell_input)"))["reduce"][0]
    edges = space.cell.edge_list()
    for e, (source, _) in enumerate(edges):
        factor = 1.0 if source < 2 else 4.0  # 8x8 instead of the real 4x4
        assert ref[e].tolist() == pytest.approx((real[e] * factor).tolist(), rel=1e-5)


def test_per_pixel_divides_by_the_map(space):
    ctx = ScoreContext(space, FakeSupernet(space))
    plain = tables(ctx, parse_value("stable_rank(last_conv)"))
    per = tables(ctx, parse_value("stable_rank(last_conv, per_pixel=true)"))
    assert torch.allclose(per["normal"][0] * 64, plain["normal"][0])
    assert torch.allclose(per["normal"][1] * 16, plain["normal"][1])


def test_aggregations_and_negation(space):
    ctx = ScoreContext(space, FakeSupernet(space))
    cell = tables(ctx, parse_value("stable_rank(last_conv)"))
    mean = tables(ctx, parse_value("mean_over_cells(stable_rank(last_conv))"))
    assert torch.allclose(mean["normal"], cell["normal"].mean(0))
    strength = tables(ctx, parse_value("max_over_ops(-mean_over_cells(stable_rank(last_conv)))"))
    assert torch.allclose(strength["reduce"], (-mean["reduce"]).amax(-1))


def test_msr_rule_picks_the_minimum_and_max_rule_the_maximum(space):
    ctx = ScoreContext(space, FakeSupernet(space))
    mean = tables(ctx, parse_value("mean_over_cells(stable_rank(last_conv))"))["normal"]
    g_min = derive_with_rule(ctx, space.rule("msr"))
    g_max = derive_with_rule(ctx, space.rule("msr_max"))
    for node_min, node_max, target in zip(g_min.normal.nodes, g_max.normal.nodes, (2, 3)):
        for e in node_min.edges:
            row = mean[space.cell.edge_list().index((e.input, target))]
            assert space.operators[int(row.argmin())] == e.op
        for e in node_max.edges:
            row = mean[space.cell.edge_list().index((e.input, target))]
            assert space.operators[int(row.argmax())] == e.op


def test_darts_rule_excludes_none_and_reads_alpha():
    space = parse_space(SPACE.replace("sep_conv_5x5]", "none]").replace(
        "select msr { record [msr_max] }", "supernet { mix softmax(alpha) } select darts"))
    net = FakeSupernet(space, alpha=True)
    net.alphas[0][:, 2] = 100.0  # `none` dominates every edge, but is excluded
    ctx = ScoreContext(space, net)
    g = derive_with_rule(ctx, space.rule("darts"))
    assert "none" not in g.normal.ops
    op_table, edge = rule_tables(ctx, space.rule("darts"))["normal"]
    assert torch.allclose(op_table, torch.softmax(net.alphas[0], -1))
    assert torch.allclose(edge, op_table[:, :2].amax(-1))


def test_mix_weights_of_a_score_mixed_space():
    space = parse_space(SPACE.replace("select msr", "supernet { mix softmax(-stable_rank(last_conv)) } select msr"))
    ctx = ScoreContext(space, FakeSupernet(space))
    weights = mix_weights(ctx)
    assert weights["normal"].shape == (2, 5, 3)
    assert torch.allclose(weights["normal"].sum(-1), torch.ones(2, 5))


def test_base_calls_lists_what_a_rule_reads(space):
    calls = base_calls(space.rule("msr"))
    assert [c.name for c in calls] == ["stable_rank"]


def test_noise_sensitivity_needs_data(space):
    ctx = ScoreContext(space, FakeSupernet(space))
    with pytest.raises(SpaceError, match="validation data"):
        tables(ctx, parse_value("noise_sensitivity(last_conv)"))
