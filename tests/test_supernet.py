"""The supernet: shape inference against what the modules really see, random small specs,
mixing (uniform, alpha, score weights), parameter counts against DARTS and by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from attrs import evolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msrdsl.data.common import DatasetInfo
from msrdsl.errors import SpaceError
from msrdsl.ir import Call, CellSpec, Name, NetworkSpec, SpectralNormSpec, SupernetSpec
from msrdsl.lang import load_space, parse_space
from msrdsl.nn import compile_supernet, count_params, shape_table

SPACES = Path(__file__).resolve().parent.parent / "spaces"
CIFAR = DatasetInfo("cifar10", 3, 32, 10)
TINY = DatasetInfo("tiny", 3, 8, 5)

BASE = parse_space("""
space tiny {
  operators [sep_conv_3x3, dil_conv_3x3]
  cell { inputs 2  nodes 1  keep 1 }
  network { cells 1  channels 4  reduce_at [] }
}
""")
OPERATORS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7"]
MIXES = {"uniform": Name("uniform"), "alpha": Call("softmax", (Name("alpha"),)),
         "score": Call("softmax", (Call("stable_rank", (Name("last_conv"),)),))}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: a second OpenMP thread only adds contention on a shared two-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def space_of(cells=1, nodes=1, inputs=2, channels=4, reduce_at=(), operators=None, mix="uniform",
             spectral_norm=None, keep=1):
    return evolve(
        BASE,
        operators=tuple(operators or ("sep_conv_3x3", "max_pool_3x3")),
        cell=CellSpec(inputs=inputs, nodes=nodes, keep=keep),
        network=NetworkSpec(cells=cells, channels=channels, stem_multiplier=3,
                            reduce_at=tuple(reduce_at)),
        supernet=SupernetSpec(mix=MIXES[mix], spectral_norm=spectral_norm))


@st.composite
def small_specs(draw):
    cells = draw(st.integers(1, 5))
    inputs = draw(st.integers(1, 3))
    return dict(
        cells=cells, nodes=draw(st.integers(1, 4)), inputs=inputs,
        keep=draw(st.integers(1, inputs)),  # every node has at least `inputs` predecessors
        channels=draw(st.integers(2, 8)),
        reduce_at=sorted(draw(st.sets(st.integers(0, cells - 1), max_size=3))),
        operators=draw(st.lists(st.sampled_from(OPERATORS), min_size=1, max_size=3, unique=True)),
        mix=draw(st.sampled_from(sorted(MIXES))),
        spectral_norm=draw(st.sampled_from([None, SpectralNormSpec(method="power",
                                                                   power_iterations=1)])))


def record_inputs(net):
    seen = {}
    hooks = [c.module.register_forward_pre_hook(
        lambda m, args, key=c.key: seen.__setitem__(key, tuple(args[0].shape[1:]))) for c in
        net.candidate_convs()]
    return seen, hooks


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=small_specs(), channels_last=st.booleans())
def test_random_supernets_give_logits_and_their_shape_table(spec, channels_last):
    space = space_of(**spec)
    # float64: batch norm over 2 samples of a 1x1 map magnifies float32 rounding differences
    net = compile_supernet(space, TINY, dtype=torch.float64, channels_last=channels_last)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    logits = net(x)
    assert logits.shape == (2, 5)
    logits.sum().backward()
    if net.constraint is not None:  # a training forward rescales: compare at fixed weights
        net.constraint.enabled = False
        logits = net(x)
    for cell in net.cells:  # the same function without the phase domain of dilated operators
        cell.phase_domain = False
    torch.testing.assert_close(net(x), logits)
    net.eval()  # in eval mode every candidate conv sees its natural input
    seen, hooks = record_inputs(net)
    net(x)
    table = shape_table(space, TINY)
    assert [c.shape for c in net.candidate_convs()] == list(table)
    for row in table:  # shape inference agrees with what every candidate conv really receives
        assert seen[row.key] == (row.in_channels, *row.input_hw)
    for h in hooks:
        h.remove()


def test_msr_search_network_shape_table():
    space = load_space(SPACES / "msr.space")
    table = shape_table(space, CIFAR)
    # 8 cells x 14 edges x (4 + 4 + 2 + 2 convolutions)
    assert len(table) == 8 * 14 * 12
    assert len([r for r in table if r.last]) == 8 * 14 * 4
    rows = {r.key: r for r in table}
    first = rows[(2, (0, 2), "sep_conv_3x3", 0)]  # reduction cell 2, strided edge
    assert (first.cell_type, first.edge_stride, first.stride, first.input_hw) == (
        "reduce", 2, (2, 2), (32, 32))
    assert (first.in_channels, first.groups, first.output_hw) == (32, 32, (16, 16))
    assert rows[(2, (0, 2), "sep_conv_3x3", 2)].input_hw == (16, 16)
    inner = rows[(2, (2, 3), "dil_conv_5x5", 1)]  # stride-1 edge between nodes of that cell
    assert (inner.input_hw, inner.cell_input_hw, inner.last, inner.dilation) == (
        (16, 16), (32, 32), True, (1, 1))
    assert rows[(2, (2, 3), "dil_conv_5x5", 0)].dilation == (2, 2)
    assert rows[(7, (4, 5), "sep_conv_5x5", 3)].input_hw == (8, 8)
    assert rows[(7, (4, 5), "sep_conv_5x5", 3)].in_channels == 64


def test_darts_search_network_matches_darts_parameter_count():
    # quark0/darts train_search.py logs "param size = 1.930618MB" for its 8-op search network.
    net = compile_supernet(load_space(SPACES / "darts-full.space"), CIFAR)
    assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618
    assert [tuple(a.shape) for a in net.arch_parameters()] == [(14, 8), (14, 8)]


def test_one_cell_supernet_parameters_by_hand():
    net = compile_supernet(space_of(), DatasetInfo("t", 3, 8, 10))
    stem = 3 * 12 * 9 + 2 * 12  # conv 3 -> 3C, affine BN
    preprocess = 2 * (12 * 4)  # two 1x1 ReLUConvBN 3C -> C, BN without affine
    edges = 2 * (2 * (9 * 4 + 4 * 4))  # sep_conv_3x3 on two edges; max pool + search BN: 0
    classifier = 4 * 10 + 10
    assert count_params(net) == stem + preprocess + edges + classifier


def test_alpha_gradients_flow_only_with_alpha_mixing():
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    for mix in MIXES:
        net = compile_supernet(space_of(cells=3, nodes=2, reduce_at=(1,), mix=mix), TINY)
        arch = net.arch_parameters()
        weights = net.weight_parameters()
        assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
        assert len(arch) + len(weights) == len(list(net.parameters()))
        torch.nn.functional.cross_entropy(net(x), y).backward()
        if mix == "alpha":
            assert len(arch) == 2 and all(a.grad is not None and a.grad.abs().sum() > 0
                                          for a in arch)
        else:
            assert arch == []


def test_score_mixing_weights():
    net = compile_supernet(space_of(cells=3, nodes=2, reduce_at=(1,), mix="score"), TINY).eval()
    assert torch.allclose(net.mix_weights, torch.full((3, 5, 2), 0.5))
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    normal = torch.tensor([[1.0, 0.0]] * 5)
    net.set_mix_weights({"normal": normal, "reduce": torch.rand(1, 5, 2)})
    assert torch.equal(net.mix_weights[0], normal) and torch.equal(net.mix_weights[2], normal)
    assert not torch.allclose(net(x), before)
    net.set_mix_weights(torch.rand(2, 5, 2), None)  # positional, per normal cell
    with pytest.raises(SpaceError, match="expected"):
        net.set_mix_weights({"normal": torch.rand(4, 2)})
    with pytest.raises(SpaceError, match="only"):
        compile_supernet(space_of(), TINY).set_mix_weights({"normal": normal})


def test_one_hot_score_weights_select_one_operator():
    space = space_of(mix="score", operators=["sep_conv_3x3", "max_pool_3x3"])
    net = compile_supernet(space, TINY).eval()
    net.set_mix_weights({"normal": torch.tensor([[0.0, 1.0], [0.0, 1.0]])})
    uniform = compile_supernet(space_of(operators=["max_pool_3x3"]), TINY).eval()
    own = net.state_dict()
    uniform.load_state_dict({k: v for k, v in own.items() if k in uniform.state_dict()},
                            strict=False)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x), uniform(x))


def test_structure_helpers_and_state_dict():
    space = space_of(cells=3, nodes=2, reduce_at=(1,), operators=["sep_conv_3x3", "none"],
                     spectral_norm=SpectralNormSpec())
    net = compile_supernet(space, TINY)
    assert net.cell_types == ("normal", "reduce", "normal")
    assert net.cells_of_type("normal") == [0, 2]
    key, module = net.candidate_convs()[0]
    assert key == (0, (0, 2), "sep_conv_3x3", 0) and isinstance(module, torch.nn.Conv2d)
    assert all(c.op == "sep_conv_3x3" and c.conv == 3 for c in net.last_convs())
    assert len(net.last_convs()) == 3 * 5
    state = net.state_dict()
    assert any(k.startswith("constraint.u") for k in state)
    other = compile_supernet(space, TINY)
    other.load_state_dict(state)
    net.eval(), other.eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(net(x), other(x))


def test_bad_data_info_is_a_space_error():
    with pytest.raises(SpaceError, match="input_size"):
        compile_supernet(space_of(), DatasetInfo("t", 3, 0, 10))
