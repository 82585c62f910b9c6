"""Text generation with a `CausalLM`: greedy, sampling and beam search, with a KV cache.

Generation lives outside the model: `generate(model, ...)` only calls `model(ids, attention_mask, position_ids=...,
cache=..., logits_to_keep=1)`. Prompts of different lengths are left-padded, and each row's positions count its
own tokens only (from the attention mask), so a batched prompt generates what it would alone. The settings follow
`transformers.generate` (names and semantics), so the same call gives the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from plmkit.errors import PlmkitError
from plmkit.generation.logits import process


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (input_ids, attention_mask), each (B, T), padded on the left."""
    width = max(len(r) for r in rows)
    if width == 0:
        raise PlmkitError("cannot generate from an empty prompt")
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, S) attention mask -> (B, S) positions counting real tokens only (padding gets 0; it is masked anyway)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class StopStrings:
    """Finishes a row once its generated text contains one of the strings (the string is kept in the output).

    Checked after every token, so the first occurrence ends the row; only the generated text is searched, through
    a window of its last tokens wide enough for the longest string (a token is at least one byte).
    """

    def __init__(self, strings: Sequence[str], tokenizer: Any, prompt_length: int) -> None:
        if tokenizer is None:
            raise PlmkitError("stop_strings need the tokenizer (pass tokenizer=...) to read the generated text")
        self.strings, self.tokenizer, self.start = list(strings), tokenizer, prompt_length
        self.window = 4 * max(len(s) for s in self.strings) + 2

    def __call__(self, sequences: torch.Tensor) -> torch.Tensor:
        """sequences (N, L) -> (N,) True where a row has just produced a stop string."""
        tails = sequences[:, max(self.start, sequences.shape[1] - self.window):].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
        return torch.tensor([any(s in text for s in self.strings) for text in texts], dtype=torch.bool)


def resolve_ids(model: Any, tokenizer: Any, eos_token_id: int | Sequence[int] | None,
                pad_token_id: int | None) -> tuple[list[int], int | None]:
    """eos ids (explicit, else the model config's, else the tokenizer's) and the pad id (explicit, config, tokenizer,
    else the first eos), as `transformers` resolves them."""
    eos = eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = pad_token_id
    for candidate in (model.config.pad_token_id, getattr(tokenizer, "pad_token_id", None)):
        if pad is None:
            pad = candidate
    if pad is None and eos_ids:
        pad = eos_ids[0]
    return eos_ids, pad


