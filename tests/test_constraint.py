"""The spectral-norm constraint (Eq. 4-5): after rescaling, every conv's largest singular value,
computed independently from the dense matrix of the operator, is the bound."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msrdsl.data.common import DatasetInfo
from msrdsl.ir import CellSpec, Name, NetworkSpec, SpectralNormSpec, SupernetSpec
from msrdsl.lang import parse_space
from msrdsl.nn import SpectralNorm, compile_supernet
from msrdsl.nn.shapes import ConvShape
from msrdsl.ops import Conv
from msrdsl.rank import power_iteration

# (C, kernel, stride, dilation, groups, map): depthwise plain, strided, dilated (phases and
# subsampling), large kernel on a small map, pointwise, and a dense asymmetric conv.
CASES = [
    (3, (3, 3), (1, 1), (1, 1), 3, (6, 6)),
    (3, (3, 3), (2, 2), (1, 1), 3, (7, 7)),
    (2, (5, 5), (1, 1), (2, 2), 2, (7, 6)),
    (2, (3, 3), (2, 2), (2, 2), 2, (8, 8)),
    (2, (5, 5), (1, 1), (1, 1), 2, (4, 4)),
    (4, (1, 1), (1, 1), (1, 1), 1, (5, 5)),
    (3, (1, 7), (1, 2), (1, 1), 1, (3, 8)),
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv_and_shape(c, kernel, stride, dilation, groups, hw):
    conv = Conv(c, c, kernel, stride, dilation, groups)
    out = tuple(-(-n // s) for n, s in zip(hw, stride))
    shape = ConvShape(0, "normal", (0, 2), 1, "op", 0, True, c, c, groups, kernel, stride,
                      dilation, conv.padding, hw, out, hw)
    return conv, shape


def dense_operator(conv, hw, circular=False):
    """The conv as a matrix (outputs x inputs), built by applying it to every basis image."""
    c = conv.in_channels
    basis = torch.eye(c * hw[0] * hw[1], dtype=torch.float64).reshape(-1, c, *hw)
    w = conv.weight.detach().double()
    if circular:
        ph, pw = conv.padding
        x = F.pad(basis, (pw, pw, ph, ph), mode="circular")
        y = F.conv2d(x, w, None, conv.stride, 0, conv.dilation, conv.groups)
    else:
        y = F.conv2d(basis, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y.reshape(basis.shape[0], -1).T


def sigma_1(conv, hw, circular=False):
    return torch.linalg.matrix_norm(dense_operator(conv, hw, circular), ord=2).item()


@pytest.mark.parametrize("case", CASES)
def test_power_iteration_brings_the_zero_padded_operator_to_the_bound(case):
    torch.manual_seed(0)
    conv, shape = conv_and_shape(*case)
    other, other_shape = conv_and_shape(*case)  # a second conv of the same shape: one group
    with torch.no_grad():
        other.weight.mul_(3.0)
    sn = SpectralNorm([(shape, conv), (other_shape, other)], bound=0.7, method="power",
                      iterations=40)
    assert len(sn.groups) == 1
    for _ in range(10):
        sn.rescale()
    for module in (conv, other):
        assert sigma_1(module, case[-1]) == pytest.approx(0.7, rel=2e-3)


@pytest.mark.parametrize("case", CASES)
def test_exact_mode_brings_the_circular_operator_to_the_bound(case):
    c, kernel, stride, dilation, groups, hw = case
    if any(n % s for n, s in zip(hw, stride)):
        hw = tuple(n + n % s for n, s in zip(hw, stride))  # the circular operator needs s | n
    conv, shape = conv_and_shape(c, kernel, stride, dilation, groups, hw)
    SpectralNorm([(shape, conv)], bound=2.0, method="exact").rescale()
    assert sigma_1(conv, hw, circular=kernel != (1, 1)) == pytest.approx(2.0, rel=1e-5)


def test_grouped_power_iteration_matches_the_reference_algorithm():
    # Same start vector, same number of iterations: msrdsl.rank.power_iteration (Algorithm 1,
    # conv / conv_transpose with the real padding) gives the same estimate per conv.
    torch.manual_seed(1)
    case = (2, (5, 5), (1, 1), (2, 2), 2, (7, 6))
    pairs = [conv_and_shape(*case) for _ in range(3)]
    sn = SpectralNorm([(s, c) for c, s in pairs], method="power", iterations=3)
    u0 = sn.u0.clone().reshape(3, 2, 7, 6)
    sigmas = sn.sigmas(sn.groups[0])
    for i, (conv, s) in enumerate(pairs):
        ref, _ = power_iteration(conv.weight.detach(), (2, 7, 6), padding=s.padding,
                                 dilation=s.dilation, groups=2, iterations=3, u=u0[i:i + 1][0:1])
        assert sigmas[i].item() == pytest.approx(ref.item(), rel=1e-4)


SPACE = parse_space("""
space tiny {
  operators [sep_conv_3x3, dil_conv_5x5]
  cell { inputs 2  nodes 2  keep 2 }
  network { cells 3  channels 4  reduce_at [1] }
  supernet { spectral_norm 1.0 { method power  power_iterations 5 } }
}
""")


def test_supernet_rescales_before_training_forwards_only():
    net = compile_supernet(SPACE, DatasetInfo("t", 3, 8, 4))
    convs = [c.module for c in net.candidate_convs()]
    before = [c.weight.detach().clone() for c in convs]
    net.eval()
    net(torch.randn(2, 3, 8, 8))
    assert all(torch.equal(b, c.weight) for b, c in zip(before, convs))
    net.train()
    for _ in range(30):  # warm-started u: the estimate converges over forwards
        net(torch.randn(2, 3, 8, 8))
    assert not any(torch.equal(b, c.weight) for b, c in zip(before, convs))
    for cand in net.candidate_convs()[:12]:
        hw = cand.input_hw
        assert sigma_1(cand.module, hw) == pytest.approx(1.0, rel=1e-2)
    # Stem and preprocessing convolutions are not candidates and are left alone.
    assert sigma_1(net.stem[0], (8, 8)) != pytest.approx(1.0, rel=1e-2)


def test_u_is_saved_and_warm_starts():
    net = compile_supernet(SPACE, DatasetInfo("t", 3, 8, 4))
    net.train()
    net(torch.randn(2, 3, 8, 8))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    u_keys = [k for k in state if k.startswith("constraint.u")]
    assert u_keys and len(u_keys) == len(net.constraint.groups)
    copy = compile_supernet(SPACE, DatasetInfo("t", 3, 8, 4))
    copy.load_state_dict(state)
    for a, b in zip(net.candidate_convs(), copy.candidate_convs()):
        torch.testing.assert_close(a.module.weight, b.module.weight)
    net.constraint.rescale(), copy.constraint.rescale()
    for k in u_keys:
        torch.testing.assert_close(net.state_dict()[k], copy.state_dict()[k])
        assert not torch.equal(net.state_dict()[k], state[k])  # u advanced


def test_switching_off_and_module_apply():
    net = compile_supernet(SPACE, DatasetInfo("t", 3, 8, 4))
    net.constraint.enabled = False
    conv = net.candidate_convs()[0].module
    before = conv.weight.detach().clone()
    net.train()(torch.randn(2, 3, 8, 8))
    assert torch.equal(before, conv.weight)
    net.apply(lambda m: None)  # nn.Module.apply still walks submodules
    net.constraint.enabled = True
    net.constraint.apply()
    assert not torch.equal(before, conv.weight)


def test_no_constraint_without_spectral_norm():
    from attrs import evolve

    space = evolve(SPACE, supernet=SupernetSpec(mix=Name("uniform"), spectral_norm=None),
                   cell=CellSpec(2, 1, 1), network=NetworkSpec(1, 4, 3, ()))
    assert compile_supernet(space, DatasetInfo("t", 3, 8, 4)).constraint is None
    assert SpectralNormSpec().power_iterations == 5
