"""Data-parallel fine-tuning under `torchrun`: which rank this is, its shard of a batch, DDP wrapping, and masks
kept identical on every rank.

prunekit never starts processes; it joins the default process group that `torchrun` describes in the environment
(`join_from_env`, gloo on CPU, nccl when CUDA is there), or uses one the caller initialised. Without a group (or with
one process) every function here is a no-op, so the single-process path is unchanged.

How the training stages (`gmp`, `finetune`) use it:
  - every rank builds the same deterministic batch and keeps its slice `batch[rank::world]` (`shard`), so the union
    over ranks is exactly the single-process batch;
  - the forward / backward runs through `DistributedDataParallel` (`wrap`), which broadcasts rank 0's parameters and
    buffers (masks, BatchNorm statistics) at wrap time and averages gradients, so weights stay identical;
  - after every mask update, `broadcast_masks` copies rank 0's keep masks to all ranks and re-zeroes the pruned
    entries: the masks are identical by construction, not by the luck of bitwise-equal scores;
  - only rank 0 writes checkpoints and shows progress (`is_main`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.masks import KeepMask


def is_distributed() -> bool:
    """True when a default process group with more than one process is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes files and shows progress (rank 0, or the only one)."""
    return rank() == 0


def join_from_env() -> bool:
    """Join the default process group when `torchrun` started this process (WORLD_SIZE > 1) and none exists yet.

    Uses gloo on CPU and nccl with CUDA. Returns True when running distributed afterwards.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return is_distributed()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    import torch.distributed as dist

    if is_distributed():
        dist.barrier()


def shard(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """This rank's slice `t[rank::world]` of every tensor of a batch (the whole batch when not distributed)."""
    if not is_distributed():
        return batch
    r, w = rank(), world_size()
    return tuple(t[r::w] for t in batch)


def wrap(model: nn.Module) -> nn.Module:
    """`DistributedDataParallel(model)` when distributed (rank 0's weights and buffers broadcast now), else model."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    first = next(model.parameters(), None)
    ids = [first.device.index] if first is not None and first.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


@torch.no_grad()
def broadcast_module(module: nn.Module, *, parameters: bool = True) -> None:
    """Copy rank 0's parameters and buffers into this rank's `module` (e.g. a teacher that DDP does not wrap).

    `parameters=False` copies the buffers only: BatchNorm statistics, which each rank updates on its own shard
    between DDP's per-forward broadcasts (sync them before evaluating, so every rank reports the same accuracy).
    """
    if not is_distributed():
        return
    import torch.distributed as dist

    for t in (list(module.parameters()) if parameters else []) + list(module.buffers()):
        _broadcast_(t, dist)


@torch.no_grad()
def broadcast_masks(model: nn.Module) -> int:
    """Copy rank 0's keep masks to every rank; return how many masks differed here before the copy.

    Call it after every mask update (e.g. after `Pruner.step` returned True), then re-zero the pruned entries of the
    weights and the optimizer state (`finetune_loop.resync_masks` does both). The count is summed over ranks, so
    every rank sees the same number; non-zero means some rank had drifted (then broadcast the weights too).
    """
    if not is_distributed():
        return 0
    import torch.distributed as dist

    changed = 0
    for module in model.modules():
        if isinstance(module, KeepMask):
            before = module.mask.clone()
            _broadcast_(module.mask, dist)
            changed += int(not torch.equal(before, module.mask))
    total = torch.tensor([changed], dtype=torch.int64)
    dist.all_reduce(total)  # every rank learns whether any rank drifted, so all take the same next step
    return int(total.item())


@torch.no_grad()
def broadcast_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Copy rank 0's per-parameter optimizer state (e.g. Adam's moments) into this rank's optimizer."""
    if not is_distributed():
        return
    import torch.distributed as dist

    for group in optimizer.param_groups:
        for p in group["params"]:
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor):
                    _broadcast_(value, dist)


def _broadcast_(t: Tensor, dist: Any) -> None:
    # gloo cannot broadcast bool tensors: send them as uint8 and copy back in place.
    if t.dtype == torch.bool:
        buf = t.to(torch.uint8)
        dist.broadcast(buf, src=0)
        t.copy_(buf.to(torch.bool))
    else:
        dist.broadcast(t.data, src=0)
