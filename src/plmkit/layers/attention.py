"""Multi-head scaled dot-product self-attention: softmax(Q Kᵀ / √d_k) V over `num_heads` heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.layers.dropout import dropout
from plmkit.layers.packing import Packing


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with one fused Q/K/V projection.

    Q, K and V come from a single (C -> 3C) matmul, which is faster than three; the interop maps split
    and fuse it for Hugging Face's separate `query`/`key`/`value` weights.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_weights: bool = False,
                packing: Packing | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C), or (N, C) real tokens with `packing`; attn_mask broadcastable to (B, H, T, T), True where a
        query may attend to a key.

        Returns the output shaped as x and, when `return_weights`, the attention probabilities (B, H, T, T).
        """
        qkv = self.qkv_proj(x)
        if packing is not None:
            qkv = packing.unpack(qkv)  # attention mixes positions: it needs the (B, T) layout
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = qkv.view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if return_weights or (dropout_p > 0 and not q.is_cuda):
            # The explicit form: for attention views, and for attention dropout on CPU, where SDPA would take this
            # same math path but draw its mask with the slower bernoulli_ (see `layers.dropout`).
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, T, T)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            y = dropout(weights, dropout_p) @ v
            if not return_weights:
                weights = None
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)
        if packing is not None:
            y = packing.pack(y)
        return self.out_proj(y), weights
