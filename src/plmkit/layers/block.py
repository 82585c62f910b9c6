"""One Transformer layer, composed from the attention, feed-forward and norm modules it is given."""

from __future__ import annotations

import torch
from torch import nn

from plmkit.layers.dropout import Dropout
from plmkit.layers.packing import Packing


class TransformerBlock(nn.Module):
    """Residual attention + feed-forward, with the norms after the residual add (post-LN, BERT)
    or before each sub-layer (pre-LN, GPT-2 and most modern encoders)."""

    def __init__(self, attn: nn.Module, mlp: nn.Module, attn_norm: nn.Module, mlp_norm: nn.Module,
                 dropout: float, norm_position: str = "post") -> None:
        super().__init__()
        self.attn, self.mlp, self.attn_norm, self.mlp_norm = attn, mlp, attn_norm, mlp_norm
        self.dropout = Dropout(dropout)
        self.pre_norm = norm_position == "pre"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_weights: bool = False,
                packing: Packing | None = None,
                query_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (B, T, C), or (N, C) -> (N, C) with `packing`; and the attention probabilities when asked.
        With `query_rows` (B,), one row of x per sequence: the layer's output for those rows only, (B, C) (every
        token still serves as key and value; see `SelfAttention`)."""
        residual = x if query_rows is None else x.reshape(-1, x.shape[-1]).index_select(0, query_rows)
        if self.pre_norm:
            a, weights = self.attn(self.attn_norm(x), attn_mask, return_weights, packing, query_rows)
            x = self.dropout.add(a, residual)
            return self.dropout.add(self.mlp(self.mlp_norm(x)), x), weights
        a, weights = self.attn(x, attn_mask, return_weights, packing, query_rows)
        x = self.attn_norm(self.dropout.add(a, residual))
        return self.mlp_norm(self.dropout.add(self.mlp(x), x)), weights
