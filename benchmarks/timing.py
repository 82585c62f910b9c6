"""What the side-by-side training benchmarks share: one timed optimizer step, a profile of a few steps, and timed
matmuls for the machine's fp32 rate."""

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


def matmul_times(rows: int, inner: int, cols: int, repeats: int, warmup: int = 1,
                 backend: str = "aten") -> list[float]:
    """Seconds of each of `repeats` fp32 (rows × inner) · (inner × cols) products, after `warmup` untimed ones; by
    torch's own dispatch (`a @ b`: MKL on x86) or by oneDNN (backend="onednn", as `plmkit.layers.linear` runs it)."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    if backend == "onednn":
        weight = b.t().contiguous()

        def product():
            return torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], "")
    else:
        def product():
            return a @ b
    for _ in range(warmup):
        product()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        product()
        times.append(time.perf_counter() - t0)
    return times


def profile(step: Callable[[dict], float], batches: list[dict], rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
