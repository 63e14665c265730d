"""Killing a search at any moment and resuming it gives exactly the uninterrupted run.

Each test runs `python -m msrdsl search` in a subprocess, kills it (SIGKILL, or SIGINT for the
Ctrl-C path), resumes it, and compares epochs.jsonl (all but 'seconds') and final.genotype with an
uninterrupted run of the same space and seed: they must be identical, bit for bit.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from test_search_support import (QUICKSTART, genotype_text, msrdsl_command, records, run_subprocess,
                            sets, subprocess_env)

# Small batches make many short steps, so a signal lands mid-epoch; three epochs with a kill
# in the middle one exercise the checkpoint of a finished epoch and the one of a stopped step.
SETTINGS = sets("search.epochs=3", "search.batch=32")


def search_argv(out: Path, *extra: str) -> list[str]:
    return ["search", QUICKSTART, "--out", str(out), "--json", *SETTINGS, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run_subprocess(*search_argv(out))
    assert done.returncode == 0, done.stderr
    return out


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(msrdsl_command(*search_argv(out)), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the search ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.05)


def checkpoint_position(out: Path) -> tuple[int, int]:
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    return state["epoch"], state["step"]


def assert_same_run(out: Path, reference: Path) -> None:
    assert records(out) == records(reference)
    assert genotype_text(out) == genotype_text(reference)


def kill_after_first_checkpoint(out: Path, delay: float) -> None:
    proc = start(out)
    wait_for(out / "checkpoint.pt", proc)  # the end of epoch 0 has been written
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def remaining_seconds(reference: Path) -> float:
    """How long the reference run took after its first checkpoint (epochs 1 and 2)."""
    return sum(r["seconds"] for r in records(reference, drop=())[1:])


def test_sigkill_at_a_random_moment_then_resume(tmp_path, reference):
    out = tmp_path / "run"
    # Anywhere in the next two epochs: mid-step, mid-validation, or while writing files.
    delay = random.Random().uniform(0.0, 0.8 * remaining_seconds(reference))
    for _ in range(4):
        kill_after_first_checkpoint(out, delay)
        if not (out / "final.json").exists():
            break
        shutil.rmtree(out)  # this run was faster than the reference and finished first
        delay /= 2
    else:
        pytest.fail("every run finished before it was killed")
    done = run_subprocess(*search_argv(out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert_same_run(out, reference)


def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path, reference):
    out = tmp_path / "run"
    kill_after_first_checkpoint(out, 0.0)  # at once: early in epoch 1's steps
    assert checkpoint_position(out) == (1, 0)
    # As if the kill had also come between the checkpoint and the records, before pruning:
    # a resumed run rewrites epochs.jsonl from the checkpoint and prunes the weights again.
    (out / "epochs.jsonl").write_text("")
    (out / "weights" / "epoch-007.pt").write_bytes(b"stale")
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half written")
    done = run_subprocess(*search_argv(out))  # no --resume: the same command again
    assert done.returncode == 0, done.stderr
    assert "resuming the search" in done.stderr and "from epoch 1" in done.stderr
    assert_same_run(out, reference)
    assert not (out / "weights" / "epoch-007.pt").exists()
    assert not (out / ".checkpoint.pt.x1y2.tmp").exists()


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(tmp_path, reference):
    out = tmp_path / "run"
    for attempt in range(3):
        proc = start(out)
        wait_for(out / "checkpoint.pt", proc)
        time.sleep(0.2 + attempt * 0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        epoch, step = checkpoint_position(out)
        if proc.returncode == 130 and step > 0:
            break
        shutil.rmtree(out)  # the signal landed at an epoch boundary: try again from scratch
    else:
        pytest.fail("SIGINT never landed mid-epoch")
    assert f"step {step}" in err and "resume with:" in err
    assert f"msrdsl search {out} --resume" in err
    # The records before the stop are on disk; the partial epoch is only in the checkpoint.
    assert len(records(out)) == epoch
    done = run_subprocess("search", str(out), "--resume", "--json")
    assert done.returncode == 0, done.stderr
    assert f"from epoch {epoch}, step {step}" in done.stderr
    assert_same_run(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("moment", range(5))
def test_sigkill_at_many_moments(tmp_path, reference, moment):
    out = tmp_path / "run"
    kill_after_first_checkpoint(out, moment / 5 * remaining_seconds(reference))
    done = run_subprocess(*search_argv(out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert_same_run(out, reference)
