"""Training a genotype's evaluation network: one process or many (torchrun + DDP).

The flow of `train_genotype`:
  genotype + space -> recipe (recipe.py), data set, network (msrdsl.nn.build_eval_network)
  -> rank 0 prepares the run directory (checkpoint.py) and every rank gets its state
  -> per epoch: lr, drop-path and the RNG are set from (seed, epoch) alone; each rank trains on
     its shard of the epoch's order (per-rank batch = evaluate.batch // processes); DDP averages
     the gradients; the test set is scored in disjoint shards and the sums all-reduced; rank 0
     writes checkpoint.pt, the record and best.pt.

Exactness: every random draw of epoch e (augmentation, drop-path masks, data order) comes from
seeds that are pure functions of (seed, epoch, rank), and checkpoint.pt is written at epoch
ends, so a run killed at any moment and resumed replays the lost epoch bit for bit on the CPU,
and a run resumed on another number of processes continues the same schedule and data order
(the global batch is the same; only batch-norm statistics, which are per process unless
--sync-bn, and summation order differ). Ctrl-C or SIGTERM stops every rank after the same step
and saves interrupted.pt with each rank's RNG state, the step and the epoch's running sums; the
same command continues the epoch exactly (with --workers 0; worker processes draw augmentation
from their own seeds, so with workers the continued epoch is valid but not the same draw).
"""

from __future__ import annotations

import datetime
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from attrs import asdict, define
from torch.utils.data import Subset

from msrdsl.errors import DivergedError, GenotypeError, RunError, did_you_mean
from msrdsl.genotype import Genotype
from msrdsl.ir import DatasetSpec, Space
from msrdsl.train import checkpoint as ck
from msrdsl.train.distributed import Dist, convert_sync_batchnorm
from msrdsl.train.progress import NullReporter, Reporter
from msrdsl.train.recipe import Recipe, set_lr

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
TOP_K = 5


# ---------------------------------------------------------------------------------------------
# Inputs: space, genotype, data, device


def default_space_path() -> Path:
    """spaces/msr.space of the msrdsl checkout (the space `train` uses when given none)."""
    import msrdsl

    return Path(msrdsl.__file__).resolve().parent.parent / "spaces" / "msr.space"


def resolve_space(space: Space | str | Path | None, overrides: Sequence[str] = ()) -> Space:
    """A Space as given, or loaded from a path, or the default spaces/msr.space."""
    from msrdsl.lang import load_space

    if isinstance(space, Space):
        if overrides:
            raise ValueError("overrides apply to a space read from a file")
        return space
    if space is None:
        path = default_space_path()
        if not path.is_file():
            raise RunError("no --space given and the default spaces/msr.space is not there",
                           hint="name the space whose evaluate block to use: --space FILE")
        return load_space(path, overrides)
    return load_space(space, overrides)


def resolve_genotype(genotype: Genotype | str | Path, space: Space) -> Genotype:
    """A Genotype as given, or from a .genotype file or a name in genotypes/, whose operators
    all exist in the space's operator library."""
    if not isinstance(genotype, Genotype):
        from msrdsl.genotype_io import load_genotype

        genotype = load_genotype(genotype)
    check_genotype_ops(genotype, space)
    return genotype


def from_search_run(genotype: Any, space: Any) -> tuple[Any, Any]:
    """A search run folder as GENOTYPE means its final.genotype, trained (unless a space is
    given) with the recipe of the space it searched (its space.space)."""
    if isinstance(genotype, (str, Path)) and Path(genotype).is_dir():
        folder = Path(genotype)
        if not (folder / "final.genotype").is_file():
            raise GenotypeError(f"{folder}: a folder without final.genotype",
                                hint="pass a .genotype file, a name in genotypes/, or a "
                                     "finished search run folder")
        genotype = folder / "final.genotype"
        if space is None and (folder / "space.space").is_file():
            space = folder / "space.space"
    return genotype, space


