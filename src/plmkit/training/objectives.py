"""What the trainer minimises, as loss terms with their counts.

An objective says, for a batch, how many items each loss term averages over (`counts`) and what the model's
mean loss per term is (`__call__`). The trainer weights each micro-batch's mean by its share of the *global*
count (all accumulation steps, all ranks), so gradient accumulation and distributed training give exactly
the loss of one big batch: masked-LM loss is the mean over every masked token of the global batch, not a
mean of per-micro-batch means.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from plmkit.heads.mlm import IGNORE_INDEX


class Objective(Protocol):
    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]: ...

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class PretrainingObjective:
    """Masked LM (+ next-sentence prediction when the batch has `next_sentence_label`), decoding only masked
    positions with the fused loss and no logits (`return_logits=False`: the same loss as decoding all of them, a
    fraction of the work)."""

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        counts = {"mlm": int(batch["labels"].ne(IGNORE_INDEX).sum())}
        if "next_sentence_label" in batch:
            counts["nsp"] = len(batch["next_sentence_label"])
        return counts

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(**batch, masked_only=True, return_logits=False)
        losses = {"mlm": out.mlm_loss if hasattr(out, "mlm_loss") else out.loss}
        if "next_sentence_label" in batch:
            losses["nsp"] = out.nsp_loss
        return losses


class SupervisedObjective:
    """A task head's own loss (`model(**batch).loss`): counted per labelled token for token-level labels
    (long labels with -100), per example otherwise (sequence labels, regression targets, QA spans)."""

    def __init__(self, label_key: str = "labels") -> None:
        self.label_key = label_key

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        labels = batch[self.label_key]
        if labels.dtype == torch.long and labels.dim() >= 2:
            return {"loss": int(labels.ne(IGNORE_INDEX).sum())}
        return {"loss": len(labels)}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": model(**batch).loss}


class CausalLMObjective:
    """Next-token prediction: counted per target token (every position after the first that is not -100). The loss is
    computed chunk by chunk (`return_logits=False`): the same value and gradients without the (B, T, V) logits."""

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        labels = batch["labels"][:, 1:]
        return {"loss": int(labels.ne(IGNORE_INDEX).sum())}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": model(**batch, return_logits=False).loss}


class Seq2SeqObjective:
    """Teacher-forced cross-entropy of an encoder-decoder over the target tokens (labels not -100), optionally
    label-smoothed; only the labelled positions are projected onto the vocabulary."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        return {"loss": int(batch["labels"].ne(IGNORE_INDEX).sum())}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": model(**batch, return_logits=False, label_smoothing=self.label_smoothing).loss}
