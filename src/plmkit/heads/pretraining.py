"""Next-sentence prediction head: is segment B the continuation of segment A? (label 0 = yes, 1 = random)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NextSentenceHead(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 2)

    def forward(self, pooled: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """pooled (B, C) -> logits (B, 2); cross-entropy loss when labels (B,) are given."""
        logits = self.proj(pooled)
        loss = F.cross_entropy(logits, labels.view(-1)) if labels is not None else None
        return logits, loss
