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
import torch.nn.functional as F
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


class RDropObjective:
    """R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks"): every example goes through
    the model twice in one batch, so with two different dropout masks, and the loss is the task loss of both
    passes plus `alpha` times how far the two predictions are apart: the symmetric KL divergence of the two class
    distributions (per example; per labelled token for token classification; per label, of the two Bernoullis,
    for multi-label), or the squared difference of the two predictions for regression. A step costs about twice
    the compute. Dropout must be on (`hidden_dropout` > 0) for the two passes to differ. The terms are logged as
    `task_loss` and `rdrop_loss`."""

    def __init__(self, alpha: float, label_key: str = "labels") -> None:
        self.alpha = alpha
        self.supervised = SupervisedObjective(label_key)

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        count = self.supervised.counts(batch)["loss"]
        return {"task": count, "rdrop": count}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = model(**{key: torch.cat([value, value]) for key, value in batch.items()})
        first, second = out.logits.float().chunk(2)
        labels = batch[self.supervised.label_key]
        if labels.dtype == torch.long and labels.dim() >= 2:  # token labels: the labelled positions only
            keep = labels.ne(IGNORE_INDEX)
            first, second = first[keep], second[keep]
        return {"task": out.loss, "rdrop": self.alpha * prediction_gap(first, second, labels)}


def prediction_gap(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How far two predictions (N, L) of the same N items are apart, averaged over the items: the symmetric KL
    divergence ((KL(p|q) + KL(q|p)) / 2) of the softmax distributions; of the sigmoid Bernoullis summed over the
    labels for multi-label (float labels of L > 1 columns); the squared difference for one output (regression)."""
    if first.shape[-1] == 1:
        return F.mse_loss(first, second)
    if labels.is_floating_point():
        log_p, log_not_p = F.logsigmoid(first), F.logsigmoid(-first)
        log_q, log_not_q = F.logsigmoid(second), F.logsigmoid(-second)
        gap = ((log_p.exp() - log_q.exp()) * (log_p - log_not_p - log_q + log_not_q)).sum(-1)
        return 0.5 * gap.mean()
    log_p, log_q = F.log_softmax(first, dim=-1), F.log_softmax(second, dim=-1)
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


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
