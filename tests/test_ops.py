"""Operators compiled from primitives: shapes, parameter counts by hand, the CPU formulation of
dilated convolutions, and the DARTS building blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from msrdsl.errors import SpaceError
from msrdsl.ir import Call, Name, OpDef, OpVariant
from msrdsl.lang.interpret import prelude_ops
from msrdsl.oplib import resolve_op
from msrdsl.ops import Conv, FactorizedReduce, ReLUConvBN, Zero, build_operator, phase_conv, phase_plan

PRELUDE = prelude_ops()
PRELUDE_OPS = sorted(name for name, op in PRELUDE.items() if not op.params)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: a second OpenMP thread only adds contention on a shared two-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", PRELUDE_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("search", [True, False])
def test_every_prelude_operator_keeps_channels_and_strides(name, stride, search):
    op = build_operator(name, resolve_op(PRELUDE, name, stride), 4, affine=not search, search=search)
    for hw in (8, 7):
        y = op(torch.randn(2, 4, hw, hw))
        side = -(-hw // stride)
        assert y.shape == (2, 4, side, side)


def test_darts_operator_parameters_by_hand():
    c = 16
    count = {name: params(build_operator(name, resolve_op(PRELUDE, name, 1), c, affine=True,
                                         search=False)) for name in PRELUDE_OPS}
    bn = 2 * c  # affine batch norm: weight and bias
    assert count["sep_conv_3x3"] == 2 * (9 * c + c * c + bn)
    assert count["sep_conv_5x5"] == 2 * (25 * c + c * c + bn)
    assert count["sep_conv_7x7"] == 2 * (49 * c + c * c + bn)
    assert count["dil_conv_3x3"] == 9 * c + c * c + bn
    assert count["dil_conv_5x5"] == 25 * c + c * c + bn
    assert count["conv_7x1_1x7"] == 2 * 7 * c * c + bn
    for name in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"):
        assert count[name] == 0
    reduce_skip = build_operator("skip_connect", resolve_op(PRELUDE, "skip_connect", 2), c,
                                 affine=True, search=False)
    assert params(reduce_skip) == 2 * (c * c // 2) + bn


def test_supernet_variant_has_search_bn_and_no_affine():
    pool = build_operator("max_pool_3x3", resolve_op(PRELUDE, "max_pool_3x3", 1), 4, affine=False,
                          search=True)
    assert [type(m).__name__ for m in pool] == ["MaxPool2d", "BatchNorm2d"]
    assert not pool[1].affine
    evaluation = build_operator("max_pool_3x3", resolve_op(PRELUDE, "max_pool_3x3", 1), 4,
                                affine=True, search=False)
    assert [type(m).__name__ for m in evaluation] == ["MaxPool2d"]
    sep = build_operator("sep_conv_3x3", resolve_op(PRELUDE, "sep_conv_3x3", 2), 4, affine=False,
                         search=True)
    assert all(not m.affine for m in sep if isinstance(m, torch.nn.BatchNorm2d))
    assert [(c.kernel_size, c.stride, c.groups) for c in sep.convs] == [
        ((3, 3), (2, 2), 4), ((1, 1), (1, 1), 1), ((3, 3), (1, 1), 4), ((1, 1), (1, 1), 1)]


def test_operator_flags():
    skip = build_operator("skip_connect", resolve_op(PRELUDE, "skip_connect", 1), 4, affine=True,
                          search=False)
    assert skip.is_identity and not skip.convs
    reduce = build_operator("skip_connect", resolve_op(PRELUDE, "skip_connect", 2), 4,
                            affine=True, search=False)
    assert not reduce.is_identity
    sep = build_operator("sep_conv_3x3", resolve_op(PRELUDE, "sep_conv_3x3", 1), 4, affine=True,
                         search=False)
    assert sep.starts_with_relu
    x = torch.randn(2, 4, 6, 6)
    sep.eval()
    torch.testing.assert_close(sep.after_relu(F.relu(x)), sep(x))


def test_user_operator_from_hand_built_ir():
    # op wide(k) = relu | conv(k, stride=stride, groups=2) | bn, used as wide(3)
    wide = OpDef("wide", ("k",), (OpVariant((
        Call("relu"), Call("conv", (Name("k"),), (("stride", Name("stride")), ("groups", 2))),
        Call("bn"))),))
    ops = {"wide": wide, "wide_3": OpDef("wide_3", (), (OpVariant((Call("wide", (3,)),)),))}
    op = build_operator("wide_3", resolve_op(ops, "wide_3", 2), 6, affine=True, search=False)
    assert params(op) == 6 * 3 * 9 + 12
    assert op(torch.randn(1, 6, 9, 9)).shape == (1, 6, 5, 5)
    with pytest.raises(SpaceError, match="groups=2"):
        build_operator("wide_3", resolve_op(ops, "wide_3", 1), 5, affine=True, search=False)


def test_zero_and_factorized_reduce():
    x = torch.randn(2, 4, 7, 7)
    assert torch.count_nonzero(Zero((2, 2))(x)) == 0 and Zero((2, 2))(x).shape == (2, 4, 4, 4)
    fr = FactorizedReduce(4, 6)
    assert fr(torch.randn(2, 4, 8, 8)).shape == (2, 6, 4, 4)
    assert fr(x).shape == (2, 6, 4, 4)  # odd maps (DARTS would fail)
    assert FactorizedReduce(3, 5)(torch.randn(2, 3, 2, 2)).shape == (2, 5, 1, 1)
    assert params(fr) == 2 * 4 * 3 + 12
    assert params(ReLUConvBN(12, 5)) == 60 + 10


def test_factorized_reduce_is_darts():
    fr = FactorizedReduce(4, 6).eval()
    x = torch.randn(2, 4, 8, 8)
    r = F.relu(x)
    ref = torch.cat([F.conv2d(r, fr.conv_1.weight, stride=2),
                     F.conv2d(r[:, :, 1:, 1:], fr.conv_2.weight, stride=2)], dim=1)
    torch.testing.assert_close(fr(x), fr.bn(ref))


@settings(max_examples=25, deadline=None)
@given(k=st.sampled_from([3, 5]), d=st.sampled_from([1, 2, 3]), s=st.sampled_from([1, 2]),
       h=st.integers(3, 11), w=st.integers(3, 11), c=st.sampled_from([1, 3, 8]),
       channels_last=st.booleans(), depthwise=st.booleans())
def test_phase_conv_is_the_dilated_conv(k, d, s, h, w, c, channels_last, depthwise):
    groups = c if depthwise else 1
    conv = Conv(c, c, (k, k), (s, s), (d, d), groups)
    x = torch.randn(2, c, h, w, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    weight = conv.weight.detach().double().requires_grad_()
    ref = F.conv2d(x, weight, None, (s, s), conv.padding, (d, d), groups)
    plan = phase_plan((k, k), (s, s), (d, d))
    if plan is None:
        assert d == 1 or s not in (1, d)
        return
    out = phase_conv(x, weight, plan, groups)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, (x, weight), g),
                               torch.autograd.grad(ref, (x, weight), g))


def test_conv_module_uses_phases_only_when_dilated():
    assert Conv(4, 4, (3, 3)).phases is None
    assert Conv(4, 4, (3, 3), dilation=(2, 2), groups=4).phases == ((1, 1), (2, 2), (1, 1))
    assert Conv(4, 4, (5, 5), (2, 2), (2, 2), 4).phases == ((2, 2), (1, 1), (2, 2))
    assert Conv(4, 4, (3, 3), (2, 2), (3, 3), 4).phases is None


def test_strided_pointwise_conv_on_few_channels_last_channels():
    # Regression: oneDNN's weight gradient of a strided 1x1 conv on channels-last inputs with
    # under 8 channels corrupted the heap; Conv subsamples first on CPU.
    fr = FactorizedReduce(3, 2)
    for _ in range(10):
        x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
        fr(x).sum().backward()
    xd = x.detach().double().requires_grad_()
    ref = torch.cat([F.conv2d(F.relu(xd), fr.conv_1.weight.double(), stride=2),
                     F.conv2d(F.relu(xd)[:, :, 1:, 1:], fr.conv_2.weight.double(), stride=2)], 1)
    out = torch.cat([fr.conv_1(F.relu(x)), fr.conv_2(F.relu(x)[:, :, 1:, 1:])], 1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,hw", [((5, 5), (4, 3)), ((5, 5), (9, 8)), ((7, 5), (6, 9)),
                                       ((3, 5), (8, 8)), ((5, 3), (7, 7)), ((1, 5), (5, 5))])
def test_blockwise_weight_gradient_of_wide_depthwise_kernels(kernel, hw):
    from msrdsl.ops.conv import same_conv

    padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    x = torch.randn(3, 4, *hw, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 1, *kernel, dtype=torch.float64, requires_grad=True)
    out = same_conv(x, w, padding, 4)
    ref = F.conv2d(x, w, padding=padding, groups=4)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, (x, w), g),
                               torch.autograd.grad(ref, (x, w), g))


def test_blockwise_depthwise_under_bf16_autocast():
    from msrdsl.ops.conv import same_conv

    x = torch.randn(2, 4, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = same_conv(x, w, (2, 2), 4)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    ref = torch.autograd.grad(F.conv2d(x, w, padding=2, groups=4).sum(), w)[0]
    torch.testing.assert_close(w.grad, ref, rtol=0.05, atol=0.1)
