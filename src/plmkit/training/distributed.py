"""Distributed data parallel through `torchrun`: one process per device, gloo on CPU, NCCL on GPU.

`torchrun --nproc_per_node 2 -m plmkit pretrain --config ...` sets RANK / WORLD_SIZE / LOCAL_RANK; the trainer
reads them here. Multi-node is torchrun's rendezvous (`--nnodes 2 --rdzv-endpoint host:port`); nothing changes in
plmkit. Every rank builds the same global batch order and takes its slice (see `training.data`), gradients are
averaged by DDP, and only rank 0 writes logs, checkpoints and the final model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
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


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (a no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """`obj` of every rank, in rank order (e.g. each rank's RNG state for a checkpoint)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
