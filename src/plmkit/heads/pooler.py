"""BERT's pooler: tanh(W · h_[CLS] + b), the sentence vector that NSP and classification heads read."""

from __future__ import annotations

import torch
from torch import nn


class Pooler(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, C), from the first ([CLS]) position."""
        return torch.tanh(self.dense(hidden[:, 0]))
