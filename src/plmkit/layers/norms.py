"""Normalisation layers by config name: LayerNorm (BERT, GPT-2) or RMSNorm (Llama, T5)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def layer_norm(size: int, eps: float, bias: bool = True) -> nn.Module:
    """(x - mean) / sqrt(var + eps) * weight (+ bias)."""
    return nn.LayerNorm(size, eps=eps, bias=bias)


def rms_norm(size: int, eps: float, bias: bool = True) -> nn.Module:
    """x / sqrt(mean(x^2) + eps) * weight: no centring and no bias (`bias` is ignored, as in Llama)."""
    return nn.RMSNorm(size, eps=eps)


NORMS: dict[str, Callable[..., nn.Module]] = {"layernorm": layer_norm, "rmsnorm": rms_norm}


def build_norm(kind: str, size: int, eps: float, bias: bool = True) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose from: {', '.join(NORMS)}")
    return NORMS[kind](size, eps, bias)
