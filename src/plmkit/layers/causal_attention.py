"""Causal (decoder) self-attention: multi-head or grouped-query, optional rotary positions, and a KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.layers.kv_cache import KVCache
from plmkit.layers.linear import Linear
from plmkit.layers.rotary import apply_rotary


class CausalSelfAttention(nn.Module):
    """Self-attention where a position sees only itself and earlier positions.

    Q, K and V come from one fused projection of (H + 2 * KV) * D outputs, Q's H heads first, then K's and V's
    KV heads (grouped-query attention when KV < H: each K/V head serves H / KV query heads, as in Llama 2/3).
    The interop maps fuse GPT-2's `c_attn` (already fused) and Llama's separate `q/k/v_proj` into it.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None, dropout: float = 0.0,
                 bias: bool = True, layer_index: int = 0) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if hidden_size % num_heads != 0 or num_heads % num_kv_heads != 0:
            raise ValueError(f"hidden_size {hidden_size}, num_heads {num_heads} and num_kv_heads {num_kv_heads} "
                             "must divide evenly")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.sizes = [num_heads * self.head_dim, num_kv_heads * self.head_dim, num_kv_heads * self.head_dim]
        self.qkv_proj = Linear(hidden_size, sum(self.sizes), bias=bias)
        self.out_proj = Linear(hidden_size, hidden_size, bias=bias)
        self.dropout = dropout
        self.layer_index = layer_index  # which slot of a KVCache is this layer's

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C).

        rope: (cos, sin) of the T positions, each (B, 1, T, D), or None (positions are in the embeddings).
        attn_mask: boolean, broadcastable to (B, H, T, S), True where a query may attend to a key; S = cached + T.
        None means plain causal attention: every earlier position of the same row (the caller passes a mask when
        there is padding, or when T > 1 new positions follow cached ones).
        cache: keys and values of earlier positions; this call's are appended to it.
        """
        B, T, _ = x.shape
        H, KV = self.num_heads, self.num_kv_heads
        qkv = self.qkv_proj(x).view(B, T, H + 2 * KV, self.head_dim).transpose(1, 2)  # (B, H + 2KV, T, D)
        # `split`, not slicing: its backward is one cat of the pieces' gradients, where each slice's backward
        # zero-fills a whole (B, H + 2KV, T, D) gradient and autograd then adds them (~4% of a small GPT's step).
        if rope is None:
            q, k, v = qkv.split([H, KV, KV], dim=1)  # (B, H, T, D), (B, KV, T, D), (B, KV, T, D)
        else:
            qk, v = qkv.split([H + KV, KV], dim=1)
            q, k = apply_rotary(qk, *rope).split([H, KV], dim=1)  # Q and K heads rotated in one go
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, KV, S, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            # One new query after the cache sees every cached key: no mask at all is the causal mask then.
            is_causal=attn_mask is None and T > 1, enable_gqa=self.num_kv_heads != self.num_heads)  # (B, H, T, D)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, -1))
