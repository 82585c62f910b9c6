"""Sequence and token classification heads: dropout + linear, with the loss chosen by the problem type."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    """As Hugging Face: one output is regression; integer labels are single-label; otherwise multi-label."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """logits (B, L); labels (B,) class ids, (B,) / (B, 1) targets for regression, or (B, L) multi-hot."""
    num_labels = logits.shape[-1]
    problem_type = problem_type or infer_problem_type(num_labels, labels)
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class SequenceClassificationHead(nn.Module):
    """pooled (B, C) -> logits (B, num_labels)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, problem_type: str | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_size, num_labels)
        self.problem_type = problem_type

    def forward(self, pooled: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.proj(self.dropout(pooled))
        loss = classification_loss(logits, labels, self.problem_type) if labels is not None else None
        return logits, loss


class TokenClassificationHead(nn.Module):
    """hidden (B, T, C) -> logits (B, T, num_labels); positions labelled -100 (sub-words, padding) are ignored."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.proj(self.dropout(hidden))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=IGNORE_INDEX)
        return logits, loss
