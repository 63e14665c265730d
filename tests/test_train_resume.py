"""A training run killed at a random moment (SIGKILL), or stopped by Ctrl-C inside an epoch, and
started again with the same command ends exactly where an uninterrupted run ends: the same
records (all but the times) and the same final weights, bit for bit, on the CPU."""

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
# The synthetic set (410 training images at 8x8): 2 epochs of 7 steps.
SETTINGS = ("dataset=synthetic", "dataset.input_size=8", "evaluate.epochs=2", "evaluate.cells=3",
            "evaluate.channels=4", "evaluate.batch=64")


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


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 240
    while not (path.exists() and path.read_text().strip()):
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_killed_or_stopped_runs_resume_to_the_uninterrupted_result(tmp_path):
    _needs_compiler()
    killed, stopped, reference = tmp_path / "killed", tmp_path / "stopped", tmp_path / "ref"
    # The two interrupted runs run side by side (one thread each), then the reference.
    kill_run = subprocess.Popen(_command(killed), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    stop_run = subprocess.Popen(_command(stopped), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    # Ctrl-C during the first epoch (run.json is written just before the first step): the
    # state inside the epoch goes to interrupted.pt and the process exits with 130.
    _wait_for(stopped / "run.json", stop_run, "training started")
    time.sleep(0.2)
    stop_run.send_signal(signal.SIGINT)
    # SIGKILL during the second epoch: just after the first record.
    _wait_for(killed / "epochs.jsonl", kill_run, "the first epoch ended")
    time.sleep(0.1)
    assert kill_run.poll() is None, "the run ended before it could be killed"
    kill_run.send_signal(signal.SIGKILL)
    kill_run.wait()
    _, err = stop_run.communicate(timeout=120)
    assert stop_run.returncode == 130, err[-3000:]
    assert "the same command continues" in err
    state = torch.load(stopped / "interrupted.pt", weights_only=True)
    assert state["epoch"] == 0 and state["partial"]["step"] > 0
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    assert not (killed / "final.pt").exists()

    runs = [subprocess.Popen(_command(out), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for out in (killed, stopped, reference)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]

    assert len(_records(reference)) == 2
    a = torch.load(reference / "final.pt", weights_only=True)["model"]
    for out in (killed, stopped):
        assert _records(out) == _records(reference)
        b = torch.load(out / "final.pt", weights_only=True)["model"]
        assert a.keys() == b.keys()
        assert [k for k in a if not torch.equal(a[k], b[k])] == []
        info = json.loads((out / "run.json").read_text())
        assert info["status"] == "finished" and len(info["resumes"]) == 1
        assert not list(out.glob(".*.tmp")) and not (out / "interrupted.pt").exists()
