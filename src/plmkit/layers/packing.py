"""Unpadding: run the token-wise work (projections, feed-forward, norms) on real tokens only.

A padded batch (B, T) with N real tokens is packed into (N, C); only attention, which mixes positions, sees the
padded (B, T) layout. On typical sentence batches a third or more of the positions are padding, so this is the
cheapest speed-up there is (Cramming and MosaicBERT do the same). Padded positions come back as zeros, as in
PyTorch's `nn.TransformerEncoder` fast path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packing:
    index: torch.Tensor  # (N,) flat positions of the real tokens in the (B * T) grid
    batch: int
    seq_len: int

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Packing:
        B, T = attention_mask.shape
        return cls(attention_mask.reshape(-1).nonzero().squeeze(1), B, T)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...)"""
        # index_select, not x[index]: its backward is index_add_ into zeros; advanced indexing's is an
        # accumulating index_put_, several times slower on CPU (2.1 ms against 0.4 for 1,688 x 384, fwd + bwd)
        return x.reshape(self.batch * self.seq_len, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at padded positions."""
        # index_copy_, not out[index] = x, for the same reason: its backward is index_select, advanced indexing's an
        # `index` gather
        out = x.new_zeros(self.batch * self.seq_len, *x.shape[1:]).index_copy_(0, self.index, x)
        return out.view(self.batch, self.seq_len, *x.shape[1:])
