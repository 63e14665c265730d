"""torch.distributed plumbing: the process group from torchrun's variables, reductions, sync BN.

`torchrun --nproc_per_node N -m msrdsl train ...` (and multi-node torchrun) sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `Dist.from_env` joins that group (gloo on
the CPU, nccl on CUDA). Without those variables everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from attrs import define

from msrdsl.errors import RunError


@define
class Dist:
    """Where this process stands: rank, world size, local rank; whether it owns the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_kind: str) -> Dist:
        """Join torchrun's process group if the environment names one; else one process."""
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return cls()
        rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), local, owns_group=False)
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        try:
            dist.init_process_group(backend=backend, init_method="env://",
                                    rank=rank, world_size=world)
        except (RuntimeError, ValueError) as err:
            raise RunError(f"cannot join the process group ({backend}, rank {rank} of {world}): "
                           f"{err}", hint="start several processes with torchrun") from None
        return cls(rank, world, local, owns_group=True)

    @classmethod
    def from_group(cls) -> Dist:
        """The already initialised default group (tests spawn processes themselves)."""
        if not dist.is_initialized():
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(),
                   _env_int("LOCAL_RANK", dist.get_rank()), owns_group=False)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over all processes (a new tensor; the input is left alone)."""
        out = values.clone()
        if self.enabled:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any process."""
        if not self.enabled:
            return flag
        return bool(self.all_sum(torch.tensor([float(flag)], device=self._device())).item() > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's picklable `obj`, by rank, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """A picklable object from rank `src` to every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) everywhere, so every rank holds one model."""
        if not self.enabled:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def agree(self, error: BaseException | None) -> None:
        """Raise everywhere if any rank failed, so no rank waits on a collective that never comes.

        Every rank calls this at the same point with its own error or None; the first failed
        rank's error is re-raised on all of them (other ranks get its message).
        """
        if not self.enabled:
            if error is not None:
                raise error
            return
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, None if error is None else _portable(error))
        for item in gathered:
            if item is not None:
                if error is not None:
                    raise error
                raise item


def _portable(error: BaseException) -> BaseException:
    from msrdsl.errors import MsrdslError

    if isinstance(error, MsrdslError):
        return error
    return RunError(f"another process failed: {type(error).__name__}: {error}")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise RunError(f"environment variable {name}={text!r} is not a whole number") from None


# ---------------------------------------------------------------------------------------------
# Synchronised batch norm


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce: the sum over processes forward, and (since every rank's output
    is that sum) the sum of the output gradients over processes backward."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class CPUSyncBatchNorm(torch.nn.BatchNorm2d):
    """Batch norm over the global batch of all processes, for any backend (gloo on the CPU too).

    torch.nn.SyncBatchNorm runs on GPUs only. This one all-reduces the per-channel sums with a
    differentiable all-reduce, whose backward all-reduces the gradients of those sums: each
    rank's input then gets the gradient of the sum of all ranks' losses,
    which DDP's averaging turns into the gradient of the global-batch loss, as one process
    training the whole batch would compute. The parameters and buffers are BatchNorm2d's, so
    state dicts move freely between the two.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        # Statistics in at least float32 whatever autocast feeds in, as torch's batch_norm does.
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        channels = x.shape[1]
        dims = (0, 2, 3)
        count = torch.full((1,), x.numel() // channels, dtype=x.dtype, device=x.device)
        # Two passes (mean, then centred squares) instead of E[x^2] - E[x]^2, which cancels badly.
        totals = _all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        var = _all_reduce(centred.pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(
                    self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def convert_sync_batchnorm(module: torch.nn.Module, device_kind: str) -> torch.nn.Module:
    """Every BatchNorm2d synchronised across processes: torch's on GPUs, ours elsewhere."""
    if device_kind == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: torch.nn.Module) -> torch.nn.Module:
    out = module
    if isinstance(module, torch.nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
