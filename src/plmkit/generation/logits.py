"""Logits processors: pure functions of (the tokens so far, the next-token scores), with Hugging Face's semantics.

Order, as in `transformers`: repetition penalty, no repeated n-grams, minimum length, forced first and last tokens,
then (sampling only) temperature, top-k, top-p.
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


def no_repeat_ngram(scores: torch.Tensor, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """`transformers`' NoRepeatNGramLogitsProcessor: a token that would complete an n-gram already in the row's
    tokens (B, L) gets -inf."""
    if not n or tokens.shape[1] + 1 < n:
        return scores
    scores = scores.clone()
    for row, seq in enumerate(tokens.tolist()):
        prefix = seq[len(seq) - n + 1:] if n > 1 else []
        banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i:i + n - 1] == prefix}
        if banned:
            scores[row, list(banned)] = float("-inf")
    return scores


def min_length(scores: torch.Tensor, length: int, minimum: int, eos_ids: list[int]) -> torch.Tensor:
    """No end of sequence while the sequence (prompt or decoder start included) is shorter than `minimum`."""
    if length >= minimum or not eos_ids:
        return scores
    scores = scores.clone()
    scores[:, eos_ids] = float("-inf")
    return scores


def force_token(scores: torch.Tensor, token: int) -> torch.Tensor:
    """Every row's next token is `token` (`transformers`' forced BOS/EOS: all other scores -inf, that one 0)."""
    forced = torch.full_like(scores, float("-inf"))
    forced[:, token] = 0.0
    return forced


def constrain(scores: torch.Tensor, tokens: torch.Tensor, *, length: int, max_length: int,
              no_repeat_ngram_size: int = 0, min_len: int = 0, eos_ids: list[int] = (),
              forced_bos_token_id: int | None = None, forced_eos_token_id: int | None = None) -> torch.Tensor:
    """The length and n-gram constraints, in `transformers`' order: scores (B, V) of the token after `length`
    tokens (B, length), in a sequence of at most `max_length`."""
    scores = no_repeat_ngram(scores, tokens, no_repeat_ngram_size)
    scores = min_length(scores, length, min_len, list(eos_ids))
    if forced_bos_token_id is not None and length == 1:
        scores = force_token(scores, forced_bos_token_id)
    if forced_eos_token_id is not None and length == max_length - 1:
        scores = force_token(scores, forced_eos_token_id)
    return scores


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
            penalty: float = 1.0, temp: float = 1.0, k: int | None = None, p: float | None = None,
            constraints: dict | None = None) -> torch.Tensor:
    """All of the above in `transformers`' order; temperature, top-k and top-p only when sampling. `constraints`:
    the keyword arguments of `constrain` (length, max_length, ...), or None."""
    scores = repetition_penalty(scores, tokens, penalty, mask)
    if constraints:
        scores = constrain(scores, tokens, **constraints)
    if do_sample:
        scores = top_p(top_k(temperature(scores, temp), k), p)
    return scores
