"""A 2-process search on CPU (torchrun, gloo): every rank holds the same supernet and derives the
same genotype, and only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_search_support import QUICKSTART, ROOT, records, sets, subprocess_env


def test_two_process_search_agrees(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "msrdsl", "search", QUICKSTART, "--out", str(out), "--json",
            *sets("search.epochs=2")]
    done = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    # Only rank 0 prints: one line per epoch and the final one.
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["epoch", "epoch", "final"]
    final = json.loads((out / "final.json").read_text())
    assert final["world_size"] == 2
    replicas = final["replicas"]
    assert len(replicas) == 2
    assert replicas[0]["state"] == replicas[1]["state"]  # identical weights, alpha and buffers
    assert replicas[0]["genotype"] == replicas[1]["genotype"]
    assert json.loads(replicas[0]["genotype"]) == final["genotype"]
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2
    assert len(records(out)) == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_two_process_darts_second_order_agrees(tmp_path):
    """The unrolled step averages four gradients per architecture step over the ranks."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "msrdsl", "search", str(ROOT / "spaces" / "darts.space"), "--out", str(out),
            "--quiet", *sets("search.epochs=2")]
    done = subprocess.run(argv, env=subprocess_env(), capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    replicas = json.loads((out / "final.json").read_text())["replicas"]
    assert replicas[0] == replicas[1]
