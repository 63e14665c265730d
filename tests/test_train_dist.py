"""Training on several processes: DDP over gloo on the CPU, as torchrun runs it.

The comparison with one process (synthetic set, first epoch of 4 steps): two ranks with
per-rank batch 64 and synchronised batch norm see, at every step, exactly the 128 images one
process sees with batch 128 (the global order is one permutation, rank r takes every other image
of it), normalise them with the same batch statistics, and DDP averages the two half-batch
gradients into the full-batch one. Only the order of floating-point sums differs (all-reduce,
batch-norm sums split in two).

In float32 that difference is not small on this tiny network: rounding differences are strongly
amplified on the way back to the early layers (batch norm over 4 channels of 2x2 to 8x8 maps),
so the first step's gradients there already differ by ~1e-3 (relative) and the losses drift
apart by ~5e-4 within a few steps. In float64 the same two runs agree to ~1e-14 per step, so both
train in float64 here and the losses of the first epoch must match to a relative 1e-9, which
only a correct gradient all-reduce, sharding and batch-norm synchronisation can meet.
Augmentation is off (it draws from per-rank RNG streams) and so is drop-path. The 2-process run
then finishes its second epoch on one process (resume with another world size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "spaces" / "quickstart.space")
# The synthetic set (410 training images at 8x8): an epoch is 4 steps of 128, the last of 26.
SETTINGS = ("dataset=synthetic", "dataset.input_size=8", "evaluate.epochs=2", "evaluate.cells=3",
            "evaluate.channels=4", "evaluate.batch=128", "evaluate.drop_path=0")
STEPS_COMPARED = 4
LOSS_RTOL = 1e-9


def _needs_compiler():
    import msrdsl.nn

    if not hasattr(msrdsl.nn, "build_eval_network"):
        pytest.skip("msrdsl.nn.build_eval_network is not there yet")


def _step_recorder():
    from msrdsl.train.progress import Reporter

    class Steps(Reporter):
        def __init__(self):
            self.losses: list[float] = []

        def step(self, loss, acc):
            self.losses.append(loss)

    return Steps()


def _in_float64(monkeypatch=None) -> None:
    """Make msrdsl.train build float64 networks (inputs follow the network's dtype)."""
    from msrdsl.train import loop

    build = loop.build_network

    def build_double(*args, **kwargs):
        return build(*args, **kwargs).double()

    if monkeypatch is None:
        loop.build_network = build_double
    else:
        monkeypatch.setattr(loop, "build_network", build_double)


def _rank_main(rank: int, world: int, init_file: str, out: str) -> None:
    """One process of the 2-process run (spawned): train the first of two epochs, then save
    its weights and step losses."""
    import torch.distributed as dist

    _in_float64()

    from msrdsl.train import run_training
    from msrdsl.train.distributed import Dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        steps = _step_recorder()
        done = run_training("msr_darts", QUICKSTART, overrides=SETTINGS, out=out, device="cpu",
                            amp="off", sync_bn=True, augment=False, dist=Dist.from_group(),
                            reporter=steps, stop_after=1)
        torch.save({"weights": {k: v.detach().clone() for k, v in
                                done.trainer.module.state_dict().items()},
                    "losses": steps.losses}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_agree_with_each_other_and_with_one(tmp_path, monkeypatch):
    _needs_compiler()
    import torch.multiprocessing as mp

    from msrdsl.train import run_training

    out2 = tmp_path / "two"
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(out2)), nprocs=2, join=True)
    ranks = [torch.load(out2 / f"rank{r}.pt", weights_only=True) for r in range(2)]
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys()
    different = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert different == [], f"ranks hold different {different[:5]}"
    info = json.loads((out2 / "run.json").read_text())
    assert info["world_size"] == 2 and info["batch_per_process"] == 64

    _in_float64(monkeypatch)
    steps = _step_recorder()
    run_training("msr_darts", QUICKSTART, overrides=SETTINGS, out=tmp_path / "one",
                 device="cpu", amp="off", augment=False, reporter=steps, stop_after=1)
    one, two = steps.losses[:STEPS_COMPARED], ranks[0]["losses"][:STEPS_COMPARED]
    assert len(one) == len(two) == STEPS_COMPARED
    assert two == pytest.approx(one, rel=LOSS_RTOL)

    # The 2-process run continues on one process: same global batch, same schedule.
    done = run_training("msr_darts", QUICKSTART, overrides=SETTINGS, out=out2, device="cpu",
                        amp="off", augment=False)
    assert done.result["finished"] and done.result["world_size"] == 1
    info = json.loads((out2 / "run.json").read_text())
    assert info["resumes"] == [{"at": info["resumes"][0]["at"], "after_epoch": 1,
                                "world_size": 1}]
    records = [json.loads(line) for line in (out2 / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


def test_torchrun_two_processes(tmp_path):
    _needs_compiler()
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "msrdsl", "train", "msr_darts", "--space", QUICKSTART,
         *[a for s in (*SETTINGS, "evaluate.epochs=1") for a in ("--set", s)],
         "--out", str(out), "-q", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("final test accuracy") == 1  # rank 0 alone prints
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["world_size"] == 2
    state = torch.load(out / "final.pt", weights_only=True)
    assert state["meta"]["which"] == "final"


@pytest.mark.slow
def test_a_user_error_under_torchrun_is_printed_once_with_exit_2(tmp_path):
    _needs_compiler()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "msrdsl", "train", "msr_darts", "--space", QUICKSTART,
         *[a for s in (*SETTINGS, "evaluate.batch=63") for a in ("--set", s)],
         "--out", str(tmp_path / "run"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("does not split evenly over 2 processes") == 1
