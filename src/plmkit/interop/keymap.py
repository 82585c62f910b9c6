"""The engine of a declarative key map: our parameter name -> the source tensor(s) it comes from.

A map is a dict of our names to `Key`s, with `{}` standing for the layer index. Several source tensors are
concatenated along dim 0 on import (fused Q/K/V, gate/up) and split on export by `split(config)`; `load` and `save`
are named functions that change a tensor's layout (GPT-2's Conv1D stores (in, out), a Linear (out, in)). Every
source key is accounted for: mapped, known to be redundant, or reported; so are missing keys and shape mismatches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Key:
    """Where one of our parameters lives in another format."""

    theirs: str | tuple[str, ...]  # their name(s); several are fused along dim 0, in this order
    load: Transform | None = None  # their layout -> ours, applied after fusing
    save: Transform | None = None  # our layout -> theirs, applied before splitting
    split: Callable[[ModelConfig], list[int]] | None = None  # rows of each of several `theirs`, for export

    @property
    def names(self) -> tuple[str, ...]:
        return (self.theirs,) if isinstance(self.theirs, str) else self.theirs


def transpose(t: torch.Tensor) -> torch.Tensor:
    """Conv1D (in, out) <-> Linear (out, in); its own inverse."""
    return t.t().contiguous()


def qkv_rows(config: ModelConfig) -> list[int]:
    """Rows of Q, K and V in a fused projection: H * D, then KV * D twice."""
    return [config.num_heads * config.head_dim] + [config.kv_heads * config.head_dim] * 2


def gate_up_rows(config: ModelConfig) -> list[int]:
    return [config.intermediate_size] * 2


def expand(spec: dict[str, Key | str], num_layers: int, prefix: str = "") -> dict[str, Key]:
    """Fill in the `{}` layer templates; `prefix` goes before every name of theirs."""
    out: dict[str, Key] = {}
    for ours, key in spec.items():
        key = key if isinstance(key, Key) else Key(key)
        for i in range(num_layers) if "{}" in ours else [None]:
            def fill(name: str, i: int | None = i) -> str:
                return name.format(i) if i is not None else name
            theirs = tuple(prefix + fill(t) for t in key.names)
            out[fill(ours)] = Key(theirs if len(theirs) > 1 else theirs[0], key.load, key.save, key.split)
    return out


def for_model(mapping: dict[str, Key], model: nn.Module) -> dict[str, Key]:
    """The entries for parameters this model has (a bias-free model has no bias entries)."""
    params = dict(model.named_parameters())
    return {ours: key for ours, key in mapping.items() if ours in params}


def load_into(model: nn.Module, state: dict[str, torch.Tensor], mapping: dict[str, Key], source: str,
              redundant: Iterable[str] = ()) -> None:
    """Copy `state` into `model` through `mapping`. `redundant`: regexes of their keys that carry nothing of their
    own (a tied output matrix, a saved mask buffer). Raises PlmkitError listing every problem at once."""
    params = dict(model.named_parameters())
    patterns = [re.compile(p) for p in redundant]
    missing, mismatched, used = [], [], set()
    for ours, key in for_model(mapping, model).items():
        absent = [t for t in key.names if t not in state]
        used.update(t for t in key.names if t in state)
        if absent:
            missing.extend(absent)
            continue
        parts = [state[t] for t in key.names]
        try:
            tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
            if key.load is not None:
                tensor = key.load(tensor)
        except RuntimeError:  # parts that cannot be fused are a shape problem of the file
            tensor = None
        if tensor is None or tensor.shape != params[ours].shape:
            shapes = "+".join(str(tuple(p.shape)) for p in parts)
            mismatched.append(f"{'+'.join(key.names)} {shapes} vs expected {tuple(params[ours].shape)}")
            continue
        with torch.no_grad():
            params[ours].copy_(tensor)
    unexpected = [k for k in state if k not in used and not any(p.fullmatch(k) for p in patterns)]
    problems = []
    if missing:
        problems.append(listing("missing keys", missing))
    if unexpected:
        problems.append(listing("unexpected keys", unexpected))
    if mismatched:
        problems.append(listing("shape mismatches", mismatched))
    if problems:
        raise PlmkitError(f"{source}: " + "; ".join(problems))


def export(model: nn.Module, mapping: dict[str, Key]) -> dict[str, torch.Tensor]:
    """The model's weights under their names: transformed, fused tensors split, tied weights written once."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for ours, key in for_model(mapping, model).items():
        tensor = params[ours].detach()
        if key.save is not None:
            tensor = key.save(tensor)
        parts = tensor.split(key.split(model.config), dim=0) if len(key.names) > 1 else (tensor,)
        for name, part in zip(key.names, parts, strict=True):
            out[name] = part.contiguous().clone()
    return out


def listing(what: str, keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {what}: {shown}{more}"
