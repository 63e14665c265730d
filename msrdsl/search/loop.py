"""The search a space describes: data, supernet, optimisers, the epoch/step loop, resume.

MSR-DARTS (mix `uniform` or `softmax(SCORE)`): only the weights are trained; score-based mixing
weights are recomputed from `criteria.mix_weights` at the start of every epoch
(`refresh epoch`, the reference code) or before every step (`refresh step`); the spectral-norm
constraint is applied before every training forward. DARTS (mix `softmax(alpha)`): each step
first takes the architecture step on a validation batch (msrdsl.search.bilevel), then the weight
step on the training batch.

Reproducibility: every random draw comes from generators seeded by (space.search.seed, epoch):
the supernet's initialisation from (seed, "init"), each epoch's data order from the loaders'
(seed, epoch), and torch/numpy/python's global RNGs (augmentation, power-iteration draws) are
reseeded from (seed, epoch) at the start of every epoch. A checkpoint holds the model (buffers
included: BN statistics, power-iteration vectors), both optimisers, the RNG states, the epoch
records and, after Ctrl-C, the step reached and the epoch's running sums. Resuming mid-epoch
rebuilds that epoch's loader and skips its first k*batch indices without loading them, so the
rest of the epoch sees exactly the samples and random draws it would have.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attrs import define, field
from torch.utils.data import DataLoader, Dataset, Sampler

import msrdsl
from msrdsl.data import dataset_info, make_loader, search_split
from msrdsl.data.common import mix_seed
from msrdsl.errors import DivergedError, RunError
from msrdsl.genotype import Genotype
from msrdsl.ir import OptimizerSpec, Space
from msrdsl.search import model as sn
from msrdsl.search.bilevel import Architect, NonFiniteLoss, _grads
from msrdsl.search.distributed import Dist, state_digest
from msrdsl.search.progress import NullReporter, Reporter
from msrdsl.search.record import epoch_scores, final_genotype
from msrdsl.search.rundir import RunDir, space_difference, weights_to_keep

CHECKPOINT_FORMAT = 1


class SearchInterrupted(Exception):
    """The run stopped on Ctrl-C after saving a checkpoint; `resume_hint` says how to go on."""

    def __init__(self, run_dir: Path, epoch: int, step: int):
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


@define
class SearchResult:
    run_dir: Path
    epoch: int
    rule: str
    genotype: Genotype
    records: list[dict[str, Any]]
    final: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Small pieces


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {device}: CUDA is not available on this machine",
                       hint="use --device cpu (or auto)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise RunError(f"unknown device '{device}'", hint="use auto, cpu or cuda") from None


def learning_rate(spec: OptimizerSpec, epoch: int, epochs: int) -> float:
    """DARTS' schedule: cosine from lr at epoch 0 towards lr_min (CosineAnnealingLR)."""
    if spec.schedule == "constant":
        return spec.lr
    return spec.lr_min + (spec.lr - spec.lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def make_optimizer(spec: OptimizerSpec, params: Sequence[torch.nn.Parameter]
                   ) -> torch.optim.Optimizer:
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, betas=tuple(spec.betas),
                            weight_decay=spec.weight_decay)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


class _SkipSampler(Sampler[int]):
    """A sampler's order without its first `skip` indices (never loaded)."""

    def __init__(self, base: Sampler[int], skip: int):
        self.base, self.skip = base, skip

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip:])


def epoch_loader(dataset: Dataset, *, batch: int, shuffle: bool, seed: int, epoch: int, dist: Dist,
                 workers: int, skip_batches: int = 0) -> DataLoader:
    """make_loader's loader for (seed, epoch) and this rank, starting at batch `skip_batches`."""
    loader = make_loader(dataset, batch_size=batch, shuffle=shuffle, seed=seed, epoch=epoch,
                         rank=dist.rank, world_size=dist.world_size, num_workers=workers)
    if skip_batches == 0:
        return loader
    return DataLoader(dataset, batch_size=loader.batch_size,
                      sampler=_SkipSampler(loader.sampler, skip_batches * batch),
                      drop_last=loader.drop_last, num_workers=loader.num_workers,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator)


