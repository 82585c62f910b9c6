"""Position-wise feed-forward layer: W2 · act(W1 x + b1) + b2."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.layers.linear import Linear

# Registry of activations by config name. "gelu" is the exact erf form that BERT uses.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "gelu", bias: bool = True) -> None:
        super().__init__()
        self.in_proj = Linear(hidden_size, intermediate_size, bias=bias)
        self.out_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.act = get_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)"""
        return self.out_proj(self.act(self.in_proj(x)))


class GatedFeedForward(nn.Module):
    """Gated feed-forward (GLU family; SwiGLU with "silu", as Llama): W_down · (act(W_gate x) ⊙ W_up x).

    Gate and up projections are one fused (C -> 2I) matmul, gate first; the interop maps split and fuse it.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "silu", bias: bool = True) -> None:
        super().__init__()
        self.in_proj = Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.out_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.act = get_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)"""
        gate, up = self.in_proj(x).chunk(2, dim=-1)
        return self.out_proj(self.act(gate) * up)


# Registry of feed-forward layers by config name (`mlp`); each takes (hidden, intermediate, activation, bias).
MLPS: dict[str, type[nn.Module]] = {"standard": FeedForward, "gated": GatedFeedForward}
