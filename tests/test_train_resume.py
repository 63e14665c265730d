"""A training run killed at a random moment (SIGKILL) and started again with the same command
ends exactly where an uninterrupted run ends: the same records (all but the times) and the same
final weights, bit for bit, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "spaces" / "quickstart.space")
# The synthetic set (410 training images at 8x8): 3 epochs of 13 steps.
SETTINGS = ("dataset=synthetic", "dataset.input_size=8", "evaluate.epochs=3", "evaluate.cells=3",
            "evaluate.channels=4", "evaluate.batch=32")


def _needs_compiler():
    import msrdsl.nn

    if not hasattr(msrdsl.nn, "build_eval_network"):
        pytest.skip("msrdsl.nn.build_eval_network is not there yet")


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "msrdsl", "train", "msr_darts", "--space", QUICKSTART,
            *[a for s in SETTINGS for a in ("--set", s)], "--out", str(out), "-q",
            "--device", "cpu"]


def _records(out: Path) -> list[dict]:
    lines = (out / "epochs.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def test_killed_and_resumed_run_ends_identical_to_uninterrupted(tmp_path):
    _needs_compiler()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ref_out, killed_out = tmp_path / "reference", tmp_path / "killed"
    reference = subprocess.Popen(_command(ref_out), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_command(killed_out), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    # Kill it during its second epoch: after the first record, a little into the next epoch.
    deadline = time.monotonic() + 240
    epochs = killed_out / "epochs.jsonl"
    while not (epochs.exists() and epochs.read_text().strip()):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    time.sleep(0.1)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert json.loads((killed_out / "run.json").read_text())["status"] == "running"
    assert not (killed_out / "final.pt").exists()

    resumed = subprocess.run(_command(killed_out), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err[-3000:]

    assert _records(killed_out) == _records(ref_out)
    assert len(_records(ref_out)) == 3
    a = torch.load(ref_out / "final.pt", weights_only=True)["model"]
    b = torch.load(killed_out / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    info = json.loads((killed_out / "run.json").read_text())
    assert info["status"] == "finished" and len(info["resumes"]) == 1
    assert not list(killed_out.glob(".*.tmp"))