class _ArchBatches:
    """The validation batches of the architecture steps: the valid set cycled, shuffled anew each
    pass; batch p of epoch e is a pure function of (seed, e, p)."""

    def __init__(self, dataset: Dataset, *, batch: int, seed: int, epoch: int, dist: Dist,
                 workers: int, position: int):
        self.dataset, self.batch, self.dist, self.workers = dataset, batch, dist, workers
        self.seed = mix_seed("arch-valid", seed, epoch)
        self.per_pass = len(epoch_loader(dataset, batch=batch, shuffle=True, seed=self.seed,
                                         epoch=0, dist=dist, workers=0))
        self.position = position
        self._it: Iterator | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None or self.position % self.per_pass == 0:
            passes, skip = divmod(self.position, self.per_pass)
            self._it = iter(epoch_loader(self.dataset, batch=self.batch, shuffle=True,
                                         seed=self.seed, epoch=passes, dist=self.dist,
                                         workers=self.workers, skip_batches=skip))
        self.position += 1
        return next(self._it)


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at the next step boundary and save.

    The first signal only sets a flag, so no optimiser step is ever cut in half; a second one
    interrupts at once (the last checkpoint on disk stays valid).
    """

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------------
# The search


@define
class _EpochSums:
    """Running sums of one epoch's training, identical on every rank (summed over ranks)."""

    loss: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0


