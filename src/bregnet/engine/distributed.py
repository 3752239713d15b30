"""Distributed data-parallel set-up for ``torchrun``: NCCL on GPUs, gloo on CPUs.

``torchrun --nproc-per-node N -m bregnet.cli train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them everything runs as a single process and these helpers are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import resolve_device

__all__ = ["DistInfo", "all_reduce_mean", "barrier", "cleanup", "setup_distributed"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; pick this rank's device
    (:func:`bregnet.device.resolve_device`: UsageError for a device this machine lacks)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank, world, local)
    dev = resolve_device(device)
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity when not distributed)."""
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
