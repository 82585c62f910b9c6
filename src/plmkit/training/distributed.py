"""Distributed training through `torchrun`: one process per device, gloo on CPU, NCCL on GPU; DDP, or FSDP.

`torchrun --nproc_per_node 2 -m plmkit pretrain --config ...` sets RANK / WORLD_SIZE / LOCAL_RANK; the trainer
reads them here. Multi-node is torchrun's rendezvous (`--nnodes 2 --node-rank i --rdzv-backend c10d
--rdzv-endpoint host:port`); nothing changes in plmkit. Every rank builds the same global batch order and takes its
slice (see `training.data`), and only rank 0 writes logs, checkpoints and the final model.

By default the model is replicated (DDP averages the gradients). With `impl.fsdp=true` it is sharded instead with
FSDP2 (`torch.distributed.fsdp.fully_shard`): each transformer block, then the root (embeddings and heads), so a
rank holds 1/world_size of the weights, gradients and AdamW state and gathers one block at a time. What leaves
the sharded model is always plain: checkpoints and saved model directories get the full weights under their own
names (gathered to rank 0's CPU), so nothing downstream knows FSDP was used; see `full_model_state`.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from plmkit.errors import PlmkitError

log = logging.getLogger(__name__)


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


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (e.g. whether rank 0 could read a checkpoint: all ranks must agree)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------------------------------------- FSDP
def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The elements of the outermost `nn.ModuleList`s: the models' stacks of blocks (`encoder.layers`,
    `decoder.layers`, ...), FSDP's units. It does not look inside a block, so a list within a block is not split
    further."""
    blocks: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                blocks.extend(b for b in child if any(True for _ in b.parameters()))
            else:
                visit(child)

    visit(model)
    return blocks


def shard_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """Shard `model` in place with FSDP2 over all ranks: every transformer block, then the root, which takes the
    rest (embeddings, norms, heads; a head tied to the embedding stays with it). Parameters move to `device` one
    unit at a time, so a model need not fit on one device whole. Returns the same module, now an FSDPModule
    whose parameters are DTensor shards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (info.world_size,))
    blocks = transformer_blocks(model)
    if not blocks:
        log.warning("impl.fsdp: no nn.ModuleList of blocks in %s; sharding it as one unit (every forward gathers "
                    "all of its weights)", type(model).__name__)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if info.is_main:
        log.info("impl.fsdp: %s sharded over %d processes in %d blocks + the root", type(model).__name__,
                 info.world_size, len(blocks))
    return model


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """FSDP2's counterpart of DDP's `no_sync`: skip the gradient reduce-scatter on accumulation micro-batches."""
    model.set_requires_gradient_sync(sync)


def meta_copy(model: nn.Module) -> nn.Module:
    """A plain copy of `model` whose parameters are on the meta device (no memory) and whose buffers are real:
    taken before sharding, it is the frame `materialize` fills with gathered full weights, since the sharded model
    itself is no longer a plain module. Ties through shared modules or shared parameters are kept."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


def materialize(skeleton: nn.Module, device: torch.device | str,
                state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A new plain module from `meta_copy`'s skeleton with its parameters allocated on `device` (tied ones once)
    and filled from `state_dict` when given (a full state dict, plain names, strict)."""
    model = copy.deepcopy(skeleton)
    new: dict[int, nn.Parameter] = {}
    for name, p in list(model.named_parameters(remove_duplicate=False)):
        owner, _, leaf = name.rpartition(".")
        if id(p) not in new:
            new[id(p)] = nn.Parameter(torch.empty_like(p, device=device), requires_grad=p.requires_grad)
        model.get_submodule(owner)._parameters[leaf] = new[id(p)]
    model.to(device)  # the buffers
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def _options(**kw: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: nn.Module, *, cpu_offload: bool) -> dict[str, torch.Tensor]:
    """The sharded model's full weights under their plain names (collective: every rank must call it). With
    `cpu_offload` only rank 0 gets them, on CPU (others get {}): for writing. Without, every rank gets them on
    its device: for evaluating a full copy."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=cpu_offload))


def _optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order: index i of `optimizer.state_dict()` is names[i]."""
    names = {p: n for n, p in model.named_parameters()}
    return [names[p] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state on rank 0 ({} elsewhere; collective), keyed by parameter index exactly as a
    plain `optimizer.state_dict()`, so that an FSDP checkpoint is the same file as any other."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_optimizer_names(model, optimizer))}
    return {"state": {index[name]: value for name, value in by_name["state"].items()},
            "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in by_name["param_groups"]]}


def optimizer_state_by_name(state: dict[str, Any], model: nn.Module,
                            optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The inverse of `full_optimizer_state`'s renaming: an index-keyed state_dict keyed by this model's names."""
    names = _optimizer_names(model, optimizer)
    saved = [len(g["params"]) for g in state["param_groups"]]
    if saved != [len(g["params"]) for g in optimizer.param_groups]:
        raise PlmkitError(f"the optimizer state has parameter groups of sizes {saved}, the model "
                          f"{[len(g['params']) for g in optimizer.param_groups]}")
    flat = list(chain.from_iterable(g["params"] for g in state["param_groups"]))
    if sorted(flat) != list(range(len(names))):
        raise PlmkitError("the optimizer state's parameter indexes do not match the model's parameters")
    return {"state": {names[i]: value for i, value in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any]) -> None:
    """Load full (unsharded) model and optimizer states, given on rank 0 ({} elsewhere), into the sharded model:
    rank 0 broadcasts each tensor and every rank keeps its shard (collective). The optimizer state is keyed by
    name (`optimizer_state_by_name`)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, model_state, options=_options(broadcast_from_rank0=True))
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=_options(broadcast_from_rank0=True))
