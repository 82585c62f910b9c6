"""Rotary position embedding (RoPE, Su et al. 2021) in the Hugging Face Llama layout.

Each head's D features are rotated in pairs (i, i + D/2) by the angle position * theta^(-2i/D) ("rotate_half"
layout: the first half of the features pairs with the second half). llama.cpp's GGUF files store Q and K weights
permuted to the interleaved layout (pairs (2i, 2i + 1)); `plmkit.interop.gguf` undoes that on import.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """position_ids (B, T) -> (cos, signed sin), each (B, 1, T, D), broadcast over heads (see `apply_rotary`)."""

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
        sin = emb.sin()
        sin[..., : sin.shape[-1] // 2].neg_()  # the sign of rotate_half, folded in once per forward
        return emb.cos().to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by its positions' angles.

    Hugging Face writes it x * cos + rotate_half(x) * sin, with rotate_half([x1, x2]) = [-x2, x1]; here it is
    x * cos + roll(x, D/2) * signed_sin (sin with its first half negated): two ops fewer, the same values bit for
    bit ((-a) * b == a * (-b) in IEEE arithmetic)."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin
