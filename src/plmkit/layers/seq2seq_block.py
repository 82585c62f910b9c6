"""One encoder or decoder layer of an encoder-decoder: self-attention, cross-attention (decoder only) and a
feed-forward layer, each a residual branch with its norm before (pre-LN, T5) or after the add (post-LN, BART)."""

from __future__ import annotations

import torch
from torch import nn

from plmkit.layers.dropout import Dropout


class Seq2SeqBlock(nn.Module):
    """Composed from the modules it is given; `cross_attn=None` makes it an encoder layer."""

    def __init__(self, attn: nn.Module, attn_norm: nn.Module, mlp: nn.Module, mlp_norm: nn.Module,
                 cross_attn: nn.Module | None = None, cross_norm: nn.Module | None = None, dropout: float = 0.0,
                 norm_position: str = "pre") -> None:
        super().__init__()
        self.attn, self.attn_norm, self.mlp, self.mlp_norm = attn, attn_norm, mlp, mlp_norm
        self.cross_attn, self.cross_norm = cross_attn, cross_norm
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pre_norm = norm_position == "pre"

    def _branch(self, x: torch.Tensor, norm: nn.Module, f: object, *args: object) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(f(norm(x), *args))
        return norm(x + self.dropout(f(x, *args)))

    def forward(self, x: torch.Tensor, self_bias: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                cross_bias: torch.Tensor | None = None, cache: object | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); memory (B, S, C) the encoder's states, for the decoder's cross-attention."""
        x = self._branch(x, self.attn_norm, lambda h: self.attn(h, self_bias, None, cache))
        if self.cross_attn is not None:
            x = self._branch(x, self.cross_norm, lambda h: self.cross_attn(h, cross_bias, memory, cache))
        return self._branch(x, self.mlp_norm, self.mlp)
