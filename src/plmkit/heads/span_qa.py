"""Extractive QA head: a start and an end logit per token; the answer is the best (start, end) span."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpanQAHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor, start_positions: torch.Tensor | None = None,
                end_positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """hidden (B, T, C) -> start_logits (B, T), end_logits (B, T).

        Positions outside the sequence (an answer cut off by a window) are clamped to T and ignored by the
        loss, which is the mean of the start and end cross-entropies.
        """
        start_logits, end_logits = self.proj(hidden).unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            seq_len = start_logits.shape[1]
            start = start_positions.view(-1).clamp(0, seq_len)
            end = end_positions.view(-1).clamp(0, seq_len)
            loss = (F.cross_entropy(start_logits, start, ignore_index=seq_len)
                    + F.cross_entropy(end_logits, end, ignore_index=seq_len)) / 2
        return start_logits.contiguous(), end_logits.contiguous(), loss