@define
class Search:
    space: Space
    run: RunDir
    device: torch.device
    dist: Dist
    reporter: Reporter = field(factory=NullReporter)
    workers: int = 0
    command: list[str] = field(factory=list)

    # built by setup()
    net: Any = None
    weights: list = field(factory=list)
    alphas: list = field(factory=list)
    optimizer: Any = None
    arch_optimizer: Any = None
    architect: Any = None
    train_set: Any = None
    valid_set: Any = None
    records: list = field(factory=list)
    mix_tables: Any = None

    @property
    def mix(self) -> str:
        return sn.mix_kind(self.space)

    @property
    def seed(self) -> int:
        return self.space.search.seed

    @property
    def batch(self) -> int:
        """This rank's batch: the space's batch split over the ranks."""
        return self.space.search.batch // self.dist.world_size

    # -- building ---------------------------------------------------------------------------

    def setup(self) -> None:
        s = self.space
        ds = s.dataset
        info = dataset_info(ds.name, root=ds.root, input_size=ds.input_size)
        self.train_set, self.valid_set = search_split(
            ds.name, root=ds.root, input_size=ds.input_size, split=float(ds.split),
            seed=self.seed, augment=s.search.augment)
        seed_everything(mix_seed("init", self.seed))
        self.net = sn.build_supernet(s, info, self.device)
        self.weights = sn.weight_parameters(self.net)
        self.alphas = sn.arch_parameters(self.net) if self.mix == "alpha" else []
        # Replicas start identical even if a compiler drew from an unseeded generator.
        self.dist.broadcast_parameters([*self.weights, *self.alphas])
        self.dist.broadcast_buffers(self.net)
        self.optimizer = make_optimizer(s.search.optimizer, self.weights)
        if self.alphas:
            self.arch_optimizer = make_optimizer(s.search.arch.optimizer, self.alphas)
            self.architect = Architect(self.weights, self.alphas, self.arch_optimizer,
                                       s.search.arch.order, self.dist)

    def steps_per_epoch(self) -> int:
        return math.ceil(math.ceil(len(self.train_set) / self.dist.world_size) / self.batch)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, epoch: int, step: int, sums: _EpochSums | None,
                   valid_losses: list[float]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "space": self.run.stored_space(),
            "epoch": epoch,
            "step": step,
            "sums": None if sums is None else [sums.loss, sums.correct, sums.count, sums.seconds],
            "records": list(self.records),
            "valid_losses": list(valid_losses),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "arch_optimizer": (None if self.arch_optimizer is None
                               else self.arch_optimizer.state_dict()),
            "mix_tables": self.mix_tables,
            "rng": rng_state(self.device),
            "world_size": self.dist.world_size,
        }

    def restore(self, state: dict[str, Any]) -> tuple[int, int, _EpochSums | None]:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"'{self.run.checkpoint_file}' was written by another version of msrdsl",
                           hint="start the run over with --force")
        step = state["step"]
        if step and state.get("world_size", 1) != self.dist.world_size:
            raise RunError(
                f"the checkpoint stopped mid-epoch with {state['world_size']} processes; resume it "
                f"with the same number (now {self.dist.world_size})")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.arch_optimizer is not None and state["arch_optimizer"] is not None:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.records = list(state["records"])
        self.mix_tables = state.get("mix_tables")
        if self.mix_tables is not None:
            sn.set_mix_weights(self.net, {t: v.to(self.device) for t, v in self.mix_tables.items()})
        set_rng_state(state["rng"], self.device)
        sums = None if state["sums"] is None else _EpochSums(*state["sums"])
        return state["epoch"], step, sums

    # -- one epoch --------------------------------------------------------------------------

    def refresh_mix(self) -> None:
        from msrdsl.criteria import ScoreContext, mix_weights

        tables = mix_weights(ScoreContext(self.space, self.net))
        self.mix_tables = {t: v.detach().to("cpu") for t, v in tables.items()}
        sn.set_mix_weights(self.net, {t: v.to(self.device) for t, v in tables.items()})

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def train_epoch(self, epoch: int, start_step: int, sums: _EpochSums, stop: _StopRequest
                    ) -> tuple[_EpochSums, int | None]:
        """Train one epoch from `start_step`; returns the sums and, if every rank agreed to stop
        before the epoch's end, the number of steps done."""
        s = self.space.search
        lr = learning_rate(s.optimizer, epoch, s.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.arch_optimizer is not None:
            arch_lr = learning_rate(s.arch.optimizer, epoch, s.epochs)
            for group in self.arch_optimizer.param_groups:
                group["lr"] = arch_lr
        loader = epoch_loader(self.train_set, batch=self.batch, shuffle=True, seed=self.seed,
                              epoch=epoch, dist=self.dist, workers=self.workers,
                              skip_batches=start_step)
        arch_batches = None
        if self.architect is not None:
            arch_batches = _ArchBatches(self.valid_set, batch=self.batch, seed=self.seed,
                                        epoch=epoch, dist=self.dist, workers=self.workers,
                                        position=start_step)
        steps = self.steps_per_epoch()
        self.reporter.epoch_start(epoch, steps, start_step)
        self.net.train()
        started = time.perf_counter()
        base_seconds = sums.seconds
        for step, (x, y) in enumerate(loader, start=start_step):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.mix == "score" and self.space.supernet.refresh == "step":
                self.refresh_mix()
            try:
                if arch_batches is not None:
                    xv, yv = arch_batches.next()
                    self.architect.step(self.loss, (x, y), (xv.to(self.device), yv.to(self.device)),
                                        lr, self.optimizer)
                loss_sum, correct, count, stops = self.weight_step(x, y, stop.requested)
            except NonFiniteLoss as err:
                raise self._diverged(err.which, err.value, epoch, step, steps) from None
            sums.loss += loss_sum
            sums.correct += correct
            sums.count += count
            sums.seconds = base_seconds + time.perf_counter() - started
            self.reporter.step(loss_sum / count, correct / count)
            if stops > 0 and step + 1 < steps:
                return sums, step + 1
        return sums, None

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, stop: bool) -> tuple[float, ...]:
        """Forward, backward, average over ranks, clip, SGD step; returns summed figures."""
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        grads = _grads(loss, self.weights)
        n = float(y.numel())
        correct = float((logits.argmax(dim=1) == y).sum().item())
        loss_sum, correct, count, stops = self.dist.average_(
            grads, [loss.item() * n, correct, n, float(stop)])
        if not math.isfinite(loss_sum):
            raise NonFiniteLoss("the training loss", loss_sum / count)
        for w, g in zip(self.weights, grads):
            w.grad = g
        clip = self.space.search.grad_clip
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.weights, clip)
        self.optimizer.step()
        return loss_sum, correct, count, stops

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        self.net.eval()
        loader = epoch_loader(self.valid_set, batch=self.batch, shuffle=False, seed=self.seed,
                              epoch=0, dist=self.dist, workers=self.workers)
        loss_sum = correct = count = 0.0
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = self.net(x)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(dim=1) == y).sum())
            count += float(y.numel())
        self.net.train()
        loss_sum, correct, count = self.dist.sum([loss_sum, correct, count])
        return loss_sum / count, correct / count

    def valid_batches(self):
        """Every validation batch, in order (for criteria that look at data)."""
        loader = make_loader(self.valid_set, batch_size=self.space.search.batch, shuffle=False,
                             seed=self.seed, epoch=0)
        for x, y in loader:
            yield x.to(self.device), y

    def _diverged(self, which: str, value: float, epoch: int, step: int, steps: int
                  ) -> DivergedError:
        kept = (f"the last good checkpoint (end of epoch {epoch - 1}) is kept in '{self.run.path}'"
                if epoch > 0 else "no epoch had finished, so there is no checkpoint to keep")
        return DivergedError(
            f"the search diverged: {which} is {value} at epoch {epoch}, step {step + 1} of {steps}",
            hint=f"{kept}; lower the learning rate (e.g. --set search.optimizer.lr=...) or the "
                 f"gradient clip and start over with --force")

    # -- the whole run ----------------------------------------------------------------------

    def run_epochs(self, first_epoch: int, first_step: int, sums: _EpochSums | None) -> None:
        s = self.space
        valid_losses = [r["valid_loss"] for r in self.records]
        with _StopRequest() as stop:
            for epoch in range(first_epoch, s.search.epochs):
                if first_step == 0 or epoch != first_epoch:
                    seed_everything(mix_seed("epoch", self.seed, epoch))
                    sums = _EpochSums()
                    start = 0
                    if self.mix == "score" and s.supernet.refresh == "epoch":
                        self.refresh_mix()
                else:
                    start = first_step
                assert sums is not None
                sums, step = self.train_epoch(epoch, start, sums, stop)
                if step is not None:
                    if self.dist.is_main:
                        self.run.save_checkpoint(self.checkpoint(epoch, step, sums, valid_losses))
                    raise SearchInterrupted(self.run.path, epoch, step)
                record = self.end_epoch(epoch, sums)
                valid_losses.append(record["valid_loss"])
                self.save_epoch(epoch, valid_losses)
                if epoch + 1 < s.search.epochs and self.dist.sum([float(stop.requested)])[0] > 0:
                    raise SearchInterrupted(self.run.path, epoch + 1, 0)

    def end_epoch(self, epoch: int, sums: _EpochSums) -> dict[str, Any]:
        started = time.perf_counter()
        # Each rank's BN statistics saw only its shard; rank 0's become everyone's.
        self.dist.broadcast_buffers(self.net)
        valid_loss, valid_acc = self.validate()
        if not math.isfinite(valid_loss):
            raise self._diverged("the validation loss", valid_loss, epoch,
                                 self.steps_per_epoch() - 1, self.steps_per_epoch())
        s = self.space.search
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": sums.loss / sums.count,
            "train_acc": sums.correct / sums.count,
            "valid_loss": valid_loss,
            "valid_acc": valid_acc,
            "lr": learning_rate(s.optimizer, epoch, s.epochs),
        }
        if self.alphas:
            record["arch_lr"] = learning_rate(s.arch.optimizer, epoch, s.epochs)
        rules, scores, genotype = epoch_scores(self.space, self.net, self.valid_batches)
        record["seconds"] = sums.seconds + time.perf_counter() - started
        record["rules"] = rules
        record["scores"] = scores
        self._check_agreement(epoch, rules)
        self.records.append(record)
        self.reporter.epoch_end(record, genotype)
        return record

    def _check_agreement(self, epoch: int, rules: dict[str, Any]) -> None:
        """Every rank must hold the same replica and derive the same genotypes."""
        if not self.dist.enabled:
            return
        import json

        mine = (state_digest(self.net, self.alphas),
                json.dumps({k: v["genotype"] for k, v in rules.items()}, sort_keys=True))
        everyone = self.dist.gather_objects(mine)
        if any(other != everyone[0] for other in everyone):
            which = "weights" if any(o[0] != everyone[0][0] for o in everyone) else "genotypes"
            raise RunError(f"the {len(everyone)} processes disagree on the {which} after epoch "
                           f"{epoch}; this is a bug in msrdsl's multi-process search")

    def save_epoch(self, epoch: int, valid_losses: list[float]) -> None:
        """Weights, then the checkpoint, then epochs.jsonl, then pruning: each step is atomic
        and a kill between any two is repaired by the next resume."""
        if not self.dist.is_main:
            return
        sel = self.space.select.epoch
        self.run.save_weights(epoch, self.net.state_dict())
        self.run.save_checkpoint(self.checkpoint(epoch + 1, 0, None, valid_losses))
        self.run.write_epochs(self.records)
        self.run.prune_weights(weights_to_keep(valid_losses, sel.rule, sel.patience))

    def finish(self) -> SearchResult:
        sel = self.space.select.epoch
        valid_losses = [r["valid_loss"] for r in self.records]
        from msrdsl.derive import epoch_choice

        epoch = epoch_choice(valid_losses, sel.rule, sel.patience)
        rule = self.space.selected_rule.name
        genotype, text, final = final_genotype(self.space, self.records, epoch, rule,
                                               str(self.run.path), self.dist.world_size)
        if self.dist.enabled:
            # Each rank's own view, so the agreement can be checked from the file alone.
            import json

            mine = {"state": state_digest(self.net, self.alphas),
                    "genotype": json.dumps(final["genotype"], sort_keys=True)}
            final["replicas"] = self.dist.gather_objects(mine)
        if self.dist.is_main:
            self.run.write_final(text, final)
        return SearchResult(self.run.path, epoch, rule, genotype, list(self.records), final)


