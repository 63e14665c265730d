"""Training throughput of the evaluation network; prints one JSON object.

The MSR-DARTS genotype (genotypes/msr_darts.genotype) compiled as DARTS' NetworkCIFAR with 36
initial channels on 32x32 inputs, 8 cells (the paper's toy network) and 20 cells (its CIFAR-10
network), auxiliary tower on, trained with the recipe of spaces/msr.space at the middle of the
schedule (drop-path 0.15): images per second of full optimisation steps (forward, backward,
gradient clipping, SGD), timed over a fixed number of steps after warm-up steps, on one process
and on two processes (DDP over gloo, one thread each, the global batch split between them).

The batches come from the `synthetic` data set (crop, flip and cutout applied) and are drawn
before the clock starts, so the figure is the network's, not the data loader's.

    python benchmarks/train_epoch.py [--cells 8 20] [--batch 96] [--steps 3] [--warmup 1]
                                     [--processes 1 2] [--device cpu|cuda] [--amp off|bf16|fp16]
                                     [--channels-last]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

# Two single-threaded processes on a shared 2-core box: spinning OpenMP waiters slow everyone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

MID_EPOCH = 300  # of the recipe's 600: lr and drop-path halfway through the schedule


def _measure(rank: int, world: int, cfg: dict, init_file: str, out_file: str) -> None:
    """One process: build the network, train warm-up steps, then time `steps` steps."""
    import torch.distributed as dist

    from msrdsl.data import make_loader, train_test
    from msrdsl.train import Recipe, Trainer, build_network, resolve_genotype, resolve_space
    from msrdsl.train.distributed import Dist

    torch.set_num_threads(cfg["threads"])
    if world > 1:
        dist.init_process_group("gloo" if cfg["device"] == "cpu" else "nccl",
                                init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        space = resolve_space(None)  # spaces/msr.space: the paper's evaluation recipe
        genotype = resolve_genotype("msr_darts", space)
        recipe = Recipe.from_spec(space.evaluate)
        torch.manual_seed(0)
        module = build_network(genotype, space, {
            "net": "cifar", "cells": cfg["cells"], "channels": cfg["channels"], "classes": 10,
            "auxiliary": True, "in_channels": 3})
        params = sum(p.numel() for n, p in module.named_parameters()
                     if not n.startswith("auxiliary"))
        device = torch.device(cfg["device"] if cfg["device"] == "cpu" else f"cuda:{rank}")
        trainer = Trainer(module, recipe, device, amp=cfg["amp"],
                          channels_last=cfg["channels_last"],
                          dist=Dist(rank, world) if world > 1 else None)
        trainer.set_epoch(MID_EPOCH)
        local = cfg["batch"] // world
        train, _ = train_test("synthetic", input_size=32, augment=True, cutout=recipe.cutout,
                              count=max(512, 2 * cfg["batch"]))
        loader = make_loader(train, batch_size=local, shuffle=True, seed=0, epoch=0, rank=rank,
                             world_size=world, drop_last=True)
        batches = []
        while len(batches) < cfg["warmup"] + cfg["steps"]:
            batches.extend(loader)
        batches = batches[: cfg["warmup"] + cfg["steps"]]
        for x, y in batches[: cfg["warmup"]]:
            trainer.train_step(x, y)
        _sync(device, world)
        began = time.perf_counter()
        for x, y in batches[cfg["warmup"]:]:
            trainer.train_step(x, y)
        _sync(device, world)
        seconds = time.perf_counter() - began
        if rank == 0:
            Path(out_file).write_text(json.dumps({
                "cells": cfg["cells"], "params_M": round(params / 1e6, 3),
                "processes": world, "threads_per_process": cfg["threads"],
                "batch": cfg["batch"], "batch_per_process": local,
                "seconds_per_step": round(seconds / cfg["steps"], 4),
                "images_per_second": round(cfg["batch"] * cfg["steps"] / seconds, 2)}))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _sync(device: torch.device, world: int) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def run(cfg: dict, world: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        init, out = os.path.join(tmp, "init"), os.path.join(tmp, "result.json")
        if world == 1:
            _measure(0, 1, cfg, init, out)
        else:
            import torch.multiprocessing as mp

            mp.spawn(_measure, args=(world, cfg, init, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--channels", type=int, default=36)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = []
    for cells in args.cells:
        for world in args.processes:
            cfg = {"cells": cells, "channels": args.channels, "batch": args.batch,
                   "steps": args.steps, "warmup": args.warmup, "device": args.device,
                   "amp": args.amp, "channels_last": args.channels_last,
                   # One process uses every core; several share them, one thread each on CPU.
                   "threads": torch.get_num_threads() if world == 1 else 1}
            results.append(run(cfg, world))
    print(json.dumps({
        "benchmark": "train_epoch", "genotype": "msr_darts", "net": "cifar",
        "channels": args.channels, "input_size": 32, "batch": args.batch,
        "warmup_steps": args.warmup, "timed_steps": args.steps, "device": args.device,
        "device_name": (torch.cuda.get_device_name() if args.device == "cuda"
                        else platform.processor() or platform.machine()),
        "cpu_count": cores, "amp": args.amp, "channels_last": args.channels_last,
        "torch": torch.__version__, "load_average": list(os.getloadavg()),
        "results": results}, indent=2))


if __name__ == "__main__":
    main()
