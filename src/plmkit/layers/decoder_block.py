"""One pre-LN decoder layer: x + attn(norm(x)), then x + mlp(norm(x)) (GPT-2, Llama)."""

from __future__ import annotations

import torch
from torch import nn

from plmkit.layers.kv_cache import KVCache


class DecoderBlock(nn.Module):
    """Composed from the attention, feed-forward and norm modules it is given; it knows nothing of configs."""

    def __init__(self, attn: nn.Module, mlp: nn.Module, attn_norm: nn.Module, mlp_norm: nn.Module,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attn, self.mlp, self.attn_norm, self.mlp_norm = attn, mlp, attn_norm, mlp_norm
        # No dropout module at all when p = 0: one call fewer per sub-layer, and nothing for autograd to record.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)"""
        x = x + self.dropout(self.attn(self.attn_norm(x), rope, attn_mask, cache))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))