# ---------------------------------------------------------------------------------------------
# Entry point


def default_out_dir(space: Space) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{space.name}-{stamp}"


def _prepare(run: RunDir, space_text: str, *, resume: bool, force: bool) -> tuple[str, str | None]:
    """Decide what to do with the folder: 'new' or 'resume', and the line saying so."""
    if force:
        if run.exists():
            run.clear()
        return "new", None
    if run.is_run():
        stored = run.stored_space()
        if stored is not None and stored != space_text:
            diff = space_difference(stored, space_text, f"{run.path}/space.space", "this space")
            raise RunError(f"'{run.path}' holds a search of a different space:\n{diff}",
                           hint="use --out for a new folder, or --force to start this one over")
    if run.is_finished():
        raise RunError(f"'{run.path}' holds a finished search",
                       hint="use --force to start it over, or --out for a new folder")
    if run.is_run():
        if run.has_checkpoint():
            return "resume", None
        return "new", f"'{run.path}' has no checkpoint yet: starting the search over"
    if resume:
        raise RunError(f"nothing to resume: '{run.path}' holds no search",
                       hint="leave out --resume to start a new search there")
    if run.exists() and any(run.path.iterdir()):
        raise RunError(f"'{run.path}' exists and is not a search run folder",
                       hint="choose another folder with --out")
    return "new", None


