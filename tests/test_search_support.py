"""Shared pieces of the search tests (no tests here): tiny settings, the CLI, reading runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "spaces" / "quickstart.space")
DARTS = str(ROOT / "spaces" / "darts.space")

# A supernet small enough that an epoch takes a second or two on one core: three cells (one
# normal, two reduction), four channels, 8x8 inputs. TINY adds one intermediate node and the
# synthetic set (410 training images, so 6 weight steps an epoch); DIGITS two nodes (5 mixed
# edges a cell, so both edge choices of Eq. 9 are exercised) on the embedded digits.
NET = ("dataset.input_size=8", "network.cells=3", "search.batch=64")
TINY = ("dataset=synthetic", *NET, "network.channels=8", "cell.nodes=1")
DIGITS = (*NET, "network.channels=4", "cell.nodes=2")


def sets(*overrides: str, base: tuple[str, ...] = TINY) -> list[str]:
    out: list[str] = []
    for o in (*base, *overrides):
        out += ["--set", o]
    return out


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `msrdsl ARGV` in this process; (exit code, stdout, stderr)."""
    from msrdsl.cli import cli
    from msrdsl.cli.console import run_guarded

    capsys.readouterr()
    code = run_guarded(cli, list(argv), debug=False)
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_env() -> dict[str, str]:
    # One thread per process: the tests' processes share two cores.
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def msrdsl_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "msrdsl", *argv]


def run_subprocess(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(msrdsl_command(*argv), env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def records(run_dir: Path, *, drop=("seconds",)) -> list[dict]:
    """epochs.jsonl without the wall-clock fields."""
    lines = (Path(run_dir) / "epochs.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


def genotype_text(run_dir: Path) -> str:
    """final.genotype with the run folder's own name taken out (it is in the header)."""
    return (Path(run_dir) / "final.genotype").read_text().replace(str(run_dir), "RUN")
