"""The evaluation recipes as pure functions of (settings, epoch): lr, drop-path, loss.

CIFAR-10 (DARTS `train.py`, MSR-DARTS section 4.2): SGD, cosine from `lr` to `lr_min` over the
epochs, drop-path probability raised linearly, auxiliary tower, gradient clipping, cutout.
ImageNet (DARTS `train_imagenet.py`, MSR-DARTS Appendix A): the same, plus label smoothing and a
linear warm-up of the learning rate over the first `warmup` epochs.

Every value is a function of the epoch alone, so a resumed run recomputes it instead of storing
a scheduler's state, and runs on any number of processes agree on it.
"""

from __future__ import annotations

import math

import torch
from attrs import frozen

from msrdsl.ir import EvaluateSpec


@frozen
class Recipe:
    """How the evaluation network trains: everything `evaluate { ... }` says about optimisation."""

    epochs: int
    batch: int
    seed: int
    optimizer: str
    lr: float
    lr_min: float
    schedule: str
    momentum: float
    betas: tuple[float, float]
    weight_decay: float
    grad_clip: float
    cutout: int
    drop_path: float
    auxiliary: float
    label_smoothing: float
    warmup: int

    @classmethod
    def from_spec(cls, spec: EvaluateSpec) -> Recipe:
        opt = spec.optimizer
        betas = tuple(float(b) for b in opt.betas) + (0.999,) * max(0, 2 - len(opt.betas))
        return cls(
            epochs=spec.epochs, batch=spec.batch, seed=spec.seed, optimizer=opt.kind,
            lr=float(opt.lr), lr_min=float(opt.lr_min), schedule=opt.schedule,
            momentum=float(opt.momentum), betas=(betas[0], betas[1]),
            weight_decay=float(opt.weight_decay), grad_clip=float(spec.grad_clip),
            cutout=spec.cutout, drop_path=float(spec.drop_path), auxiliary=float(spec.auxiliary),
            label_smoothing=float(spec.label_smoothing), warmup=spec.warmup,
        )

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based `epoch`: linear warm-up, then cosine (or constant).

        Warm-up epoch e < warmup trains at lr * (e + 1) / warmup, as PC-DARTS' ImageNet script
        does; afterwards the cosine runs from lr at epoch `warmup` towards lr_min at epoch
        `epochs`, which with no warm-up is DARTS' CosineAnnealingLR(T_max=epochs) stepped once per
        epoch.
        """
        if epoch < self.warmup:
            return self.lr * (epoch + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        span = max(self.epochs - self.warmup, 1)
        t = min(epoch - self.warmup, span)
        return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * t / span)) / 2

    def drop_path_at(self, epoch: int) -> float:
        """DARTS' ramp: drop_path * epoch / epochs (0 in the first epoch)."""
        return self.drop_path * epoch / self.epochs

    def criterion(self) -> torch.nn.Module:
        """Cross-entropy, with label smoothing when the recipe asks for it (ImageNet)."""
        return torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas,
                                    weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    def summary(self) -> str:
        parts = [f"{self.epochs} epochs", f"batch {self.batch}",
                 f"{self.optimizer} lr {self.lr:g} {self.schedule} to {self.lr_min:g}"]
        if self.warmup:
            parts.append(f"warm-up {self.warmup} epochs")
        parts.append(f"wd {self.weight_decay:g}")
        if self.grad_clip:
            parts.append(f"clip {self.grad_clip:g}")
        if self.cutout:
            parts.append(f"cutout {self.cutout}")
        if self.drop_path:
            parts.append(f"drop-path to {self.drop_path:g}")
        if self.auxiliary:
            parts.append(f"auxiliary {self.auxiliary:g}")
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        return ", ".join(parts)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
