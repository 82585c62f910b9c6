"""Scoring text with a causal LM: the log-probability of each token given the ones before it, and perplexity.

By default a text is scored after a one-token prefix (the tokenizer's bos token, else its eos token, as
lm-evaluation-harness does), so that its first token is scored too; `add_prefix=False` scores from the second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmkit.errors import PlmkitError


@dataclass
class TextScore:
    text: str
    token_ids: list[int]  # the scored tokens
    tokens: list[str]
    token_logprobs: list[float]  # log p(token_i | everything before it), natural log
    total_logprob: float  # their sum

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def perplexity(self) -> float:
        """exp(-mean log-probability) over the scored tokens."""
        return math.exp(-self.total_logprob / self.num_tokens) if self.num_tokens else float("nan")


@dataclass
class Perplexity:
    perplexity: float  # exp(nll)
    nll: float  # mean negative log-likelihood per token (nats)
    num_tokens: int  # tokens scored


def prefix_id(tokenizer: Any) -> int | None:
    """The token put before a text so that its first token is scored: bos, else eos, else none."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return None


def _with_prefix(ids: list[int], prefix: int | None) -> list[int]:
    """The prefix, then the ids; not twice when the tokenizer already adds it (a bos-adding tokenizer)."""
    return ids if prefix is None or ids[:1] == [prefix] else [prefix, *ids]


def _context_limit(model: Any) -> int | None:
    c = model.config
    return c.max_position_embeddings if c.position_embedding == "learned" else None


def token_logprobs(model: Any, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """For each id list, log p(ids[i] | ids[:i]) for i >= 1, as a float32 tensor of len(ids) - 1."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):  # right padding: a causal model's real positions never see it
        ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    logits = model(ids, attention_mask=mask).logits.float()  # (B, T, V)
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return [logprobs[i, :len(row) - 1].cpu() for i, row in enumerate(rows)]


@torch.inference_mode()
def score(model: Any, tokenizer: Any, texts: str | Sequence[str], *, add_prefix: bool = True,
          batch_size: int = 8) -> list[TextScore]:
    """Per-token and total log-probabilities of each text (natural log)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    prefix = prefix_id(tokenizer) if add_prefix else None
    limit = _context_limit(model)
    rows = []
    for text in texts:
        context = _with_prefix(tokenizer.encode(text), prefix)
        if limit is not None and len(context) > limit:
            raise PlmkitError(f"a text of {len(context)} tokens is longer than the model's context ({limit}); "
                              "use perplexity(), which slides a window over long text")
        rows.append(context)
    results = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        scorable = [i for i, r in enumerate(batch) if len(r) >= 2]
        scored = dict(zip(scorable, token_logprobs(model, [batch[i] for i in scorable]), strict=True)) \
            if scorable else {}
        for i, row in enumerate(batch):
            lp = scored.get(i, torch.zeros(0))
            target = row[1:]
            results.append(TextScore(text=texts[start + i], token_ids=target,
                                     tokens=tokenizer.convert_ids_to_tokens(target), token_logprobs=lp.tolist(),
                                     total_logprob=float(lp.double().sum())))
    return results


@torch.inference_mode()
def perplexity(model: Any, tokenizer: Any, source: str | Path, *, max_length: int | None = None,
               stride: int | None = None, add_prefix: bool = True) -> Perplexity:
    """Perplexity of a text, or of a file's text when `source` is a Path, with a sliding window.

    Windows of `max_length` tokens (default: the model's context, at most 1024) advance by `stride` (default half
    a window); each token is scored once, in the first window that ends with it, with the rest of that window
    before it as context (the method of the Hugging Face perplexity guide).
    """
    if isinstance(source, Path):
        if not source.is_file():
            raise PlmkitError(f"{source}: no such file")
        try:
            source = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise PlmkitError(f"{source}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    prefix = prefix_id(tokenizer) if add_prefix else None
    ids = _with_prefix(tokenizer.encode(source), prefix)
    if len(ids) < 2:
        raise PlmkitError("nothing to score: the text has fewer than two tokens (with its prefix)")
    max_length = max_length or min(model.config.max_position_embeddings, 1024)
    stride = stride or max(1, max_length // 2)
    if not 0 < stride <= max_length:
        raise PlmkitError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    total, count, scored_until = 0.0, 0, 1  # ids[0] has no context; the next to score is ids[1]
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        if end <= scored_until:
            continue
        lp = token_logprobs(model, [ids[begin:end]])[0]  # scores ids[begin+1 : end]
        new = lp[scored_until - (begin + 1):]
        total -= float(new.double().sum())
        count += new.numel()
        scored_until = end
        if end == len(ids):
            break
    return Perplexity(perplexity=math.exp(total / count), nll=total / count, num_tokens=count)
