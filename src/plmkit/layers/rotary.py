"""Rotary position embedding (RoPE, Su et al. 2021) in the Hugging Face Llama layout.

Each head's D features are rotated in pairs (i, i + D/2) by the angle position * theta^(-2i/D) ("rotate_half"
layout: the first half of the features pairs with the second half). llama.cpp's GGUF files store Q and K weights
permuted to the interleaved layout (pairs (2i, 2i + 1)); `plmkit.interop.gguf` undoes that on import.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """position_ids (B, T) -> (cos, sin), each (B, 1, T, D), broadcast over heads."""

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        # A buffer, so it follows .to(device); not saved: it is derived from the config.
        self.register_buffer("inv_freq", 1.0 / (theta**exponents), persistent=False)  # (D/2,)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Angles in fp32 whatever the model dtype: positions in the thousands lose their low bits in half precision.
        freqs = position_ids[:, :, None].float() * self.inv_freq.float()  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, D)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., D): [x1, x2] -> [-x2, x1], the 90-degree rotation of each (i, i + D/2) pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by its positions' angles."""
    return x * cos + rotate_half(x) * sin
