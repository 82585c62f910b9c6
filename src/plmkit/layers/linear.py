"""`Linear`: `nn.Linear` whose fp32 CPU matmuls can run through oneDNN instead of MKL, forward and backward.

Why. torch's fp32 `addmm`/`mm` on CPU call MKL's sgemm, and MKL takes its AVX-512 kernels on Intel processors only:
on an AMD EPYC with AVX-512 (Zen 4 and 5) it runs its AVX2 ones. oneDNN, which ships inside torch
(`torch.ops.mkldnn._linear_pointwise`), picks its kernels by instruction set alone. On 2 cores of an EPYC of family
26, on the shapes of an all-MiniLM-L6-v2 fine-tuning step (426 rows x 384 x 1,152 / 1,536, and the backward's
layouts), MKL ran 183-190 GFLOP/s and oneDNN 405-440 (each shape's fastest of 50 runs).

oneDNN builds one primitive per shape and caches it; building one for a row count it has not seen cost 1.5 ms
there, more than the matmul. Unpadded batches (`layers.packing`) have a new token count almost every step, so while
oneDNN runs the matmuls the packed rows are rounded up to a multiple of `ROW_MULTIPLE` (`row_multiple()`, which the
encoder asks), and the Trainer raises the primitive cache's capacity: an epoch then sees a few dozen row counts.

Use. `cpu_matmul_backend("auto")` says which backend a setting means on this machine ("onednn" where the CPU is
not Intel's and torch runs AVX-512 kernels, else "aten", torch's own dispatch); `onednn_matmuls(True)` is the
context in which `Linear` layers take oneDNN (the Trainer opens it around each step's forward, from
`impl.cpu_matmul`; the autograd nodes made there run their backward through oneDNN too). Outside it, and for
anything but fp32 CPU tensors, `Linear` is `nn.Linear` to the bit. The two backends round differently (results
agree to fp32 rounding, not bit for bit); each is deterministic.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.errors import PlmkitError

BACKENDS = ("auto", "onednn", "aten")
ROW_MULTIPLE = 64  # packed rows are rounded up to this while oneDNN runs the matmuls

_active = False


@functools.cache
def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_matmul_backend(setting: str = "auto") -> str:
    """"onednn" or "aten" for a setting of `impl.cpu_matmul`: "auto" is oneDNN where MKL would leave AVX-512 unused
    (a CPU that is not Intel's, with torch running its AVX-512 kernels), else torch's own dispatch."""
    if setting not in BACKENDS:
        raise PlmkitError(f"impl.cpu_matmul: unknown {setting!r}; choose from: {', '.join(BACKENDS)}")
    if setting == "onednn" and not onednn_available():
        raise PlmkitError("impl.cpu_matmul=onednn: this torch build has no oneDNN; use auto or aten")
    if setting != "auto":
        return setting
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "onednn" if avx512 and onednn_available() and _cpu_vendor() not in ("GenuineIntel", "") else "aten"


@contextlib.contextmanager
def onednn_matmuls(enabled: bool = True) -> Iterator[None]:
    """Within: `Linear` layers run fp32 CPU matmuls through oneDNN (when `enabled`), and packed rows are rounded
    up to `ROW_MULTIPLE`."""
    global _active
    before, _active = _active, enabled
    try:
        yield
    finally:
        _active = before


def row_multiple() -> int:
    """What packed token rows should be rounded up to for the matmuls now: `ROW_MULTIPLE` under oneDNN, else 1."""
    return ROW_MULTIPLE if _active else 1


def _matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) @ weight (N, K)ᵀ + bias, by oneDNN; either operand may be a transposed view (no copy)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias, ctx.shape = bias is not None, x.shape
        return _matmul(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _matmul(g, weight.t(), None).view(ctx.shape)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:
            dw = _matmul(g.t(), x2.t(), None)  # (N, M) @ (M, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN inside `onednn_matmuls()` for fp32 CPU tensors."""
    if (_active and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.numel()
            and not torch.compiler.is_compiling()):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, state dict and initialisation) whose matmuls follow `onednn_matmuls()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