def run_info(space: Space, device: torch.device, dist: Dist, command: list[str]) -> dict[str, Any]:
    return {
        "space": space.name,
        "seed": space.search.seed,
        "msrdsl": msrdsl.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "command": command,
        "world_size": dist.world_size,
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def run_search(space: Space, out_dir: str | Path | None = None, *, device: str = "auto",
               resume: bool = False, force: bool = False, reporter: Reporter | None = None,
               workers: int = 0, command: Sequence[str] | None = None,
               dist: Dist | None = None) -> SearchResult:
    """Run (or resume) the search `space` describes, writing its run folder; see rundir.py.

    Raises RunError for an unusable folder, DivergedError for a NaN/inf loss, and
    SearchInterrupted after Ctrl-C has saved a checkpoint.
    """
    from msrdsl.search import distributed

    torch_device = resolve_device(device)
    own_dist = dist is None
    if dist is None:
        dist = distributed.from_environment(torch_device)
    if dist.enabled and torch_device.type == "cuda":
        torch_device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(torch_device)
    reporter = reporter if (reporter is not None and dist.is_main) else NullReporter()
    command = list(command) if command is not None else list(sys.argv)
    try:
        return _run(space, out_dir, torch_device, dist, resume=resume, force=force,
                    reporter=reporter, workers=workers, command=command)
    finally:
        reporter.close()
        if own_dist:
            dist.close()


def _run(space: Space, out_dir, device: torch.device, dist: Dist, *, resume: bool, force: bool,
         reporter: Reporter, workers: int, command: list[str]) -> SearchResult:
    from msrdsl.lang import format_space

    if space.search.batch % dist.world_size:
        raise RunError(f"batch {space.search.batch} does not split evenly over "
                       f"{dist.world_size} processes", space.where("search.batch"))
    space_text = format_space(space)
    # Rank 0 decides the folder and what to do with it; the others follow or fail alike.
    decision: Any = None
    if dist.is_main:
        try:
            path = Path(out_dir) if out_dir is not None else default_out_dir(space)
            run = RunDir(path)
            mode, note = _prepare(run, space_text, resume=resume, force=force)
            run.create()
            if mode == "new":
                run.write_space(space_text)
            decision = ("ok", str(path), mode, note)
        except RunError as err:
            decision = ("error", err.message, err.hint, None)
            dist.broadcast_object(decision)
            raise
    decision = dist.broadcast_object(decision)
    if decision[0] == "error":
        raise RunError(decision[1], hint=decision[2])
    _, path, mode, note = decision
    run = RunDir(path)
    search = Search(space, run, device, dist, reporter, workers, command)
    search.setup()

    epoch, step, sums = 0, 0, None
    resumed = note
    if mode == "resume":
        state = run.load_checkpoint(map_location=device)
        epoch, step, sums = search.restore(state)
        if dist.is_main:
            # Repair what a kill between two writes may have left: the records, the weights,
            # the temporary file of an interrupted write.
            run.remove_temporaries()
            run.write_epochs(search.records)
            sel = space.select.epoch
            losses = [r["valid_loss"] for r in search.records]
            if losses:
                run.prune_weights(weights_to_keep(losses, sel.rule, sel.patience))
            info = run.read_run_info()
            info.setdefault("resumed", []).append(
                {"time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "epoch": epoch, "step": step, "command": command})
            run.write_run_info(info)
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        resumed = f"resuming the search in '{run.path}' from {where}"
    elif dist.is_main:
        run.write_run_info(run_info(space, device, dist, command))

    reporter.start(epochs=space.search.epochs, first_epoch=epoch, run_dir=str(run.path),
                   resumed=resumed)
    if epoch < space.search.epochs:
        search.run_epochs(epoch, step, sums)
    result = search.finish()
    dist.barrier()
    files = {"run_dir": str(run.path), "final.genotype": str(run.final_genotype),
             "final.json": str(run.final_json), "epochs.jsonl": str(run.epochs_file)}
    reporter.final(result.final, result.genotype, files)
    return result
