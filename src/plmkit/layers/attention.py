"""Multi-head scaled dot-product self-attention: softmax(Q Kᵀ / √d_k) V over `num_heads` heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.layers.dropout import dropout
from plmkit.layers.linear import Linear
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
        self.qkv_proj = Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out_proj = Linear(hidden_size, hidden_size, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_weights: bool = False,
                packing: Packing | None = None,
                query_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C), or (N, C) real tokens with `packing`; attn_mask broadcastable to (B, H, T, T), True where a
        query may attend to a key.

        Returns the output shaped as x and, when `return_weights`, the attention probabilities (B, H, T, T).
        With `query_rows` (B,), one row of x per sequence (e.g. its [CLS] token; rows of x flattened to (-1, C)),
        only those positions query: keys and values still come from every token, and the output is (B, C).
        """
        if query_rows is not None:
            return self._forward_rows(x, attn_mask, return_weights, packing, query_rows)
        qkv = self.qkv_proj(x)
        if packing is not None:
            qkv = packing.unpack(qkv)  # attention mixes positions: it needs the (B, T) layout
        B, T, C3 = qkv.shape
        q, k, v = qkv.view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        y, weights = self._attend(q, k, v, attn_mask, return_weights)
        y = y.transpose(1, 2).reshape(B, T, C3 // 3)
        if packing is not None:
            y = packing.pack(y)
        return self.out_proj(y), weights

    def _forward_rows(self, x: torch.Tensor, attn_mask: torch.Tensor | None, return_weights: bool,
                      packing: Packing | None, query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One query per sequence, without forming keys or values. For head h with key and value weights W_k, W_v
        (D, C) and biases b_k, b_v, and a query q (D,):
          q · k_t = (q W_k) · x_t + q · b_k, whose last term is the same for every t, so the softmax drops it;
          Σ_t p_t v_t = (Σ_t p_t x_t) W_vᵀ + (Σ_t p_t) b_v (p the dropped-out probabilities, whose sum is not 1).
        So each query scores x itself through its (C,) vector q W_k, and each head projects one p-weighted sum of x:
        a few (H, C) products per sequence in place of the (N, C) -> (N, 2C) projection of every token, its
        backward, and the (N, 2C) unpadding."""
        C, H, D = x.shape[-1], self.num_heads, self.head_dim
        w_q, w_k, w_v = self.qkv_proj.weight.split(C)  # (C, C) each; rows h*D..(h+1)*D belong to head h
        b_q, _, b_v = self.qkv_proj.bias.split(C) if self.qkv_proj.bias is not None else (None, None, None)
        q = F.linear(x.reshape(-1, C).index_select(0, query_rows), w_q, b_q)  # (B, C)
        xs = packing.unpack(x) if packing is not None else x  # (B, T, C)
        B = xs.shape[0]
        q_k = torch.bmm(q.view(B, H, D).transpose(0, 1), w_k.view(H, D, C)).transpose(0, 1)  # (B, H, C)
        scores = torch.bmm(q_k, xs.transpose(1, 2)).mul_(1.0 / math.sqrt(D)).unsqueeze(2)  # (B, H, 1, T)
        if attn_mask is not None:
            scores.masked_fill_(~attn_mask, torch.finfo(scores.dtype).min)  # any mask broadcastable to the scores
        weights = scores.softmax(dim=-1)
        p = dropout(weights, self.dropout, self.training).squeeze(2)  # (B, H, T)
        pooled = torch.bmm(p, xs)  # (B, H, C): each head's p-weighted sum of its sequence's x
        y = torch.bmm(pooled.transpose(0, 1), w_v.view(H, D, C).transpose(1, 2)).transpose(0, 1)  # (B, H, D)
        if b_v is not None:
            y = torch.addcmul(y, p.sum(dim=-1, keepdim=True), b_v.view(H, D))
        return self.out_proj(y.reshape(B, C)), weights if return_weights else None

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                return_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(q kᵀ / √d) v with attention dropout in training: (B, H, Tq, D) -> (B, H, Tq, D), and the
        probabilities when `return_weights`."""
        dropout_p = self.dropout if self.training else 0.0
        if return_weights or (dropout_p > 0 and not q.is_cuda):
            # The explicit form: for attention views, and for attention dropout on CPU, where SDPA would take this
            # same math path but draw its mask with the slower bernoulli_ (see `layers.dropout`).
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, Tq, T)
            if attn_mask is not None:
                scores.masked_fill_(~attn_mask, torch.finfo(scores.dtype).min)  # in place: a fresh product
            weights = scores.softmax(dim=-1)
            return dropout(weights, dropout_p) @ v, weights if return_weights else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p), None
