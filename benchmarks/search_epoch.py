"""Time one search epoch of a space (default: the quick-start space); print one JSON object.

One epoch = every weight step of the epoch (DARTS: with its architecture steps), then the
validation pass and the scores and genotypes of every rule the space names: what `msrdsl search`
does per epoch, without the run folder's writes.

    python benchmarks/search_epoch.py [--space spaces/quickstart.space] [--device cpu]
                                      [--threads N] [--set search.batch=32 ...]

Fields: epoch_s (train_s + end_s), train_s, end_s (validation, scores, genotypes), steps (weight
steps per epoch), s_per_step, build_s (data and supernet), peak_rss_mb (the process's maximum
resident set, resource.getrusage), and on CUDA peak_cuda_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# Passive OpenMP waiting: spinning threads starve each other on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from msrdsl.lang import load_space  # noqa: E402
from msrdsl.search import default_threads  # noqa: E402
from msrdsl.search.distributed import Dist  # noqa: E402
from msrdsl.search.loop import Search, _EpochSums, _StopRequest, resolve_device, seed_everything  # noqa: E402
from msrdsl.search.rundir import RunDir  # noqa: E402
from msrdsl.data.common import mix_seed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "spaces" / "quickstart.space"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: what `msrdsl search` uses)")
    args = parser.parse_args()
    threads = args.threads if args.threads is not None else default_threads()
    if threads:
        torch.set_num_threads(threads)

    space = load_space(args.space, args.overrides)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(space, RunDir(tmp), device, Dist())
        started = time.perf_counter()
        search.setup()
        build_s = time.perf_counter() - started

        seed_everything(mix_seed("epoch", space.search.seed, 0))
        if search.mix == "score" and space.supernet.refresh == "epoch":
            search.refresh_mix()
        _sync(device)
        started = time.perf_counter()
        with _StopRequest() as stop:
            sums, _ = search.train_epoch(0, 0, _EpochSums(), stop)
        _sync(device)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        record = search.end_epoch(0, sums)
        _sync(device)
        end_s = time.perf_counter() - started

    steps = search.steps_per_epoch()
    out = {
        "space": space.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "epoch_s": round(train_s + end_s, 3),
        "train_s": round(train_s, 3),
        "end_s": round(end_s, 3),
        "steps": steps,
        "s_per_step": round(train_s / steps, 4),
        "build_s": round(build_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "train_loss": round(record["train_loss"], 4),
        "valid_loss": round(record["valid_loss"], 4),
    }
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
