"""Attention for encoder-decoders (T5, BART): self-attention or cross-attention to the encoder's states, with an
additive bias (position bias and padding), optional 1/sqrt(d) scaling, and T5's bucketed relative position bias.

Self-attention fuses Q, K and V into one projection; cross-attention projects Q from the decoder and fuses K and V
of the encoder's states, which are computed once per sequence and kept in the cache while decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.layers.linear import Linear


class Seq2SeqAttention(nn.Module):
    """Multi-head attention over the same sequence (`cross=False`) or over a memory (`cross=True`).

    `scaled=False` leaves out the 1/sqrt(head_dim) factor (T5 folds it into the initialisation of Q).
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 scaled: bool = True, cross: bool = False, layer_index: int = 0) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.cross, self.dropout, self.layer_index = cross, dropout, layer_index
        self.scale = None if scaled else 1.0  # None: SDPA's default 1/sqrt(head_dim)
        if cross:
            self.q_proj = Linear(hidden_size, hidden_size, bias=bias)
            self.kv_proj = Linear(hidden_size, 2 * hidden_size, bias=bias)
        else:
            self.qkv_proj = Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out_proj = Linear(hidden_size, hidden_size, bias=bias)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T, n * C) -> n x (B, H, T, D)"""
        B, T, _ = x.shape
        return x.view(B, T, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                cache: object | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C).

        bias: additive float, broadcastable to (B, H, T, S): position bias plus a large negative number at keys a
        query may not see. memory (B, S, C): the encoder's states (cross-attention only). cache: a `Seq2SeqCache`;
        self-attention appends this call's keys and values to it, cross-attention computes the memory's keys and
        values on its first call and reuses them afterwards.
        """
        B, T, C = x.shape
        if self.cross:
            q = self._heads(self.q_proj(x), 1)[0]
            kv = cache.cross[self.layer_index] if cache is not None else None
            if kv is None:
                kv = tuple(self._heads(self.kv_proj(memory), 2))
                if cache is not None:
                    cache.cross[self.layer_index] = kv
            k, v = kv
        else:
            q, k, v = self._heads(self.qkv_proj(x), 3)
            if cache is not None:
                k, v = cache.self_attn.update(self.layer_index, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, D)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """T5's buckets of key - query distances: exact for small ones, logarithmic up to `max_distance`, then one
    bucket. Bidirectional (encoder) gives half the buckets to keys after the query; unidirectional (decoder) sees
    only keys at or before it."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -relative_position.clamp(max=0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, relative_position, large)


class RelativePositionBias(nn.Module):
    """A learned per-head bias for each bucket of key - query distance (T5), computed once per stack and shared by
    all its layers."""

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, bidirectional: bool) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, num_queries: int, num_keys: int, past: int = 0) -> torch.Tensor:
        """The bias (1, H, T, S) of queries at positions past..past+T-1 over keys at 0..S-1."""
        device = self.embedding.weight.device
        query = torch.arange(past, past + num_queries, device=device)[:, None]
        key = torch.arange(num_keys, device=device)[None, :]
        buckets = relative_position_bucket(key - query, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1)[None]  # (1, H, T, S)
