"""Time one search training step of the MSR-DARTS supernet in the paper's configuration.

Four operators (sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5), 8 cells, 16 channels,
32x32 inputs, batch 64, 10 classes (spaces/msr.space); one step = forward, backward, gradient
clip 5, SGD step, with the spectral-norm constraint (power iteration, Z = 5) and without it.
Prints one JSON object. Timings are medians after warm-up steps; `cpu_s` fields are process CPU
time, which a busy machine disturbs less than wall time.

    python benchmarks/supernet_step.py [--steps 5] [--threads 2] [--omp-wait passive|active]
        [--layout auto|channels_last|contiguous] [--batch 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

# Set before torch loads OpenMP. Passive waiting is the default here: on a machine other jobs
# share, spinning OpenMP threads starve each other (one two-thread step took 97 s instead of
# 4 s). On an idle machine `--omp-wait active` (OpenMP's own default) is ~10 % faster.
if "--omp-wait" in sys.argv and sys.argv.index("--omp-wait") + 1 < len(sys.argv):
    os.environ["OMP_WAIT_POLICY"] = sys.argv[sys.argv.index("--omp-wait") + 1].upper()
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--layout", choices=("auto", "channels_last", "contiguous"), default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--omp-wait", choices=("passive", "active"), default="passive",
                        help="OpenMP wait policy, set before torch loads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from msrdsl.data.common import DatasetInfo
    from msrdsl.lang import load_space
    from msrdsl.nn import compile_supernet

    space = load_space(ROOT / "spaces" / "msr.space")
    info = DatasetInfo("cifar10", 3, 32, 10)
    layout = {"auto": None, "channels_last": True, "contiguous": False}[args.layout]
    device = torch.device(args.device)
    started = time.perf_counter()
    net = compile_supernet(space, info, device=device, channels_last=layout)
    build_s = time.perf_counter() - started
    net.train()

    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    weights = net.weight_parameters()
    opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> tuple[float, float]:
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 5.0)
        opt.step()
        sync()
        return time.perf_counter() - wall, time.process_time() - cpu

    load_before = os.getloadavg()[0]
    for _ in range(args.warmup):
        step()
    timed: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(args.steps):  # interleaved, so a change in machine load hits both alike
        for enabled in (True, False):
            net.constraint.enabled = enabled
            timed[enabled].append(step())
    net.constraint.enabled = True

    constraint = []
    for _ in range(args.steps):
        sync()
        t = time.perf_counter()
        net.constraint.rescale()
        sync()
        constraint.append(time.perf_counter() - t)

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    with_c, without = timed[True], timed[False]
    result = {
        "step_s_constraint": median([w for w, _ in with_c]),
        "step_s_no_constraint": median([w for w, _ in without]),
        "constraint_s": median(constraint),
        "constraint_overhead": round(median([w for w, _ in with_c])
                                     / median([w for w, _ in without]) - 1, 4),
        "step_cpu_s_constraint": median([c for _, c in with_c]),
        "step_cpu_s_no_constraint": median([c for _, c in without]),
        "build_s": round(build_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "channels_last": net.channels_last,
        "device": str(device),
        "batch": args.batch,
        "steps": args.steps,
        "candidate_convs": len(net.candidate_convs()),
        "constraint_groups": len(net.constraint.groups),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
