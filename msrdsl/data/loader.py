"""Data loaders whose order is a pure function of (seed, epoch), optionally sharded by rank."""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from msrdsl.data.common import mix_seed


class EpochSampler(Sampler[int]):
    """One epoch's indices: a permutation fixed by (seed, epoch), this rank's share of it.

    With world_size > 1 the global order is padded by wrapping around to a multiple of
    world_size (as DistributedSampler does), so every rank gets the same number of samples and
    data-parallel steps stay in lock-step; a few samples then appear twice in that epoch.
    """

    def __init__(
        self, size: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size

    def global_order(self) -> torch.Tensor:
        """The whole epoch's order, identical on every rank."""
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(mix_seed("order", self.seed, self.epoch))
        return torch.randperm(self.size, generator=generator)

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self):
        order = self.global_order()
        if self.world_size > 1 and self.size > 0:
            total = len(self) * self.world_size
            order = order.repeat(math.ceil(total / self.size))[:total]
            order = order[self.rank :: self.world_size]
        return iter(order.tolist())


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader for one epoch: order from (seed, epoch), rank's shard, seeded workers.

    With num_workers=0 (the default) augmentation draws from torch's global RNG in this process,
    so seeding torch before iterating replays the epoch exactly. With workers, each worker is
    seeded from (seed, epoch, rank, worker id) instead: still reproducible, but a different stream.
    """
    sampler = EpochSampler(
        len(dataset), shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size
    )
    init = functools.partial(_seed_worker, seed=seed, epoch=epoch, rank=rank) if num_workers > 0 else None
    # DataLoader draws a base seed for workers when an iterator starts; a private generator keeps
    # that draw off the global RNG, which belongs to the caller (augmentation, dropout, init).
    base = torch.Generator().manual_seed(mix_seed("loader", seed, epoch))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        worker_init_fn=init,
        generator=base,
    )


def _seed_worker(worker_id: int, *, seed: int, epoch: int, rank: int = 0) -> None:
    """Seed every RNG a transform might use from (seed, epoch, rank, worker id): ranks augment
    their shards independently."""
    worker_seed = mix_seed("worker", seed, epoch, rank, worker_id)
    torch.manual_seed(worker_seed)
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)
