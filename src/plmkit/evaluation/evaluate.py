"""Streaming evaluation: run a model over a task's features batch by batch and score it.

Nothing holds the logits of the whole set: each batch's outputs go to the task's scorer, which keeps only what its
metric needs (a predicted id per sentence, the predicted tags per word, the n best answer spans per question).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from plmkit.errors import PlmkitError
from plmkit.evaluation.metrics import pearson, spearman


def evaluate(model: Any, task: Any, examples: Sequence[Any], features: Sequence[dict[str, Any]],
             batch_size: int = 64, device: torch.device | str | None = None) -> dict[str, float]:
    """Metrics of `model` on `features` (from `task.featurize(examples, ...)`), in the task's order and names.

    Batches run in order under `torch.inference_mode()`, on the model's device unless `device` is given; the model
    is left in the train/eval mode it came in. When the features carry labels, "loss" (the mean over batches,
    weighted by batch size) is reported too.
    """
    if not features:
        raise PlmkitError(f"task {task.name!r}: nothing to evaluate (no features)")
    if batch_size < 1:
        raise PlmkitError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else model.device
    scorer = task.scorer(model, examples)
    pad_token_id = model.config.pad_token_id
    loss_sum, loss_count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                chunk = list(features[start:start + batch_size])
                batch = {k: v.to(device) for k, v in task.collate(chunk, pad_token_id=pad_token_id).items()}
                outputs = task.forward(model, batch)
                if outputs.loss is not None:
                    loss_sum += float(outputs.loss) * len(chunk)
                    loss_count += len(chunk)
                scorer.update(chunk, outputs)
    finally:
        model.train(was_training)
    metrics = scorer.compute()
    if loss_count:
        metrics["loss"] = loss_sum / loss_count
    return metrics


def evaluate_similarity(encoder: Any, sentences1: Sequence[str], sentences2: Sequence[str],
                        gold: Sequence[float], batch_size: int = 64) -> dict[str, float]:
    """Zero-shot semantic similarity: the cosine of each pair's sentence embeddings (a `SentenceEncoder`, mean
    pooling) against the gold scores. {"spearman", "pearson"} — rank correlation is what STS papers report."""
    if not (len(sentences1) == len(sentences2) == len(gold)) or not gold:
        raise PlmkitError(f"need as many pairs as gold scores (and at least one): got {len(sentences1)}, "
                          f"{len(sentences2)} and {len(gold)}")
    first = encoder.encode(list(sentences1), batch_size=batch_size, normalize=True)  # (N, C), unit length
    second = encoder.encode(list(sentences2), batch_size=batch_size, normalize=True)
    cosine = (first * second).sum(dim=-1).tolist()
    return {"spearman": spearman(cosine, gold), "pearson": pearson(cosine, gold)}