def check_genotype_ops(genotype: Genotype, space: Space) -> None:
    """Every operator of the genotype is defined by the space (its file or the prelude)."""
    known = {op.name for op in space.ops}
    for cell_name, cell in genotype.cells.items():
        for node in cell.nodes:
            for edge in node.edges:
                if edge.op not in known:
                    raise GenotypeError(
                        f"genotype '{genotype.name}', {cell_name} cell: operator '{edge.op}' is "
                        f"not defined in space '{space.name}'",
                        edge.loc or node.loc or cell.loc or genotype.loc,
                        did_you_mean(edge.op, known) or "define it with `op NAME = ...`")


def eval_dataset(space: Space, data_root: str | None = None) -> DatasetSpec:
    """The evaluation data set: evaluate.dataset, else the space's; `data_root` as its root."""
    from attrs import evolve

    spec = space.evaluate.dataset or space.dataset
    return evolve(spec, root=str(data_root)) if data_root is not None else spec


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device not in DEVICE_CHOICES:
        raise RunError(f"unknown device '{device}'", hint=did_you_mean(device, DEVICE_CHOICES))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda, but torch sees no CUDA device",
                       hint="use --device cpu, or check the driver and CUDA_VISIBLE_DEVICES")
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> str:
    """'bf16', 'fp16' or 'off'; 'auto' is bf16 on GPUs that have it (else fp16), off on the CPU."""
    if amp not in AMP_CHOICES:
        raise RunError(f"unknown --amp '{amp}'", hint=did_you_mean(amp, AMP_CHOICES))
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def network_meta(space: Space, genotype: Genotype, data: DatasetSpec, info: Any) -> dict[str, Any]:
    """Everything needed to rebuild the trained network (stored in every .pt file)."""
    ev = space.evaluate
    return {
        "genotype": genotype.name, "space": space.name, "net": ev.net, "cells": ev.cells,
        "channels": ev.channels, "classes": info.classes, "in_channels": info.channels,
        "input_size": info.input_size, "auxiliary": ev.auxiliary > 0, "dataset": data.name,
        "data_root": data.root,
    }


def build_network(genotype: Genotype, space: Space, meta: dict[str, Any],
                  drop_path: float = 0.0) -> torch.nn.Module:
    """The evaluation network of `genotype` in `space`'s operators, as msrdsl.nn compiles it."""
    from msrdsl.nn import build_eval_network

    return build_eval_network(
        genotype, space.ops, net=meta["net"], cells=meta["cells"], channels=meta["channels"],
        classes=meta["classes"], auxiliary=meta["auxiliary"], drop_path=drop_path,
        in_channels=meta["in_channels"])


def split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, auxiliary logits or None) from a network's output, tuple or tensor."""
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """Parameters in all, and without the auxiliary tower (the papers' figure)."""
    total = aux = 0
    for name, p in module.named_parameters():
        total += p.numel()
        if "auxiliary" in name.split(".")[0]:
            aux += p.numel()
    return total, total - aux


# ---------------------------------------------------------------------------------------------
# One model, its optimiser and its steps


