"""The search's pure parts: the DARTS hypergradient, the weights a run keeps, atomic writes,
the learning-rate schedule, the one-line genotype."""

from __future__ import annotations

import errno
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from msrdsl.derive import epoch_choice
from msrdsl.errors import RunError
from msrdsl.ir import OptimizerSpec
from msrdsl.search.bilevel import Architect
from msrdsl.search.distributed import Dist
from msrdsl.search.loop import learning_rate
from msrdsl.search.progress import compact_genotype, short_op
from msrdsl.search.rundir import RunDir, atomic_write, weights_to_keep


# ---------------------------------------------------------------------------------------------
# DARTS' second-order step against autograd through the unrolled step


class Mixed(torch.nn.Module):
    """Two linear 'operators' mixed by softmax(alpha), then a nonlinearity and a head."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ops = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(6, 5, generator=g, dtype=torch.float64))
             for _ in range(2)])
        self.head = torch.nn.Parameter(torch.randn(3, 6, generator=g, dtype=torch.float64))
        self.alpha = torch.nn.Parameter(0.3 * torch.randn(2, generator=g, dtype=torch.float64))

    def weights(self):
        return [*self.ops, self.head]

    def loss(self, x, y, weights=None):
        ops0, ops1, head = weights if weights is not None else self.weights()
        mix = torch.softmax(self.alpha, 0)
        h = torch.tanh(mix[0] * x @ ops0.T + mix[1] * x @ ops1.T)
        return torch.nn.functional.cross_entropy(h @ head.T, y)


def batches():
    g = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(16, 5, generator=g, dtype=torch.float64),  # noqa: E731
                    torch.randint(0, 3, (16,), generator=g))
    return make(), make()


def test_second_order_step_is_the_unrolled_hypergradient():
    net = Mixed()
    train, valid = batches()
    xi, momentum, decay = 0.1, 0.9, 3e-4
    weight_opt = torch.optim.SGD(net.weights(), lr=xi, momentum=momentum, weight_decay=decay)
    # One weight step first, so the unrolled step has a momentum buffer to copy.
    net.loss(*train).backward()
    weight_opt.step()
    weight_opt.zero_grad()
    net.alpha.grad = None

    # Exact: d/d alpha of L_val(w - xi (momentum buf + grad_w L_train + decay w), alpha).
    w = net.weights()
    g = torch.autograd.grad(net.loss(*train), w, create_graph=True)
    bufs = [weight_opt.state[p]["momentum_buffer"] for p in w]
    unrolled = [p - xi * (momentum * b + gp + decay * p) for p, b, gp in zip(w, bufs, g)]
    (exact,) = torch.autograd.grad(net.loss(*valid, unrolled), [net.alpha])

    before = [p.detach().clone() for p in w]
    arch_opt = torch.optim.SGD([net.alpha], lr=0.0)  # lr 0: read the gradient, keep alpha
    Architect(w, [net.alpha], arch_opt, "second", Dist()).step(net.loss, train, valid, xi,
                                                               weight_opt)
    # The finite difference of DARTS (eps = 0.01 / ||v||) is second-order accurate.
    torch.testing.assert_close(net.alpha.grad, exact, rtol=1e-4, atol=1e-7)
    for p, b in zip(w, before):
        assert torch.equal(p, b)  # the weights come back bit for bit


def test_first_order_step_is_the_validation_gradient():
    net = Mixed()
    train, valid = batches()
    (expected,) = torch.autograd.grad(net.loss(*valid), [net.alpha])
    arch_opt = torch.optim.SGD([net.alpha], lr=0.0)
    weight_opt = torch.optim.SGD(net.weights(), lr=0.1)
    Architect(net.weights(), [net.alpha], arch_opt, "first", Dist()).step(
        net.loss, train, valid, 0.1, weight_opt)
    torch.testing.assert_close(net.alpha.grad, expected)


# ---------------------------------------------------------------------------------------------
# Which epochs' weights a run keeps


losses = st.lists(st.sampled_from([0.5, 0.6, 0.7, 0.8, 1.0]) | st.floats(0.1, 2.0),
                  min_size=1, max_size=14)


@given(losses, st.sampled_from(["last", "min_valid_loss", "before_valid_loss_rises"]),
       st.integers(1, 4))
def test_the_epoch_finally_chosen_was_never_deleted(values, rule, patience):
    final = epoch_choice(values, rule, patience)
    for n in range(1, len(values) + 1):
        kept = weights_to_keep(values[:n], rule, patience)
        assert n - 1 in kept  # the last epoch is always there
        assert kept <= set(range(n))
        if final < n:  # already trained: it must still be on disk
            assert final in kept


def test_a_confirmed_rise_keeps_two_epochs():
    assert weights_to_keep([1.0, 0.5, 0.6, 0.7, 0.8, 0.9], "before_valid_loss_rises", 3) == {1, 5}
    assert weights_to_keep([1.0, 0.5, 0.6, 0.7], "before_valid_loss_rises", 3) == {1, 2, 3}
    assert weights_to_keep([1.0, 0.5, 0.6], "last", 3) == {2}


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_a_failed_write_keeps_the_old_file_and_says_why(tmp_path):
    target = tmp_path / "epochs.jsonl"
    target.write_text("old\n")

    def disk_full(handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunError, match="No space left on device"):
        atomic_write(target, disk_full)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["epochs.jsonl"]  # no temporary file left


def test_checkpoint_round_trip(tmp_path):
    run = RunDir(tmp_path)
    run.create()
    run.save_checkpoint({"epoch": 3, "t": torch.arange(4)})
    state = run.load_checkpoint()
    assert state["epoch"] == 3 and torch.equal(state["t"], torch.arange(4))
    run.checkpoint_file.write_bytes(b"truncated")
    with pytest.raises(RunError, match="cannot read the checkpoint"):
        run.load_checkpoint()


# ---------------------------------------------------------------------------------------------
# Schedule and display


def test_cosine_schedule_is_dartss():
    spec = OptimizerSpec(lr=0.025, lr_min=0.001, schedule="cosine")
    scheduler_lrs = []
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.025)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.001)
    for _ in range(10):
        scheduler_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [learning_rate(spec, e, 10) for e in range(10)]
    assert ours == pytest.approx(scheduler_lrs, rel=1e-12)
    assert learning_rate(OptimizerSpec(lr=0.1, schedule="constant"), 7, 10) == 0.1
    assert math.isclose(ours[0], 0.025)


def test_compact_genotype():
    from msrdsl.genotype_io import load_genotype

    assert short_op("sep_conv_3x3") == "sep3" and short_op("dil_conv_5x5") == "dil5"
    assert short_op("max_pool_3x3") == "max3" and short_op("skip_connect") == "skip"
    line = compact_genotype(load_genotype("darts_v2"))
    assert line.startswith("normal: sep3(0) sep3(1) | sep3(0) sep3(1) |")
    assert "; reduce: max3(0) max3(1) |" in line
