"""Multi-process search under torchrun: process group, gradient averaging, agreement checks.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `msrdsl search` is world size 1 and
never touches torch.distributed. Every rank runs the same loop on its shard of each epoch's
order; after every backward the gradients are averaged by one all-reduce of a flat buffer.

DistributedDataParallel is not used: its hooks average the gradients of one backward, but the
second-order DARTS step takes four gradients per architecture step (the unrolled weights, the
validation gradient, and the two finite-difference ones) that must each be averaged before the
next is taken, so the averaging is written out here, once, for all of them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from msrdsl.errors import RunError


class Dist:
    """This process's place in the job: rank, world size, and the collectives the loop needs."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 initialized_here: bool = False, device: torch.device | str = "cpu"):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._initialized_here = initialized_here
        # Where collectives of plain numbers run: NCCL reduces CUDA tensors only.
        self.device = torch.device(device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a single process) ---------------------------------------------

    def average_(self, tensors: Sequence[torch.Tensor], extra: Sequence[float] = ()) -> list[float]:
        """Average `tensors` in place over the ranks in one all-reduce; sum the `extra` numbers.

        `extra` rides in the same buffer (e.g. the loss and a stop flag), so agreeing on them
        costs no further round trip. Returns the summed extras.
        """
        if not self.enabled:
            return [float(x) for x in extra]
        device = tensors[0].device if tensors else self.device
        dtype = tensors[0].dtype if tensors else torch.float32
        flat = torch.cat([t.reshape(-1) for t in tensors]
                         + [torch.tensor(list(extra), dtype=torch.float64).to(device, dtype)])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t)).div_(self.world_size)
            offset += n
        return flat[offset:].double().tolist()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sum numbers over the ranks (float64, so counts and loss sums stay exact)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BN running statistics, power-iteration vectors)."""
        if not self.enabled:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def broadcast_parameters(self, params: Iterable[torch.Tensor]) -> None:
        if not self.enabled:
            return
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self._initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: torch.device) -> Dist:
    """The job torchrun describes in the environment (world size 1 without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before any collective: NCCL works on the current device
    try:
        dist.init_process_group(backend=backend,
                                device_id=device if device.type == "cuda" else None)
    except Exception as err:  # a rendezvous that fails is a setup problem, not a bug in msrdsl
        raise RunError(f"cannot join the torchrun job (rank {rank} of {world_size}, {backend}): "
                       f"{err}") from None
    return Dist(rank, world_size, local_rank, initialized_here=True, device=device)


def state_digest(module: torch.nn.Module, extra: Iterable[torch.Tensor] = ()) -> str:
    """A hash of every parameter and buffer, bit for bit: equal digests = identical replicas."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in [*module.state_dict().items(), *(("extra", x) for x in extra)]:
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
