"""Tests for msrdsl.rank against explicit dense operator matrices built from torch's conv2d."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import msrdsl.rank as rank
from msrdsl.errors import SpaceError
from msrdsl.rank import (
    ConvSpec,
    OperatorNorms,
    batched_operator_norms,
    conv_singular_values,
    frobenius_norm,
    operator_norms,
    power_iteration,
    spectral_norm,
    stable_rank,
)

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
RTOL = 1e-5


# ---------------------------------------------------------------------------------------------
# Dense references: apply conv2d to every basis vector of the input.


def _basis(c_in: int, h: int, w: int) -> torch.Tensor:
    n = c_in * h * w
    return torch.eye(n, dtype=torch.float64).reshape(n, c_in, h, w)  # (n, C_in, h, w)


def circular_operator(weight, hw, stride=(1, 1), dilation=(1, 1), groups=1) -> torch.Tensor:
    """(outputs, inputs) matrix: circular pad placed as 'same' zero padding, conv, keep 0, s, ..."""
    c_out, cin_g, kh, kw = weight.shape
    (h, w), c_in = hw, cin_g * groups
    x = _basis(c_in, h, w)
    ph, pw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    # Index arithmetic mod h is circular padding of any width, also wider than the map, where
    # F.pad(mode="circular") refuses.
    rows = (torch.arange(h + ph) - ph // 2) % h
    cols = (torch.arange(w + pw) - pw // 2) % w
    padded = x[:, :, rows][:, :, :, cols]
    y = F.conv2d(padded, weight, stride=stride, dilation=dilation, groups=groups)
    return y.reshape(x.shape[0], -1).T


def zero_padded_operator(weight, hw, stride, padding, dilation, groups) -> torch.Tensor:
    """(outputs, inputs) matrix of torch's conv2d with its real zero padding."""
    c_in = weight.shape[1] * groups
    x = _basis(c_in, *hw)
    y = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.reshape(x.shape[0], -1).T


def dense_norms(matrix: torch.Tensor) -> tuple[torch.Tensor, OperatorNorms]:
    sv = torch.linalg.svdvals(matrix)
    frob = sv.square().sum().sqrt()
    return sv, OperatorNorms(sv[0], frob, frob.square() / sv[0].square())


# ---------------------------------------------------------------------------------------------
# Strategies.

STRIDES = [(1, 1), (2, 2), (1, 2), (2, 1)]
KERNELS = [(1, 1), (3, 3), (5, 5), (1, 3), (3, 1), (1, 7), (7, 1), (3, 5), (2, 2)]


@st.composite
def conv_cases(draw, max_inputs: int = 256):
    """(weight float64, input_hw, stride, dilation, groups) with a small dense operator."""
    kind = draw(st.sampled_from(["dense", "depthwise", "grouped"]))
    if kind == "dense":
        groups, cin_g, cout_g = 1, draw(st.integers(1, 4)), draw(st.integers(1, 4))
    elif kind == "depthwise":
        groups, cin_g, cout_g = draw(st.integers(1, 5)), 1, draw(st.sampled_from([1, 1, 2]))
    else:
        groups = draw(st.integers(2, 3))
        cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = draw(st.sampled_from(KERNELS))
    dilation = (draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2])))
    stride = draw(st.sampled_from(STRIDES))
    h = draw(st.sampled_from([n for n in range(4, 11) if n % stride[0] == 0]))
    w = draw(st.sampled_from([n for n in range(4, 11) if n % stride[1] == 0]))
    assume(cin_g * groups * h * w <= max_inputs)
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(cout_g * groups, cin_g, *kernel, generator=gen, dtype=torch.float64)
    return weight, (h, w), stride, dilation, groups


def _close(actual, expected, rtol=RTOL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=0.0)


# ---------------------------------------------------------------------------------------------
# Exact singular values against the dense circular operator.


