"""T5 span corruption: drop random spans of a token chunk, each replaced by a sentinel; the target spells them out.

As in the T5 paper (Raffel et al. 2020, section 3.1.4) and Hugging Face's `run_t5_mlm_flax.py`: of a chunk of
`length` tokens, round(length * noise_density) are noise, in round(noise / mean_noise_span_length) spans; the span
lengths and the lengths of the clean runs between them are random segmentations (every segment at least 1 long),
interleaved clean first. Each noise span is replaced in the input by one sentinel, `<extra_id_0>` for the first
span, `<extra_id_1>` for the next, ...; the target is, for each span, its sentinel then its tokens, then eos:

    tokens   The cute dog walks in the park
    input    The <extra_id_0> walks <extra_id_1> park </s>
    target   <extra_id_0> cute dog <extra_id_1> in the </s>

Sentinel ids are the tokenizer's ids of the tokens `<extra_id_i>` (`sentinel_ids`): in Hugging Face's T5 vocabulary
they are at the top (<extra_id_0> = vocab_size - 1 - 0 ...), in a tokenizer plmkit trains they follow <pad> </s> <unk>
(ids 3, 4, ...). `span_corruption_lengths` gives the raw chunk length whose input is exactly `input_length` tokens
(T5's inputs_length 512 → chunks of 568 tokens, targets of 114).

`SpanCorruptionCollator` corrupts each example with a generator seeded by the example's own seed, so an example's
corruption is a pure function of (example, seed), as `PretrainingCollator`'s masking is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from plmkit.errors import PlmkitError
from plmkit.objectives.masking import IGNORE_INDEX

SENTINEL = "<extra_id_{}>"
NUM_SENTINELS = 100
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
T5_ROLES = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


def t5_special_tokens(num_sentinels: int = NUM_SENTINELS) -> tuple[str, ...]:
    """<pad> </s> <unk> then <extra_id_0> ... <extra_id_{n-1}>: the special tokens of a tokenizer trained for T5."""
    return (*T5_SPECIALS, *(SENTINEL.format(i) for i in range(num_sentinels)))


def sentinel_ids(tokenizer: Any) -> list[int]:
    """Ids of <extra_id_0>, <extra_id_1>, ... in `tokenizer`, for as long as it has them (in order)."""
    vocab = tokenizer.get_vocab()
    ids = []
    while SENTINEL.format(len(ids)) in vocab:
        ids.append(vocab[SENTINEL.format(len(ids))])
    return ids


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a chunk of `length` tokens (`random_spans_noise_mask`'s arithmetic)."""
    num_noise = int(np.round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)  # at least one noise and one clean token
    num_spans = int(np.round(min(num_noise, length - num_noise) / mean_noise_span_length))
    return num_noise, max(num_spans, 1)


def span_corruption_lengths(input_length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(chunk length, target length) for corrupted inputs of exactly `input_length` tokens (eos included), as
    `compute_input_and_target_lengths` in run_t5_mlm_flax.py."""

    def lengths(tokens: int) -> tuple[int, int]:
        num_noise = int(round(tokens * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return tokens - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens = input_length
    while lengths(tokens + 1)[0] <= input_length:
        tokens += 1
    targets = lengths(tokens)[1]
    if noise_density == 0.5 and targets > input_length:
        tokens, targets = tokens - 1, targets - 1
    return tokens, targets


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (num_segments,) of a random split of num_items into num_segments runs, each at least 1 long."""
    first = np.zeros(num_items, dtype=bool)
    first[1 + rng.choice(num_items - 1, num_segments - 1, replace=False)] = True  # segment starts but the first
    return np.bincount(np.cumsum(first), minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """A (length,) bool mask, True at noise tokens: clean and noise runs interleaved, clean first."""
    if length < 2:
        raise PlmkitError(f"span corruption needs at least 2 tokens, got {length}")
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    clean_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    runs = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)  # clean, noise, clean, noise, ...
    return np.repeat(np.arange(2 * num_spans) % 2 == 1, runs)


def corrupt_spans(ids: np.ndarray, noise: np.ndarray, sentinels: Sequence[int] | np.ndarray,
                  eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of token ids (N,) with noise mask (N,): each noise span becomes its sentinel in the input;
    the target is sentinel + span tokens for every span, then eos."""
    ids, noise = np.asarray(ids, dtype=np.int64), np.asarray(noise, dtype=bool)
    starts = noise & ~np.concatenate([[False], noise[:-1]])  # the first token of every noise span
    span = np.cumsum(starts) - 1  # at a noise token: the index of its span
    num_spans = int(starts.sum())
    sentinels = np.asarray(sentinels, dtype=np.int64)
    if num_spans > len(sentinels):
        raise PlmkitError(f"{num_spans} noise spans but only {len(sentinels)} sentinel tokens")
    inputs = np.where(starts, sentinels[np.maximum(span, 0)], ids)[~noise | starts]
    targets = np.insert(ids[noise], np.flatnonzero(starts[noise]), sentinels[:num_spans])
    return np.append(inputs, eos_id), np.append(targets, eos_id)


class SpanCorruptionCollator:
    """Corrupts each example ({'input_ids': (N,)}) with its own seed and pads: input_ids, attention_mask (B, S)
    and labels (B, T), -100 at padding (full-length chunks need none). The decoder inputs are the labels shifted
    right, which the model makes itself."""

    def __init__(self, sentinel_ids: Sequence[int], eos_id: int, pad_id: int, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0) -> None:
        if not 0.0 < noise_density < 1.0:
            raise PlmkitError(f"noise_density must be in (0, 1), got {noise_density!r}")
        if not mean_noise_span_length >= 1.0:
            raise PlmkitError(f"mean_noise_span_length must be at least 1, got {mean_noise_span_length!r}")
        if not sentinel_ids:
            raise PlmkitError("span corruption needs sentinel tokens (<extra_id_0>, <extra_id_1>, ...)")
        if eos_id is None or pad_id is None:
            raise PlmkitError("span corruption needs an eos and a pad token")
        self.sentinels = np.asarray(sentinel_ids, dtype=np.int64)
        self.eos_id, self.pad_id = int(eos_id), int(pad_id)
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length

    def max_spans(self, length: int) -> int:
        """The number of noise spans in a chunk of `length` tokens (the sentinels it needs)."""
        return noise_counts(length, self.noise_density, self.mean_noise_span_length)[1]

    def corrupt(self, ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) of one example; a pure function of (ids, seed)."""
        rng = np.random.default_rng(seed)
        noise = random_spans_noise_mask(len(ids), self.noise_density, self.mean_noise_span_length, rng)
        return corrupt_spans(ids, noise, self.sentinels, self.eos_id)

    def __call__(self, examples: list[dict[str, Any]], seeds: list[int]) -> dict[str, torch.Tensor]:
        if len(seeds) != len(examples):
            raise ValueError(f"{len(seeds)} seeds for {len(examples)} examples")
        pairs = [self.corrupt(e["input_ids"], s) for e, s in zip(examples, seeds, strict=True)]
        S, T = max(len(p[0]) for p in pairs), max(len(p[1]) for p in pairs)
        input_ids = torch.full((len(pairs), S), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), S), dtype=torch.long)
        labels = torch.full((len(pairs), T), IGNORE_INDEX, dtype=torch.long)
        for i, (inp, tgt) in enumerate(pairs):
            input_ids[i, :len(inp)] = torch.from_numpy(inp)
            attention_mask[i, :len(inp)] = 1
            labels[i, :len(tgt)] = torch.from_numpy(tgt)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
