"""Input embeddings: token + learned absolute position + segment (token type), then LayerNorm and dropout."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from plmkit.layers.dropout import Dropout


class Embeddings(nn.Module):
    """Sum of token, position and (optionally) segment embeddings, as BERT.

    `type_vocab_size=0` means no segment embedding (RoBERTa-style single-segment models).
    """

    def __init__(self, vocab_size: int, hidden_size: int, max_positions: int, type_vocab_size: int,
                 layer_norm_eps: float, dropout: float, pad_token_id: int | None = None) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_positions, hidden_size)
        self.segment = nn.Embedding(type_vocab_size, hidden_size) if type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> embeddings (B, T, C)."""
        seq_len = input_ids.shape[1]
        if seq_len > self.position.num_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings "
                             f"{self.position.num_embeddings}; truncate the input")
        if position_ids is None:
            # (T, C) broadcasts over the batch: no index tensor to build per call.
            x = self.token(input_ids) + self.position.weight[:seq_len]
        else:
            x = self.token(input_ids) + self.position(position_ids)
        if self.segment is not None:
            if token_type_ids is None:
                x = x + self.segment.weight[0]
            else:
                x = x + self.segment(token_type_ids)
        elif token_type_ids is not None and bool(token_type_ids.any()):
            raise ValueError("token_type_ids were given but the model has no segment embedding (type_vocab_size=0)")
        return self.dropout(self.norm(x))


@contextlib.contextmanager
def tied_lookup_sparse_grad(embedding: nn.Embedding, targets: torch.Tensor | None) -> Iterator[None]:
    """Within the block, `embedding`'s lookups produce a sparse gradient (only the rows looked up), when the output
    head tied to it is in the loss: `targets` are the labels that head scores (None: no tied head, or no loss),
    and at least one is not -100 (a batch without a target has no loss term, so no head gradient).

    The head's gradient of the shared weight is dense (V, C) and reaches autograd first, and autograd adds the
    lookup's few rows to it (a copy of the dense gradient plus a scatter, as profiled with torch 2.13). With a
    dense lookup gradient autograd instead zero-fills a second (V, C) tensor on fresh pages, scatters into it and
    adds the two (a GPT-2-style 4-layer model's CPU step, one side-by-side measurement: 2.58 s dense, 2.46 s
    sparse). The accumulated `.grad` stays dense, so optimizers, clipping and DDP see nothing different; were the
    head not in the loss, the weight's `.grad` would be sparse, which AdamW refuses. Off without gradients and
    under `torch.compile` (it traces a dense lookup).
    """
    enabled = targets is not None and torch.is_grad_enabled() and not torch.compiler.is_compiling() \
        and bool((targets != -100).any())
    if not enabled:
        yield
        return
    before = embedding.sparse
    embedding.sparse = True
    try:
        yield
    finally:
        embedding.sparse = before
