"""Depth, width and Kendall's tau, checked against hand counts and SciPy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msrdsl.analysis import cell_depth, cell_width, differing_edges, kendall_tau, node_depths
from msrdsl.genotype_io import load_genotype

scipy_stats = pytest.importorskip("scipy.stats")


def test_depth_and_width_of_published_cells():
    darts = load_genotype("darts_v2")
    # normal: 2 <- 0,1; 3 <- 0,1; 4 <- 1,0; 5 <- 0,2: the longest path is 0 -> 2 -> 5.
    assert node_depths(darts.normal)[5] == 2
    assert cell_depth(darts.normal) == 2
    assert cell_width(darts.normal) == 4
    msr = load_genotype("msr_darts")
    # normal: 2 <- 1,0; 3 <- 2,1; 4 <- 3,0; 5 <- 1,2: 0 -> 2 -> 3 -> 4 is three operators deep.
    assert cell_depth(msr.normal) == 3
    # reduce takes every input from nodes 0 and 1 (the reference code's resolution quirk).
    assert cell_depth(msr.reduce) == 1 and cell_width(msr.reduce) == 4


def test_differing_edges():
    a, b = load_genotype("darts_v1"), load_genotype("darts_v2")
    diff = differing_edges([a, b], "normal")
    assert (2, 5) in diff  # skip_connect in V1, dil_conv_3x3 in V2
    assert differing_edges([a, a], "reduce") == set()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=12))
def test_kendall_tau_matches_scipy(pairs):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    expected = scipy_stats.kendalltau(a, b).statistic
    got = kendall_tau(a, b)
    if expected != expected:  # NaN: a constant ranking
        assert got != got
    else:
        assert got == pytest.approx(expected)