@SETTINGS
@given(conv_cases())
def test_singular_values_match_dense_circular_operator(case):
    weight, hw, stride, dilation, groups = case
    kw = dict(stride=stride, dilation=dilation, groups=groups)
    ref_sv, ref = dense_norms(circular_operator(weight, hw, **kw))

    sv = conv_singular_values(weight, hw, **kw)
    assert sv.shape == ref_sv.shape
    torch.testing.assert_close(sv, ref_sv, rtol=RTOL, atol=1e-9 * float(ref_sv[0]))

    norms = operator_norms(weight, hw, **kw)
    _close(norms.spectral, ref.spectral)
    _close(norms.frobenius, ref.frobenius)
    _close(norms.stable_rank, ref.stable_rank)
    _close(stable_rank(weight, hw, **kw), ref.stable_rank)
    _close(spectral_norm(weight, hw, **kw), ref.spectral)
    _close(frobenius_norm(weight, hw, **kw), ref.frobenius)

    # 1 <= R <= rank: R is a sum of sigma_i^2 / sigma_max^2 <= 1 over the nonzero sigma_i.
    operator_rank = int((ref_sv > 1e-9 * ref_sv[0]).sum())
    assert 1 - 1e-9 <= float(norms.stable_rank) <= operator_rank + 1e-9


@pytest.mark.parametrize("groups,cin_g,cout_g", [(1, 2, 3), (3, 1, 1)])
def test_kernel_wider_than_the_map_wraps_around(groups, cin_g, cout_g):
    """Taps beyond the map's extent land on the same pixel and add up, as in the dense operator."""
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(cout_g * groups, cin_g, 7, 5, generator=gen, dtype=torch.float64)
    kw = dict(stride=(2, 1), dilation=(2, 1), groups=groups)  # extents 13 and 5 on a 4 x 3 map
    ref_sv, ref = dense_norms(circular_operator(weight, (4, 3), **kw))
    sv = conv_singular_values(weight, (4, 3), **kw)
    torch.testing.assert_close(sv, ref_sv, rtol=RTOL, atol=1e-9 * float(ref_sv[0]))
    # float32 weights are computed in float32: close, not exact.
    fast = operator_norms(weight.float(), (4, 3), **kw)
    assert fast.stable_rank.dtype == torch.float32
    _close(fast.stable_rank.double(), ref.stable_rank, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(conv_cases(max_inputs=200), st.floats(1e-3, 1e3), st.integers(1, 3))
def test_batched_weight_matches_single_and_stable_rank_is_scale_invariant(case, scale, batch):
    weight, hw, stride, dilation, groups = case
    kw = dict(stride=stride, dilation=dilation, groups=groups)
    weights = torch.stack([weight * (i + 1) ** 0.5 * scale for i in range(batch)])
    norms = operator_norms(weights, hw, **kw)
    single = operator_norms(weight, hw, **kw)
    assert norms.stable_rank.shape == (batch,)
    _close(norms.stable_rank, single.stable_rank.expand(batch), rtol=1e-9)
    factors = torch.tensor([(i + 1) ** 0.5 * scale for i in range(batch)], dtype=torch.float64)
    _close(norms.spectral, single.spectral * factors, rtol=1e-9)
    _close(norms.frobenius, single.frobenius * factors, rtol=1e-9)
    sv, ref = conv_singular_values(weights, hw, **kw), conv_singular_values(weight, hw, **kw)
    expected = ref[None] * factors[:, None]
    torch.testing.assert_close(sv, expected, rtol=1e-9, atol=1e-12 * float(expected.max()))


@pytest.mark.parametrize("hw,stride", [((32, 32), (1, 1)), ((16, 24), (2, 2)), ((12, 16), (1, 2))])
@pytest.mark.parametrize("groups,cin_g,cout_g", [(1, 3, 4), (4, 1, 1), (2, 2, 3)])
def test_large_maps_match_fft_of_padded_kernel(hw, stride, groups, cin_g, cout_g):
    """Maps too large for the dense reference: K(f) from torch.fft.fft2 of the padded kernel."""
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(cout_g * groups, cin_g, 3, 5, generator=gen, dtype=torch.float64)
    h, w = hw
    padded = torch.zeros(cout_g * groups, cin_g, h, w, dtype=torch.float64)
    padded[..., :3, :5] = weight
    k = torch.fft.fft2(padded)  # (C_out, C_in/G, h, w); the kernel's offset only changes phases
    k = k.reshape(groups, cout_g, cin_g, stride[0], h // stride[0], stride[1], w // stride[1])
    # Output frequency (g_h, g_w) gathers the aliases g + a h/s: block (cout_g, cin_g s_h s_w).
    blocks = k.permute(0, 4, 6, 1, 2, 3, 5)  # (G, g_h, g_w, o, c, a_h, a_w)
    blocks = blocks.reshape(groups, -1, cout_g, cin_g * stride[0] * stride[1])
    ref = torch.linalg.svdvals(blocks / math.sqrt(stride[0] * stride[1])).flatten()
    ref = ref.sort(descending=True).values
    sv = conv_singular_values(weight, hw, stride=stride, groups=groups)
    torch.testing.assert_close(sv, ref, rtol=1e-9, atol=1e-9 * float(ref[0]))


# ---------------------------------------------------------------------------------------------
# Properties.


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 24), st.integers(1, 24), st.integers(1, 6), st.integers(1, 6),
    st.sampled_from(STRIDES), st.integers(0, 2**31 - 1),
)
def test_pointwise_stable_rank_is_map_size_times_matrix_stable_rank(
    c_out, c_in, mh, mw, stride, seed
):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_out, c_in, 1, 1, generator=gen, dtype=torch.float64)
    hw = (mh * stride[0], mw * stride[1])
    sv_w = torch.linalg.svdvals(weight[:, :, 0, 0])
    r_w = sv_w.square().sum() / sv_w[0].square()
    # Every output frequency sees the same block (W repeated over the aliases / sqrt(s_h s_w)),
    # whose nonzero singular values are those of W.
    _close(stable_rank(weight, hw, stride=stride), mh * mw * r_w, rtol=1e-9)
    if stride == (1, 1):
        _close(conv_singular_values(weight, hw), sv_w.repeat_interleave(mh * mw), rtol=1e-9)