class Trainer:
    """A network on a device with its optimiser, AMP scaler and (across processes) DDP wrapper.

    `train_step` is one optimisation step on this rank's part of a global batch; `evaluate`
    scores a loader. Both return sums, all-reduced over the processes.
    """

    def __init__(self, module: torch.nn.Module, recipe: Recipe, device: torch.device, *,
                 amp: str = "off", channels_last: bool = False, sync_bn: bool = False,
                 dist: Dist | None = None):
        self.recipe, self.device = recipe, device
        self.dist = dist or Dist()
        self.amp_dtype = AMP_DTYPES[amp]
        self.channels_last = channels_last
        if sync_bn and self.dist.enabled:
            module = convert_sync_batchnorm(module, device.type)
        module = module.to(device)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        # Inputs follow the network's parameters (float32 normally; float64 in exactness tests).
        self.input_dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()),
                                torch.float32)
        self.model: torch.nn.Module = module
        if self.dist.enabled:
            import warnings

            from torch.nn.parallel import DistributedDataParallel as DDP

            # Gradients of 1x1 convolutions come back from oneDNN with channels-last strides;
            # for a (C_out, C_in, 1, 1) tensor those differ from the bucket's only in the
            # strides of size-1 dimensions, which address nothing (same layout in memory). DDP
            # then copies the gradient into its bucket instead of aliasing it: a small cost,
            # not a fault, and not worth a warning per process.
            warnings.filterwarnings(
                "ignore", r"(?s)Grad strides do not match bucket view strides.*"
                          r"grad\.sizes\(\) = \[\d+, \d+, 1, 1\]")

            # BN buffers are not broadcast every step: rank 0's are copied to all at epoch ends
            # (before scoring and saving), which gives the same statistics for less traffic.
            self.model = DDP(module, device_ids=[device.index] if device.type == "cuda" else None,
                             gradient_as_bucket_view=True, **_no_forward_buffer_sync())
        self.optimizer = recipe.make_optimizer(module.parameters())
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.criterion = recipe.criterion()

    def set_epoch(self, epoch: int) -> tuple[float, float]:
        """Learning rate and drop-path probability of `epoch`, applied."""
        lr, drop_path = self.recipe.lr_at(epoch), self.recipe.drop_path_at(epoch)
        set_lr(self.optimizer, lr)
        self.module.drop_path_prob = drop_path
        return lr, drop_path

    def _inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, dtype=self.input_dtype, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, stop: bool = False
                   ) -> tuple[float, float, float, bool]:
        """One step; (objective sum, correct, count) over all processes' parts of the batch, and
        whether any process asked to stop (`stop`) so that all stop after the same step.

        The sums are all-reduced before the optimiser steps, so every rank sees a NaN/inf loss
        of any rank at the same step and stops with the weights of the last good step.
        """
        self.model.train()
        x, y = self._inputs(x, y)
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            logits, aux = split_output(self.model(x))
            loss = self.criterion(_full(logits), y)
            if aux is not None and self.recipe.auxiliary > 0:
                loss = loss + self.recipe.auxiliary * self.criterion(_full(aux), y)
        self.scaler.scale(loss).backward()
        if self.recipe.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.recipe.grad_clip)
        n = y.shape[0]
        stats = torch.stack([loss.detach().double() * n,
                             (logits.detach().argmax(1) == y).sum().double(),
                             torch.tensor(float(n), dtype=torch.float64, device=y.device),
                             torch.tensor(float(stop), dtype=torch.float64, device=y.device)])
        loss_sum, correct, count, stops = self.dist.all_sum(stats).tolist()
        if not math.isfinite(loss_sum):
            self.optimizer.zero_grad(set_to_none=True)
            raise _NonFinite(loss_sum)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, correct, count, stops > 0

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        """Plain cross-entropy, top-1 and top-5 over the loader, summed over all processes.

        Runs the unwrapped module: DDP has nothing to do in evaluation, and the shards may have
        different lengths.
        """
        self.module.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in loader:
            x, y = self._inputs(x, y)
            with torch.autocast(self.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                logits, _ = split_output(self.module(x))
            logits = _full(logits)
            k = min(TOP_K, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top == y[:, None]
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 hit[:, 0].sum().double(), hit.any(1).sum().double(),
                                 torch.tensor(float(y.shape[0]), dtype=torch.float64,
                                              device=sums.device)])
        loss, top1, top5, n = self.dist.all_sum(sums).tolist()
        n = max(n, 1.0)
        return {"test_loss": loss / n, "test_acc": top1 / n, "test_top5": top5 / n,
                "test_images": int(n)}

    def state(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _full(t: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 for the loss (autocast may give half precision)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _no_forward_buffer_sync() -> dict[str, bool]:
    """DDP's switch for "do not broadcast buffers before every forward", by this torch's name."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class _NonFinite(Exception):
    def __init__(self, value: float):
        super().__init__(value)
        self.value = value


def portable_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict on the CPU in the default memory layout (loads into any device and layout)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _rng_states() -> dict[str, Any]:
    """This process's RNG states: the CPU generator and its current CUDA device's."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _seed(*parts: Any) -> int:
    from msrdsl.data.common import mix_seed

    return mix_seed(*parts)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# The run


def default_out(genotype: Genotype, space: Space) -> Path:
    return Path("runs") / f"train-{genotype.name}-{space.name}"


@define
class Training:
    """What a call of `run_training` leaves: the result, the per-epoch records, the trainer."""

    result: dict[str, Any]
    records: list[dict[str, Any]]
    trainer: Trainer


def train_genotype(genotype: Genotype | str | Path, space: Space | str | Path | None = None,
                   **options: Any) -> dict[str, Any]:
    """Train `genotype`'s evaluation network with the recipe of `space`'s evaluate block.

    `space` is a Space, a .space path (with `overrides` as `--set` gives them) or None for
    spaces/msr.space; `genotype` a Genotype, a .genotype path or a name in genotypes/. Under
    torchrun (or with an initialised process group) every process calls this; rank 0 writes.
    Returns the final result (test loss, top-1, top-5, best epoch, run folder); the options are
    those of `run_training`.
    """
    return run_training(genotype, space, **options).result


def run_training(
    genotype: Genotype | str | Path,
    space: Space | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    data_root: str | None = None,
    device: str | torch.device = "auto",
    amp: str = "auto",
    channels_last: bool = False,
    sync_bn: bool = False,
    workers: int | None = None,
    resume: bool = False,
    force: bool = False,
    stop_after: int | None = None,
    reporter: Reporter | None = None,
    dist: Dist | None = None,
    augment: bool = True,
    command: Sequence[str] | None = None,
) -> Training:
    """`train_genotype`, keeping the trainer (model, optimiser) and the records.

    `stop_after=N` trains at most N more epochs in this call and leaves the run unfinished, to
    be resumed by the same call (jobs with a time limit). `augment=False` turns off crop, flip
    and cutout (for diagnostics and tests; the recipes augment). `dist` is the process group to
    use (default: torchrun's from the environment, or one process).
    """
    genotype, space = from_search_run(genotype, space)
    space = resolve_space(space, overrides)
    genotype = resolve_genotype(genotype, space)
    recipe = Recipe.from_spec(space.evaluate)
    dev = resolve_device(device)
    if stop_after is not None and stop_after < 1:
        raise RunError(f"--stop-after must be at least 1 epoch, got {stop_after}")
    own_dist = dist is None
    if dist is None:
        dist = Dist.from_env(dev.type)
    try:
        return _run(genotype, space, recipe, dev, dist, out=out, data_root=data_root, amp=amp,
                    channels_last=channels_last, sync_bn=sync_bn, workers=workers, resume=resume,
                    force=force, stop_after=stop_after, reporter=reporter or NullReporter(),
                    augment=augment, command=command)
    finally:
        if own_dist:
            dist.close()


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after the state was saved; the same call resumes."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _StopRequest:
    """SIGINT/SIGTERM set a flag instead of raising mid-step; the training loop stops at the next
    step on every rank at once (the flag rides in the per-step all-reduce). A second signal
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _run(genotype: Genotype, space: Space, recipe: Recipe, dev: torch.device, dist: Dist, *,
         out, data_root, amp, channels_last, sync_bn, workers, resume, force, stop_after,
         reporter: Reporter, augment: bool, command) -> Training:
    from msrdsl.data import EpochSampler, dataset_info, make_loader, train_test
    from msrdsl.lang import format_genotype, format_space

    if dev.type == "cuda" and dist.enabled:
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = resolve_amp(amp, dev)
    world = dist.world_size
    if recipe.batch % world:
        raise RunError(f"evaluate.batch {recipe.batch} does not split evenly over {world} "
                       "processes (each process trains batch // processes images per step)",
                       space.where("evaluate.batch"),
                       hint=f"use a batch that is a multiple of {world}")
    local_batch = recipe.batch // world
    if workers is None:
        workers = 4 if dev.type == "cuda" else 0
    if workers < 0:
        raise RunError(f"--workers must be >= 0, got {workers}")

    data = eval_dataset(space, data_root)
    info = dataset_info(data.name, root=data.root, input_size=data.input_size)
    meta = network_meta(space, genotype, data, info)
    genotype_text, space_text = format_genotype(genotype), format_space(space)
    run = ck.RunDir(out if out is not None else default_out(genotype, space))

    # Rank 0 alone decides about the folder; every rank learns the outcome (or the error).
    state, note, error = None, None, None
    if dist.is_main:
        try:
            state, note = run.prepare(genotype_text, space_text, force=force, resume=resume,
                                      world_size=world)
        except Exception as err:  # noqa: BLE001 - shared with the other ranks, then re-raised
            error = err
    dist.agree(error)
    state = dist.broadcast(state)

    torch.manual_seed(_seed("init", recipe.seed))
    module = build_network(genotype, space, meta, drop_path=0.0)
    total_params, params = count_params(module)
    trainer = Trainer(module, recipe, dev, amp=amp, channels_last=channels_last,
                      sync_bn=sync_bn, dist=dist)
    start, records, best, partial = 0, [], None, None
    if state is not None:
        trainer.load_state(state)
        start, records, best = state["epoch"], list(state["records"]), state.get("best")
        partial = state.get("partial")  # set when the state was saved inside an epoch

    train_set, test_set = train_test(data.name, root=data.root, input_size=data.input_size,
                                     augment=augment, cutout=recipe.cutout if augment else 0,
                                     seed=recipe.seed)
    # The test set in disjoint shards (no padding): every image is scored exactly once.
    test_shard = Subset(test_set, range(dist.rank, len(test_set), world))
    test_loader = make_loader(test_shard, batch_size=local_batch, shuffle=False,
                              seed=recipe.seed, epoch=0, num_workers=workers)
    per_rank = math.ceil(len(train_set) / world)
    # A last batch of one image per process would make batch norm's variance undefined.
    drop_last = per_rank % local_batch == 1 and per_rank > 1
    steps_per_epoch = per_rank // local_batch if drop_last else math.ceil(per_rank / local_batch)

    def train_loader(epoch: int, skip: int):
        if skip == 0:
            return make_loader(train_set, batch_size=local_batch, shuffle=True, seed=recipe.seed,
                               epoch=epoch, rank=dist.rank, world_size=world,
                               num_workers=workers, drop_last=drop_last)
        # The rest of an interrupted epoch: this rank's share of the epoch's order, minus the
        # batches already trained, in order.
        order = list(EpochSampler(len(train_set), shuffle=True, seed=recipe.seed, epoch=epoch,
                                  rank=dist.rank, world_size=world))
        return make_loader(Subset(train_set, order[skip * local_batch:]), batch_size=local_batch,
                           shuffle=False, seed=recipe.seed, epoch=epoch, num_workers=workers,
                           drop_last=drop_last)

    if dist.is_main:
        _write_run_info(run, state is not None, genotype, space, recipe, data, info, meta, dev,
                        amp, channels_last, sync_bn, workers, world, local_batch, start,
                        (total_params, params), command)
        ck.write_text_atomic(run.file(ck.GENOTYPE), genotype_text)
        ck.write_text_atomic(run.file(ck.SPACE), space_text)
        if state is not None:
            ck.write_jsonl_atomic(run.file(ck.EPOCHS), records)
        header = [f"training {genotype.name} ({meta['net']}, {meta['cells']} cells, "
                  f"{meta['channels']} channels, {params / 1e6:.2f} M params) on {data.name} "
                  f"{info.input_size}x{info.input_size}, {world} process(es) on {dev.type}"
                  + (f", amp {amp}" if amp != "off" else ""),
                  f"recipe: {recipe.summary()}"]
        if note:
            header.append(note)
        if partial is not None:
            header.append(f"resuming epoch {start + 1} of {recipe.epochs} after step "
                          f"{partial['step']}")
        elif state is not None:
            header.append(f"resuming after epoch {start} of {recipe.epochs}")
        reporter.start(run_dir=str(run.path), epochs=recipe.epochs, first_epoch=start,
                       header=header)
    else:
        reporter = NullReporter()

    def save(what: str, **fields: Any) -> None:
        """Rank 0 writes; every rank learns whether that worked."""
        error = None
        if dist.is_main:
            try:
                _save_state(run, what, trainer, records, best, genotype_text, space_text, meta,
                            world, **fields)
            except Exception as err:  # noqa: BLE001 - shared with the other ranks
                error = err
        dist.agree(error)

    end = recipe.epochs if stop_after is None else min(recipe.epochs, start + stop_after)
    try:
        with _StopRequest() as stop:
            for epoch in range(start, end):
                lr, drop_path = trainer.set_epoch(epoch)
                skip = partial["step"] if partial is not None else 0
                if partial is not None:
                    # Continue the interrupted epoch with its sums and this rank's RNG stream.
                    loss_sum, correct, count = partial["sums"]
                    began = time.perf_counter() - partial["seconds"]
                    _set_rng_states(partial["rng"][dist.rank])
                    partial = None
                else:
                    loss_sum = correct = count = 0.0
                    began = time.perf_counter()
                    # Augmentation and drop-path draw from torch's global RNG: reseeding it from
                    # (seed, epoch, rank) makes every epoch replayable on its own.
                    torch.manual_seed(_seed("train", recipe.seed, epoch, dist.rank))
                reporter.epoch_start(epoch, steps_per_epoch, skip)
                for step, (x, y) in enumerate(train_loader(epoch, skip), start=skip):
                    try:
                        l, c, n, stopping = trainer.train_step(x, y, stop=stop.requested)
                    except _NonFinite as bad:
                        raise _diverged(run, dist, epoch, step, lr, bad.value, records) from None
                    loss_sum, correct, count = loss_sum + l, correct + c, count + n
                    reporter.step(l / n, c / n)
                    if stopping:
                        rng = dist.gather(_rng_states())
                        save("interrupted", epoch=epoch, partial={
                            "step": step + 1, "sums": [loss_sum, correct, count],
                            "seconds": time.perf_counter() - began, "rng": rng})
                        raise TrainingInterrupted(
                            f"stopped in epoch {epoch + 1}, after step {step + 1} of "
                            f"{steps_per_epoch}; saved {run.file(ck.INTERRUPTED)}, "
                            "the same command continues from there")
                dist.broadcast_buffers(trainer.module)
                scores = trainer.evaluate(test_loader)
                if not math.isfinite(scores["test_loss"]):
                    raise _diverged(run, dist, epoch, None, lr, scores["test_loss"], records)
                record = {"epoch": epoch, "train_loss": loss_sum / count,
                          "train_acc": correct / count, "test_loss": scores["test_loss"],
                          "test_acc": scores["test_acc"], "test_top5": scores["test_top5"],
                          "lr": lr, "drop_path": drop_path,
                          "seconds": time.perf_counter() - began}
                records.append(record)
                improved = best is None or record["test_acc"] > best["test_acc"]
                if improved:
                    best = {"epoch": epoch, "test_loss": record["test_loss"],
                            "test_acc": record["test_acc"], "test_top5": record["test_top5"]}
                save("epoch", improved=improved)
                reporter.epoch_end(record)
                if dist.any(stop.requested) and epoch + 1 < end:
                    raise TrainingInterrupted(
                        f"stopped after epoch {epoch + 1}; the same command continues from "
                        f"{run.file(ck.CHECKPOINT)}")
    finally:
        reporter.close()

    if not records:
        raise RunError(f"{run.path}: no epoch to report")
    last = records[-1]
    finished = len(records) == recipe.epochs
    result = {"run_dir": str(run.path), "genotype": genotype.name, "space": space.name,
              "finished": finished, "epochs": len(records), "of_epochs": recipe.epochs,
              "test_loss": last["test_loss"], "test_acc": last["test_acc"],
              "test_top5": last["test_top5"], "best": best, "params": params,
              "params_with_auxiliary": total_params, "world_size": world}
    if finished:
        save("final", result=result)
    reporter.final(result)
    return Training(result, records, trainer)


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def _save_state(run: ck.RunDir, what: str, trainer: Trainer, records: list[dict],
                best: dict | None, genotype_text: str, space_text: str, meta: dict, world: int,
                *, improved: bool = False, epoch: int | None = None,
                partial: dict | None = None, result: dict | None = None) -> None:
    """Write the run's files after an epoch, at an interruption, or at the end.

    After an epoch: best.pt (if improved), checkpoint.pt, then epochs.jsonl rewritten from the
    records, then interrupted.pt removed; a kill between two of these writes is harmless, a
    resumed run repeats the epoch exactly and rewrites them all. At an interruption:
    interrupted.pt, the state inside the epoch. At the end: final.pt, then run.json finished.
    """
    def weights(which: str, record: dict) -> dict[str, Any]:
        return _weights_file(trainer, genotype_text, space_text, {
            **meta, "which": which, "epoch": record["epoch"], "test_loss": record["test_loss"],
            "test_acc": record["test_acc"], "test_top5": record["test_top5"]})

    def train_state(completed: int, **extra: Any) -> dict[str, Any]:
        return {"format": ck.TRAIN_STATE, "version": ck.FORMAT_VERSION, "epoch": completed,
                **trainer.state(), "records": records, "best": best, "genotype": genotype_text,
                "space": space_text, "meta": meta, "world_size": world, **extra}

    if what == "epoch":
        last = records[-1]
        if improved:
            ck.save_atomic(run.file(ck.BEST), weights("best", last))
        ck.save_atomic(run.file(ck.CHECKPOINT),
                       train_state(last["epoch"] + 1, rng=_rng_states()))
        ck.write_jsonl_atomic(run.file(ck.EPOCHS), records)
        run.file(ck.INTERRUPTED).unlink(missing_ok=True)
    elif what == "interrupted":
        assert epoch is not None and partial is not None
        ck.save_atomic(run.file(ck.INTERRUPTED), train_state(epoch, partial=partial))
    elif what == "final":
        ck.save_atomic(run.file(ck.FINAL), weights("final", records[-1]))
        info = ck.read_json(run.file(ck.RUN_JSON))
        info.update(status="finished", finished=_now(), result=result)
        ck.write_json_atomic(run.file(ck.RUN_JSON), info)


def _weights_file(trainer: Trainer, genotype_text: str, space_text: str,
                  meta: dict[str, Any]) -> dict[str, Any]:
    return {"format": ck.WEIGHTS, "version": ck.FORMAT_VERSION,
            "model": portable_weights(trainer.module), "genotype": genotype_text,
            "space": space_text, "meta": meta}


def _diverged(run: ck.RunDir, dist: Dist, epoch: int, step: int | None, lr: float, value: float,
              records: list[dict]) -> DivergedError:
    where = f"epoch {epoch + 1}, step {step + 1}" if step is not None else \
        f"epoch {epoch + 1}, on the test set"
    kept = (f"the last good checkpoint is {run.file(ck.CHECKPOINT)} (after epoch {len(records)})"
            if records else "no epoch finished, so there is no checkpoint")
    if dist.is_main and run.file(ck.RUN_JSON).is_file():
        try:
            info = ck.read_json(run.file(ck.RUN_JSON))
            info.update(status="diverged", diverged={"epoch": epoch, "step": step,
                                                     "loss": repr(value), "lr": lr})
            ck.write_json_atomic(run.file(ck.RUN_JSON), info)
        except Exception:  # noqa: BLE001 - the divergence is the error to report
            pass
    return DivergedError(
        f"training diverged: the loss is {value} at {where} (lr {lr:.4g}); {kept}",
        hint="lower evaluate.optimizer.lr or set evaluate.grad_clip; "
             "rerunning the same command resumes from the checkpoint, --force starts over")


def _write_run_info(run: ck.RunDir, resuming: bool, genotype: Genotype, space: Space,
                    recipe: Recipe, data: DatasetSpec, info: Any, meta: dict, dev: torch.device,
                    amp: str, channels_last: bool, sync_bn: bool, workers: int, world: int,
                    local_batch: int, start: int, params: tuple[int, int],
                    command: Sequence[str] | None) -> None:
    import msrdsl

    previous = {}
    if resuming and run.file(ck.RUN_JSON).is_file():
        try:
            previous = ck.read_json(run.file(ck.RUN_JSON))
        except RunError:
            previous = {}
    now = _now()
    info_json = {
        "kind": "train", "status": "running",
        "genotype": genotype.name, "space": space.name,
        "network": {k: meta[k] for k in ("net", "cells", "channels", "classes", "in_channels",
                                         "auxiliary")},
        "params": params[1], "params_with_auxiliary": params[0],
        "dataset": {"name": data.name, "root": data.root, "input_size": info.input_size},
        "recipe": asdict(recipe),
        "world_size": world, "batch_per_process": local_batch,
        "device": str(dev), "amp": amp, "channels_last": channels_last, "sync_bn": sync_bn,
        "workers": workers,
        "command": list(command) if command is not None else sys.argv,
        "versions": {"msrdsl": msrdsl.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "started": previous.get("started", now),
        "resumes": previous.get("resumes", []),
    }
    if resuming:
        info_json["resumes"] = [*info_json["resumes"],
                                {"at": now, "after_epoch": start, "world_size": world}]
    ck.write_json_atomic(run.file(ck.RUN_JSON), info_json)


# ---------------------------------------------------------------------------------------------
# Scoring a checkpoint


def evaluate_checkpoint(
    path: str | Path,
    *,
    space: Space | str | Path | None = None,
    overrides: Sequence[str] = (),
    data_root: str | None = None,
    device: str | torch.device = "auto",
    batch: int | None = None,
    workers: int | None = None,
    amp: str = "off",
) -> dict[str, Any]:
    """Test loss, top-1 and top-5 of a trained checkpoint (a .pt file or a run directory).

    The network comes from the file alone (genotype, space and metadata travel with the
    weights); `space` only chooses another evaluation data set, `data_root` another folder.
    """
    from msrdsl.data import dataset_info, make_loader, train_test
    from msrdsl.lang import parse_genotype, parse_space

    file = ck.resolve_checkpoint(path)
    obj = ck.load_pt(file)
    try:
        genotype = parse_genotype(obj["genotype"], f"{file}:genotype")
        stored = parse_space(obj["space"], f"{file}:space")
        meta, weights = dict(obj["meta"]), obj["model"]
    except KeyError as err:
        raise RunError(f"{file}: incomplete checkpoint, it has no {err}") from None
    data_space = resolve_space(space, overrides) if space is not None else stored
    if data_root is None and space is None:
        data_root = meta.get("data_root")  # where training read it (--data may have moved it)
    data = eval_dataset(data_space, data_root)
    if data.input_size is None and data.name == meta["dataset"]:
        from attrs import evolve

        data = evolve(data, input_size=meta["input_size"])
    info = dataset_info(data.name, root=data.root, input_size=data.input_size)
    if (info.classes, info.channels) != (meta["classes"], meta["in_channels"]):
        raise RunError(f"{file}: the network takes {meta['in_channels']}-channel images into "
                       f"{meta['classes']} classes, data set '{data.name}' has "
                       f"{info.channels}-channel images in {info.classes} classes")
    dev = resolve_device(device)
    module = build_network(genotype, stored, meta)
    try:
        module.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise RunError(f"{file}: the weights do not fit the network built from its genotype "
                       f"and space ({first})") from None
    recipe = Recipe.from_spec(stored.evaluate)
    trainer = Trainer(module, recipe, dev, amp=resolve_amp(amp, dev))
    _, test_set = train_test(data.name, root=data.root, input_size=data.input_size,
                             augment=False, cutout=0)
    loader = make_loader(test_set, batch_size=batch or recipe.batch, shuffle=False,
                         seed=0, epoch=0, num_workers=workers or 0)
    scores = trainer.evaluate(loader)
    return {"checkpoint": str(file), "genotype": genotype.name, "space": stored.name,
            "which": meta.get("which", "checkpoint"),
            "epoch": meta.get("epoch", obj.get("epoch", 0) - 1), "dataset": data.name,
            "input_size": info.input_size, **scores}
