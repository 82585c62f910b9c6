"""Masked-LM input corruption: BERT's 80/10/10 token masking and whole-word masking. Pure functions.

Both select positions, then corrupt the selected ones as BERT does: 80% become [MASK], 10% a random token,
10% stay unchanged; the labels are the original ids at selected positions and -100 (ignored by the loss)
everywhere else. Randomness comes only from the `generator` passed in, so a seeded generator reproduces a
batch exactly.

Random replacement tokens are drawn uniformly from the vocabulary *minus* special ids: `special_ids` when
given (pass `tokenizer.all_special_ids`), else the ids found at special positions of the batch itself
([CLS], [SEP], [PAD] in practice); `mask_token_id` is always excluded. Hugging Face draws from the whole
vocabulary; excluding a handful of ids out of ~30k changes nothing measurable except that a model never
learns to see [CLS] or [PAD] in the middle of a sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
MASK_FRACTION = 0.8  # of the selected positions, replaced by [MASK]
RANDOM_FRACTION = 0.1  # replaced by a random token; the remaining 0.1 keep their id


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, *, vocab_size: int, mask_token_id: int,
                mlm_probability: float = 0.15, special_ids: Sequence[int] | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Select each non-special token with probability `mlm_probability`, then corrupt it 80/10/10.

    input_ids (B, T) long; special_mask (B, T) bool, True at special tokens and padding (never selected).
    Returns (masked_input_ids (B, T), labels (B, T)): labels hold the original id at selected positions, else -100.
    """
    selected = _bernoulli(input_ids.shape, mlm_probability, generator, input_ids.device) & ~special_mask
    return _corrupt(input_ids, special_mask, selected, vocab_size, mask_token_id, special_ids, generator)


def whole_word_mask(input_ids: torch.Tensor, special_mask: torch.Tensor, word_ids: torch.Tensor, *,
                    vocab_size: int, mask_token_id: int, mlm_probability: float = 0.15,
                    special_ids: Sequence[int] | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Select whole words with probability `mlm_probability` each, so all sub-tokens of a word are selected
    together; each selected token is then corrupted 80/10/10 on its own (as BERT's and Hugging Face's
    whole-word masking do). The expected fraction of selected tokens is `mlm_probability`.

    input_ids, special_mask (B, T) as in `mask_tokens`; word_ids (B, T) long, the word each token belongs to
    (-1, or anything, at special positions). A word is a run of consecutive non-special positions with the
    same word id, so ids may restart per segment, as the tokenizer's `word_ids()` do for sentence pairs.
    """
    starts = word_starts(word_ids, special_mask)
    word_index = starts.reshape(-1).cumsum(0).view_as(starts) - 1  # (B, T) global index of each token's word
    num_words = int(starts.sum())
    chosen = _bernoulli((max(num_words, 1),), mlm_probability, generator, input_ids.device)
    selected = chosen[word_index.clamp(min=0)] & ~special_mask
    return _corrupt(input_ids, special_mask, selected, vocab_size, mask_token_id, special_ids, generator)


def word_starts(word_ids: torch.Tensor, special_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool, True at the first token of each word: a non-special token whose word id differs from its
    left neighbour's, or whose left neighbour is special (or the row start)."""
    prev_ids = F.pad(word_ids[:, :-1], (1, 0), value=-1)
    prev_special = F.pad(special_mask[:, :-1], (1, 0), value=True)
    return ~special_mask & ((word_ids != prev_ids) | prev_special)


def word_ids_from_continuation(is_continuation: torch.Tensor, special_mask: torch.Tensor) -> torch.Tensor:
    """Word ids from WordPiece's '##' continuation flags: (B, T) bool -> (B, T) long, -1 at special positions.

    `is_continuation` is e.g. `table[input_ids]` for a (V,) bool table of the ids whose token starts with '##'.
    A continuation right after a special token starts a new word.
    """
    prev_special = F.pad(special_mask[:, :-1], (1, 0), value=True)
    starts = ~special_mask & (~is_continuation | prev_special)
    ids = starts.long().cumsum(1) - 1
    return ids.masked_fill(special_mask, -1)


def _bernoulli(shape: tuple[int, ...] | torch.Size, p: float, generator: torch.Generator | None,
               device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) < p


def _corrupt(input_ids: torch.Tensor, special_mask: torch.Tensor, selected: torch.Tensor, vocab_size: int,
             mask_token_id: int, special_ids: Sequence[int] | None,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """80/10/10 on exactly the `selected` positions (B, T) bool."""
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = selected & (u < MASK_FRACTION)
    to_random = selected & (u >= MASK_FRACTION) & (u < MASK_FRACTION + RANDOM_FRACTION)
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    random_ids = _random_tokens(input_ids, special_mask, vocab_size, mask_token_id, special_ids, generator)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def _random_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, vocab_size: int, mask_token_id: int,
                   special_ids: Sequence[int] | None, generator: torch.Generator | None) -> torch.Tensor:
    """(B, T) ids drawn uniformly from the vocabulary without the special ids (see the module docstring)."""
    if special_ids is not None:
        excluded = input_ids.new_tensor([mask_token_id, *special_ids])
    else:
        excluded = torch.cat([input_ids[special_mask], input_ids.new_tensor([mask_token_id])])
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=input_ids.device)
    allowed[excluded[(excluded >= 0) & (excluded < vocab_size)]] = False
    candidates = allowed.nonzero().squeeze(1)  # (V - number of special ids,)
    pick = torch.randint(len(candidates), input_ids.shape, generator=generator, device=input_ids.device)
    return candidates[pick]
