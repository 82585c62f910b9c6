"""What the side-by-side training benchmarks share: one timed optimizer step, and a profile of a few steps."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def step_fn(model: nn.Module, optimizer: torch.optim.Optimizer, **forward_kwargs) -> Callable[[dict], float]:
    def step(batch: dict) -> float:
        t0 = time.perf_counter()
        loss = model(**batch, **forward_kwargs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0
    return step


def profile(step: Callable[[dict], float], batches: list[dict], rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
