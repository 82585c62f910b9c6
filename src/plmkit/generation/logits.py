"""Logits processors: pure functions of (the tokens so far, the next-token scores), with Hugging Face's semantics.

Order, as in `transformers`: repetition penalty, then (sampling only) temperature, top-k, top-p.
"""

from __future__ import annotations

import torch


def repetition_penalty(scores: torch.Tensor, tokens: torch.Tensor, penalty: float,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019), as `transformers`' RepetitionPenaltyLogitsProcessor: the score of every
    token that occurs in `tokens` (B, L) is divided by `penalty` if positive, multiplied by it if negative.

    scores (B, V). `mask` (B, L): 0 at padding, whose ids do not count (transformers would penalise the pad id).
    """
    if penalty == 1.0:
        return scores
    if mask is not None:
        # Padding points at an extra column that is dropped again: no token of the vocabulary is touched by it.
        vocab = scores.shape[-1]
        scores = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=-1)
        tokens = tokens.masked_fill(mask == 0, vocab)
    picked = scores.gather(1, tokens)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    scores = scores.scatter(1, tokens, picked)
    return scores[:, :-1] if mask is not None else scores


def temperature(scores: torch.Tensor, value: float) -> torch.Tensor:
    return scores if value == 1.0 else scores / value


def top_k(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k highest scores of each row (ties with the k-th are kept too); the rest become -inf."""
    if not k or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p(scores: torch.Tensor, p: float | None, min_tokens: int = 1) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the most likely tokens whose probabilities sum to p or more,
    computed as `transformers` does (ascending sort; drop tokens whose cumulative probability is <= 1 - p)."""
    if p is None or p >= 1.0:
        return scores
    ordered, index = torch.sort(scores, descending=False)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - p)
    drop[..., -min_tokens:] = False
    return scores.masked_fill(drop.scatter(1, index, drop), float("-inf"))


def process(scores: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None, *, do_sample: bool,
            penalty: float = 1.0, temp: float = 1.0, k: int | None = None, p: float | None = None) -> torch.Tensor:
    """All of the above in `transformers`' order; temperature, top-k and top-p only when sampling."""
    scores = repetition_penalty(scores, tokens, penalty, mask)
    if do_sample:
        scores = top_p(top_k(temperature(scores, temp), k), p)
    return scores