def test_rank_one_operators_have_stable_rank_one():
    a, b = torch.randn(5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    outer = torch.outer(a, b)[:, :, None, None]  # (5, 4, 1, 1): weight matrix of rank one
    # A 1x1 conv with a rank-one matrix on a 1x1 map is that matrix: rank one.
    _close(stable_rank(outer, (1, 1)), torch.tensor(1.0, dtype=torch.float64), rtol=1e-12)
    # On an h x w map it is I_hw (x) ab^T: h*w equal singular values.
    _close(stable_rank(outer, (3, 5)), torch.tensor(15.0, dtype=torch.float64), rtol=1e-12)
    # A single tap is a circular shift (orthogonal, R = h*w), not rank one; a kernel of ones
    # covering the whole map sums the map (x -> (sum x) 1), which is rank one.
    tap = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    tap[0, 0, 0, 2] = 2.0
    _close(stable_rank(tap, (6, 6)), torch.tensor(36.0, dtype=torch.float64), rtol=1e-12)
    ones = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    _close(stable_rank(ones, (3, 4)), torch.tensor(1.0, dtype=torch.float64), rtol=1e-9)
    ref_sv, _ = dense_norms(circular_operator(ones, (3, 4)))
    assert int((ref_sv > 1e-9).sum()) == 1


def test_singular_values_do_not_depend_on_kernel_placement_under_stride():
    """Shifting the kernel composes the operator with an input permutation, even with stride."""
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    shifted = torch.zeros(3, 2, 5, 5, dtype=torch.float64)
    shifted[..., 1:4, 2:5] = weight  # same taps, one row down and one column right of centre
    hw, stride = (8, 8), (2, 2)
    torch.testing.assert_close(
        conv_singular_values(weight, hw, stride=stride),
        conv_singular_values(shifted, hw, stride=stride)[: 3 * 16],
    )


def test_zero_operator_has_undefined_stable_rank():
    norms = operator_norms(torch.zeros(2, 2, 3, 3), (4, 4))
    assert float(norms.spectral) == 0.0 and float(norms.frobenius) == 0.0
    assert math.isnan(float(norms.stable_rank))


def test_half_precision_is_computed_in_float32():
    weight = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    exact = stable_rank(weight, (8, 8))
    for dtype in (torch.float16, torch.bfloat16):
        approx = stable_rank(weight.to(dtype), (8, 8))
        assert approx.dtype == torch.float32
        # Only the rounding of the weights to half precision remains.
        assert abs(float(approx) - float(exact)) / float(exact) < 2e-2


def test_stable_rank_is_differentiable():
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for fn in (stable_rank, spectral_norm, frobenius_norm):
        assert torch.autograd.gradcheck(lambda w: fn(w, (6, 6), stride=2), (weight,))
    depthwise = torch.randn(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: stable_rank(w, (6, 6), groups=4), (depthwise,))


# ---------------------------------------------------------------------------------------------
# batched_operator_norms.


def test_batched_operator_norms_keeps_input_order_with_mixed_shapes():
    gen = torch.Generator().manual_seed(3)
    kinds = [
        ((4, 4, 1, 1), (8, 8), (1, 1), (1, 1), 1),
        ((6, 1, 3, 3), (8, 8), (1, 1), (2, 2), 6),
        ((4, 2, 3, 5), (6, 8), (2, 2), (1, 1), 2),
        ((3, 3, 1, 7), (6, 8), (1, 2), (1, 1), 1),
        ((8, 8, 1, 1), (4, 4), (2, 2), (1, 1), 1),
    ]
    order = [0, 2, 1, 0, 4, 3, 1, 1, 2, 0, 3, 4, 0]
    weights, specs = [], []
    for i in order:
        shape, hw, stride, dilation, groups = kinds[i]
        weights.append(torch.randn(shape, generator=gen, dtype=torch.float64))
        specs.append(ConvSpec(shape, hw, stride, dilation, groups))
    norms = batched_operator_norms(weights, specs)
    for field in range(3):
        assert norms[field].shape == (len(order),)
    for j, (weight, spec) in enumerate(zip(weights, specs, strict=True)):
        single = operator_norms(
            weight, spec.input_hw, stride=spec.stride, dilation=spec.dilation, groups=spec.groups
        )
        for field in range(3):
            _close(norms[field][j], single[field], rtol=1e-12)


def test_batched_operator_norms_promotes_dtypes_and_handles_empty():
    weights = [torch.randn(2, 2, 3, 3), torch.randn(3, 3, 1, 1, dtype=torch.float64)]
    specs = [ConvSpec.of(weights[0], 4), ConvSpec.of(weights[1], (4, 4))]
    norms = batched_operator_norms(weights, specs)
    assert norms.stable_rank.dtype == torch.float64
    _close(norms.stable_rank[1], stable_rank(weights[1], (4, 4)), rtol=1e-12)
    assert batched_operator_norms([], []).stable_rank.shape == (0,)


def test_batched_operator_norms_rejects_mismatches():
    weight = torch.randn(2, 2, 3, 3)
    with pytest.raises(SpaceError, match="spec says"):
        batched_operator_norms([weight], [ConvSpec((2, 2, 1, 1), (4, 4))])
    with pytest.raises(SpaceError, match="specs"):
        batched_operator_norms([weight], [])


def test_large_batches_are_scored_in_chunks_with_the_same_result(monkeypatch):
    weights = torch.randn(5, 3, 2, 3, 3, dtype=torch.float64)
    whole = operator_norms(weights, (6, 6), stride=2)
    per_conv = rank._block_entries(ConvSpec.of(weights, (6, 6), stride=2))
    monkeypatch.setattr(rank, "_CHUNK_ENTRIES", 2 * per_conv)  # chunks of 2, 2 and 1
    chunked = operator_norms(weights, (6, 6), stride=2)
    for field in range(3):
        _close(chunked[field], whole[field], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Power iteration (MSR-DARTS Algorithm 1) against the zero-padded operator.

POWER_CASES = [
    # (C_out, C_in/groups, kh, kw, groups, hw, stride, padding, dilation)
    (4, 3, 3, 3, 1, (6, 6), (1, 1), (1, 1), (1, 1)),
    (3, 2, 3, 3, 1, (7, 6), (2, 2), (1, 1), (1, 1)),
    (4, 1, 3, 3, 4, (6, 6), (1, 1), (2, 2), (2, 2)),
    (4, 2, 1, 5, 2, (5, 8), (1, 2), (0, 2), (1, 1)),
    (2, 3, 5, 5, 1, (6, 6), (1, 1), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("case", POWER_CASES)
def test_power_iteration_converges_to_zero_padded_norm(case):
    c_out, cin_g, kh, kw, groups, hw, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(11)
    weight = torch.randn(c_out, cin_g, kh, kw, generator=gen, dtype=torch.float64)
    dense = zero_padded_operator(weight, hw, stride, padding, dilation, groups)
    exact = torch.linalg.matrix_norm(dense, 2)
    sigma, u = power_iteration(
        weight, (cin_g * groups, *hw), stride=stride, padding=padding, dilation=dilation,
        groups=groups, iterations=300, generator=gen,
    )
    assert sigma.shape == () and u.shape == (1, cin_g * groups, *hw)
    assert abs(float(sigma) - float(exact)) <= 1e-3 * float(exact)
    assert float(sigma) <= float(exact) * (1 + 1e-12)  # a Rayleigh quotient never overshoots
    _close(torch.linalg.vector_norm(u), torch.tensor(1.0, dtype=torch.float64), rtol=1e-12)


def test_power_iteration_approaches_circular_norm_on_large_maps():
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(8, 8, 3, 3, dtype=torch.float64, generator=gen)
    sigma, _ = power_iteration(weight, (8, 32, 32), padding=1, iterations=100, generator=gen)
    circular = spectral_norm(weight, (32, 32))
    assert abs(float(sigma) - float(circular)) <= 0.05 * float(circular)


def test_power_iteration_warm_start_batches_and_gradient():
    gen = torch.Generator().manual_seed(2)
    # (B, C_out, C_in, kh, kw): three independent convolutions
    weight = torch.randn(3, 4, 2, 3, 3, dtype=torch.float64, generator=gen)
    kw = dict(stride=2, padding=1)
    u0 = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=gen)
    ten, u10 = power_iteration(weight, (2, 8, 8), iterations=10, u=u0, **kw)
    five, u5 = power_iteration(weight, (2, 8, 8), iterations=5, u=u0, **kw)
    again, u55 = power_iteration(weight, (2, 8, 8), iterations=5, u=u5, **kw)
    assert ten.shape == (3,) and u10.shape == (3, 2, 8, 8)
    _close(again, ten, rtol=1e-10)
    _close(u55, u10, rtol=1e-8)
    assert torch.all(five <= ten * (1 + 1e-12))
    for b in range(3):  # the batch is B independent problems
        single, _ = power_iteration(weight[b], (2, 8, 8), iterations=10, u=u0[b : b + 1], **kw)
        _close(single, ten[b], rtol=1e-10)
    # Same generator state, same estimate.
    first, _ = power_iteration(weight[0], (2, 8, 8), generator=torch.Generator().manual_seed(9))
    second, _ = power_iteration(weight[0], (2, 8, 8), generator=torch.Generator().manual_seed(9))
    assert float(first) == float(second)
    # sigma carries the gradient of ||conv(u)|| with u fixed; the iterations do not.
    w = weight[0].clone().requires_grad_(True)
    sigma, u = power_iteration(w, (2, 8, 8), iterations=3, **kw)
    sigma.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and not u.requires_grad


# ---------------------------------------------------------------------------------------------
# Errors.


def test_stride_that_does_not_divide_the_map_is_rejected():
    with pytest.raises(SpaceError, match="stride 2 does not divide the feature-map height 7"):
        stable_rank(torch.randn(2, 2, 3, 3), (7, 8), stride=2)
    with pytest.raises(SpaceError, match="width 5"):
        ConvSpec((2, 2, 3, 3), (4, 5), stride=(1, 2))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: stable_rank(torch.randn(2, 2, 3), (4, 4)), "shape"),
        (lambda: stable_rank(torch.randn(3, 1, 3, 3), (4, 4), groups=2), "groups=2"),
        (lambda: stable_rank(torch.ones(2, 2, 3, 3, dtype=torch.int64), (4, 4)), "real floating"),
        (lambda: stable_rank(torch.randn(2, 2, 3, 3, dtype=torch.cfloat), (4, 4)), "real floating"),
        (lambda: stable_rank(torch.randn(2, 2, 3, 3), (4, 4), dilation=0), "dilation"),
        (lambda: stable_rank(torch.randn(2, 2, 3, 3), (4, 4, 4)), "input_hw"),
        (lambda: ConvSpec((2, 2, 3), (4, 4)), "C_out"),
        (lambda: power_iteration(torch.randn(2, 2, 3, 3), (3, 4, 4)), "channels"),
        (lambda: power_iteration(torch.randn(2, 2, 5, 5), (2, 3, 3)), "no output"),
        (lambda: power_iteration(torch.ones(2, 2, 3, 3), (2, 4, 4), u=torch.ones(4)), "u must"),
        (lambda: power_iteration(torch.randn(2, 2, 3, 3), (2, 4, 4), iterations=-1), "iterations"),
    ],
)
def test_unsupported_inputs_raise_space_error(call, match):
    with pytest.raises(SpaceError, match=match):
        call()