def prepare_inputs(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                   prompts: str | Sequence[str] | None, tokenizer: Any, pad: int | None,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(input_ids (B, T), attention_mask (B, T) or None when nothing is padded)."""
    if (input_ids is None) == (prompts is None):
        raise PlmkitError("pass either input_ids or prompts (with tokenizer=...)")
    if prompts is not None:
        if tokenizer is None:
            raise PlmkitError("prompts need the tokenizer: pass tokenizer=...")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [tokenizer.encode(p) for p in prompts]
        input_ids, attention_mask = left_pad(rows, pad if pad is not None else 0)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    if attention_mask is not None:
        if bool((attention_mask[:, -1] == 0).any()):
            raise PlmkitError("a prompt ends in padding: pad prompts on the left for generation")
        attention_mask = attention_mask.to(device)
    return input_ids.to(device), attention_mask


@torch.inference_mode()
def generate(model: Any, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
             prompts: str | Sequence[str] | None = None, tokenizer: Any = None, max_new_tokens: int = 20,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
             repetition_penalty: float = 1.0, stop_strings: str | Sequence[str] | None = None,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             no_repeat_ngram_size: int = 0, min_length: int = 0, forced_bos_token_id: int | None = None,
             forced_eos_token_id: int | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each prompt by up to `max_new_tokens` tokens -> (B, T + new) ids: the prompts (left-padded) and
    what follows them; rows that finish early (eos, a stop string) are filled with the pad id.

    input_ids (B, T) with attention_mask (B, T) (0 at left padding), or `prompts` (str or list) with `tokenizer`.
    Greedy by default; `do_sample` draws from softmax(scores / temperature) after top-k and top-p filtering, from
    `generator` (a seeded torch.Generator makes it repeatable); `num_beams > 1` is beam search, scored as
    `transformers` does (sum of log-probabilities / generated length ** length_penalty). `repetition_penalty` is
    `transformers`' (CTRL's). `no_repeat_ngram_size`, `min_length` (of the whole sequence, prompt included),
    `forced_bos_token_id` (the first generated token after a one-token prompt: BART's decoder start) and
    `forced_eos_token_id` (the last token when the length limit is reached) are `transformers`' processors of the same
    names. `use_cache=False` recomputes every position at every step (same tokens, slower).
    """
    if max_new_tokens < 0:
        raise PlmkitError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise PlmkitError(f"temperature must be > 0 when sampling, got {temperature}")
    eos_ids, pad = resolve_ids(model, tokenizer, eos_token_id, pad_token_id)
    input_ids, attention_mask = prepare_inputs(input_ids, attention_mask, prompts, tokenizer, pad, model.device)
    limit = model.config.max_position_embeddings
    if model.config.position_embedding == "learned" and input_ids.shape[1] + max_new_tokens > limit:
        raise PlmkitError(f"{input_ids.shape[1]} prompt tokens + {max_new_tokens} new ones exceed the model's "
                          f"{limit} positions; shorten the prompt or max_new_tokens")
    constraints = {"no_repeat_ngram_size": no_repeat_ngram_size, "min_len": min_length, "eos_ids": eos_ids,
                   "forced_bos_token_id": forced_bos_token_id, "forced_eos_token_id": forced_eos_token_id}
    constraints = constraints if any(v not in (0, None) for k, v in constraints.items() if k != "eos_ids") else None
    strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
    stop = StopStrings(strings, tokenizer, input_ids.shape[1]) if strings else None
    if num_beams > 1:
        if do_sample:
            raise PlmkitError("beam sampling (num_beams > 1 with do_sample) is not supported")
        from plmkit.generation.beam import beam_search

        return beam_search(model, input_ids, attention_mask, num_beams=num_beams, max_new_tokens=max_new_tokens,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           repetition_penalty=repetition_penalty, eos_ids=eos_ids, pad=pad, stop=stop,
                           use_cache=use_cache, constraints=constraints)
    return _decode(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                   temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                   eos_ids=eos_ids, pad=pad, stop=stop, use_cache=use_cache, generator=generator,
                   constraints=constraints)


def _decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, max_new_tokens: int,
            do_sample: bool, temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float,
            eos_ids: list[int], pad: int | None, stop: StopStrings | None, use_cache: bool,
            generator: torch.Generator | None, constraints: dict | None = None) -> torch.Tensor:
    """Greedy or sampled decoding, one token per row per step."""
    B, T = input_ids.shape
    total = T + max_new_tokens
    fill = pad if pad is not None else 0  # what finished rows get
    sequences = input_ids.new_full((B, total), fill)
    sequences[:, :T] = input_ids
    mask = None
    if attention_mask is not None:  # grows with the sequence; generated tokens are real
        mask = attention_mask.new_ones(B, total)
        mask[:, :T] = attention_mask
    positions = positions_from_mask(mask) if mask is not None else None
    cache = model.new_cache(total) if use_cache else None
    eos = torch.tensor(eos_ids, dtype=torch.long, device=input_ids.device)
    unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)
    length = T
    for _ in range(max_new_tokens):
        start = cache.length if cache is not None else 0
        logits = model(sequences[:, start:length], attention_mask=mask[:, :length] if mask is not None else None,
                       position_ids=positions[:, start:length] if positions is not None else None, cache=cache,
                       logits_to_keep=1).logits[:, -1].float()  # (B, V)
        scores = process(logits, sequences[:, :length], mask[:, :length] if mask is not None else None,
                         do_sample=do_sample, penalty=repetition_penalty, temp=temperature, k=top_k, p=top_p,
                         constraints=constraints and {**constraints, "length": length, "max_length": total})
        if do_sample:
            next_tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, fill)
        sequences[:, length] = next_tokens
        length += 1
        if eos.numel():
            unfinished &= ~torch.isin(next_tokens, eos)
        if stop is not None:
            unfinished &= ~stop(sequences[:, :length]).to(unfinished.device)
        if not bool(unfinished.any()):
            break
    return sequences[:, :length]
