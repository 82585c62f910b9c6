"""Pretraining examples from a prepared corpus, and the collator that masks them.

`PretrainingDataset` builds its examples once, deterministically from a seed, as a compact table of token ranges into
the corpus memmaps (6 int64 per NSP pair; 3 arrays of one entry per document for packed segments) and reads the
tokens in `__getitem__`, so a 100M-token corpus costs tens of MB, not GBs:

- `nsp=True`: Google BERT's `create_instances_from_document`. Sentences of a document are gathered up to a target
  length (`max_seq_length - 3`, or with probability `short_seq_prob` a random shorter one), split into A and B at a
  random sentence boundary; B is the true continuation half of the time, otherwise sentences from another document
  (of any shard) and the unused sentences are put back. The pair is trimmed to fit, one token at a time from the
  longer side, front or back at random. Layout `[CLS] A [SEP] B [SEP]`, token types 0 then 1;
  `next_sentence_label` 0 when B is the continuation, 1 when it is random.
- `nsp=False`: the split's token stream, documents joined by `[SEP]`, cut into chunks of `max_seq_length - 2`, each
  `[CLS] chunk [SEP]` (RoBERTa's FULL-SENTENCES / Cramming packing); every example is full length but the last.

`PretrainingCollator` pads a list of examples to a batch and masks each example with its own seeded generator, so an
example's masking depends only on the example and its seed: the trainer re-draws masks every epoch by passing
seeds that are a function of (run seed, epoch, example index), and ranks of a distributed run mask an example
exactly as one process would.
"""

from __future__ import annotations

import logging
import operator
import random
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from plmkit.data.shards import PreparedCorpus
from plmkit.errors import PlmkitError
from plmkit.objectives.masking import IGNORE_INDEX, mask_tokens, whole_word_mask, word_ids_from_continuation

logger = logging.getLogger(__name__)


class PairInstance(NamedTuple):
    """An NSP example as token ranges: A is tokens[a_start:a_end] of shard a_shard, B likewise."""

    a_shard: int
    a_start: int
    a_end: int
    b_shard: int
    b_start: int
    b_end: int
    next_sentence_label: int


class PretrainingDataset:
    """Map-style dataset of BERT pretraining examples (see the module docstring); items are dicts of numpy arrays."""

    def __init__(self, corpus: PreparedCorpus | str | Path, split: str = "train", max_seq_length: int = 128,
                 nsp: bool = True, short_seq_prob: float = 0.1, seed: int = 0) -> None:
        self.corpus = corpus if isinstance(corpus, PreparedCorpus) else PreparedCorpus(corpus)
        self.split, self.max_seq_length, self.nsp = split, max_seq_length, nsp
        self.short_seq_prob, self.seed = short_seq_prob, seed
        self.shards = self.corpus.shards(split)
        ids = self.corpus.special_ids
        if "cls_token_id" not in ids or "sep_token_id" not in ids:
            raise PlmkitError(f"{self.corpus.directory}: the tokenizer has no [CLS]/[SEP] tokens; BERT pretraining "
                              "examples need both")
        self.cls_id, self.sep_id = ids["cls_token_id"], ids["sep_token_id"]
        smallest = 5 if nsp else 3  # [CLS] A [SEP] B [SEP] with a token each, or [CLS] x [SEP]
        if not isinstance(max_seq_length, int) or max_seq_length < smallest:
            raise PlmkitError(f"max_seq_length must be an int of at least {smallest}, got {max_seq_length!r}")
        if not 0.0 <= short_seq_prob <= 1.0:
            raise PlmkitError(f"short_seq_prob must be in [0, 1], got {short_seq_prob!r}")
        num_docs = self.corpus.num_documents(split)
        if nsp and num_docs and not self.corpus.meta["settings"].get("split_sentences", True):
            raise PlmkitError(f"{self.corpus.directory}: prepared without sentence splitting; NSP needs sentences "
                              "(use nsp=False, or prepare again without --no-sentences)")
        if nsp and num_docs == 1:
            # Random next sentences come from another document. An error here would end a run whose small
            # validation split happened to get a single document; no examples (and this warning) instead.
            logger.warning("%s: split %r has a single document and NSP needs two: it gives no examples",
                           self.corpus.directory, split)
        self._pairs, self._labels, self._num_chunks = np.zeros((0, 6), dtype=np.int64), np.zeros(0, np.int8), 0
        if num_docs > 1 and nsp:
            self._pairs, self._labels = self._build_pairs()
        elif num_docs and not nsp:
            self._build_stream()

    def __len__(self) -> int:
        return len(self._labels) if self.nsp else self._num_chunks

    def __getitem__(self, index: int) -> dict[str, Any]:
        """{'input_ids': (T,), 'token_type_ids': (T,) (int64 arrays)[, 'next_sentence_label': int]};
        T <= max_seq_length."""
        index = operator.index(index)  # ints, numpy and 0-d torch integers
        if not -len(self) <= index < len(self):
            raise IndexError(f"example {index} out of range ({len(self)} examples)")
        index %= len(self)
        return self._pair_example(index) if self.nsp else self._packed_example(index)

    # ---- NSP pairs ---------------------------------------------------------------------------------------------

    def instance(self, index: int) -> PairInstance:
        """Where example `index`'s A and B come from (NSP only)."""
        return PairInstance(*map(int, self._pairs[index]), int(self._labels[index]))

    def _build_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        rng = random.Random(self.seed)
        max_tokens = self.max_seq_length - 3
        doc_starts = np.cumsum([0] + [s.num_documents for s in self.shards])
        num_docs = int(doc_starts[-1])
        pairs, labels = array("q"), array("b")
        for k, shard in enumerate(self.shards):
            sentence_offsets, document_offsets = shard.sentence_offsets, shard.document_offsets
            for d in range(shard.num_documents):
                bounds = sentence_offsets[document_offsets[d] : document_offsets[d + 1] + 1].tolist()
                target = max_tokens
                if rng.random() < self.short_seq_prob:
                    target = rng.randint(2, max_tokens)
                num_sentences, first, i = len(bounds) - 1, 0, 0
                while i < num_sentences:
                    if i == num_sentences - 1 or bounds[i + 1] - bounds[first] >= target:
                        chunk, is_random = i + 1 - first, None
                        if chunk == 1 and i < num_sentences - 1:
                            # One sentence reached the target: Google's code would force a random B here, which
                            # skews the labels on documents of long sentences; take the next sentence as B instead
                            # half of the time.
                            is_random = rng.random() >= 0.5
                            if not is_random:
                                i, chunk = i + 1, 2
                        a_sentences = rng.randint(1, chunk - 1) if chunk >= 2 else 1
                        a_start, a_end = bounds[first], bounds[first + a_sentences]
                        if is_random is None:
                            is_random = chunk == 1 or rng.random() < 0.5
                        if is_random:
                            label = 1
                            other = rng.randrange(num_docs - 1)  # any document but this one
                            if other >= doc_starts[k] + d:
                                other += 1
                            b_shard, b_start, b_end = self._random_segment(rng, other, doc_starts,
                                                                           target - (a_end - a_start))
                            i = first + a_sentences - 1  # the sentences not used go back for the next chunk
                        else:
                            label, b_shard, b_start, b_end = 0, k, a_end, bounds[i + 1]
                        a_start, a_end, b_start, b_end = _truncate_pair(a_start, a_end, b_start, b_end, max_tokens,
                                                                        rng)
                        pairs.extend((k, a_start, a_end, b_shard, b_start, b_end))
                        labels.append(label)
                        first = i + 1
                    i += 1
        labels = np.array(labels, dtype=np.int8)
        if len(labels) >= 100 and labels.mean() > 0.6:
            logger.warning("%s: %.0f%% of the NSP pairs have a random B, because many documents have a single "
                           "sentence (is doc_boundary right for this corpus?)", self.corpus.directory,
                           100 * labels.mean())
        return np.array(pairs, dtype=np.int64).reshape(-1, 6), labels

    def _random_segment(self, rng: random.Random, document: int, doc_starts: np.ndarray,
                        target: int) -> tuple[int, int, int]:
        """(shard, start, end): sentences of `document` from a random one on, until `target` tokens are reached."""
        k = int(np.searchsorted(doc_starts, document, side="right")) - 1
        shard, d = self.shards[k], document - int(doc_starts[k])
        bounds = shard.sentence_offsets[shard.document_offsets[d] : shard.document_offsets[d + 1] + 1].tolist()
        start = rng.randint(0, len(bounds) - 2)
        end = start + 1
        while end < len(bounds) - 1 and bounds[end] - bounds[start] < target:
            end += 1
        return k, bounds[start], bounds[end]

    def _pair_example(self, index: int) -> dict[str, Any]:
        a_shard, a_start, a_end, b_shard, b_start, b_end = self._pairs[index]
        a, b = self.shards[a_shard].tokens[a_start:a_end], self.shards[b_shard].tokens[b_start:b_end]
        ids = np.empty(len(a) + len(b) + 3, dtype=np.int64)
        ids[0], ids[1 : 1 + len(a)], ids[1 + len(a)] = self.cls_id, a, self.sep_id
        ids[2 + len(a) : -1], ids[-1] = b, self.sep_id
        types = np.zeros_like(ids)
        types[2 + len(a) :] = 1
        return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": int(self._labels[index])}

    # ---- packed segments ---------------------------------------------------------------------------------------

    def _build_stream(self) -> None:
        """Per document (over all shards): its shard, first token in the shard, length, and start in the stream."""
        shard_ids, firsts, lengths = [], [], []
        for k, shard in enumerate(self.shards):
            token_bounds = shard.sentence_offsets[shard.document_offsets]  # (D + 1,)
            shard_ids.append(np.full(shard.num_documents, k, dtype=np.int32))
            firsts.append(token_bounds[:-1])
            lengths.append(np.diff(token_bounds))
        self._doc_shard, self._doc_first = np.concatenate(shard_ids), np.concatenate(firsts)
        self._doc_length = np.concatenate(lengths)
        # stream = doc0 [SEP] doc1 [SEP] ... docN-1: document d starts after d separators
        self._doc_stream_start = np.concatenate([[0], np.cumsum(self._doc_length + 1)])
        self._stream_length = int(self._doc_stream_start[-1]) - 1
        self._chunk = self.max_seq_length - 2
        self._num_chunks = -(-self._stream_length // self._chunk)

    def _packed_example(self, index: int) -> dict[str, Any]:
        start = index * self._chunk
        end = min(start + self._chunk, self._stream_length)
        parts: list[Any] = [[self.cls_id]]
        d = int(np.searchsorted(self._doc_stream_start, start, side="right")) - 1
        while d < len(self._doc_length) and self._doc_stream_start[d] < end:
            doc_start, length = int(self._doc_stream_start[d]), int(self._doc_length[d])
            lo, hi = max(start, doc_start) - doc_start, min(end, doc_start + length) - doc_start
            if hi > lo:
                first = int(self._doc_first[d])
                parts.append(self.shards[self._doc_shard[d]].tokens[first + lo : first + hi])
            if start <= doc_start + length < end:  # the separator after document d
                parts.append([self.sep_id])
            d += 1
        parts.append([self.sep_id])
        ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids)}


def _truncate_pair(a_start: int, a_end: int, b_start: int, b_end: int, max_tokens: int,
                   rng: random.Random) -> tuple[int, int, int, int]:
    """BERT's `truncate_seq_pair` on token ranges: drop a token from the longer side (B on a tie), from its front or
    back at random, until the pair fits in `max_tokens`."""
    while (a_end - a_start) + (b_end - b_start) > max_tokens:
        front = rng.random() < 0.5
        if a_end - a_start > b_end - b_start:
            a_start, a_end = (a_start + 1, a_end) if front else (a_start, a_end - 1)
        else:
            b_start, b_end = (b_start + 1, b_end) if front else (b_start, b_end - 1)
    return a_start, a_end, b_start, b_end


class PretrainingCollator:
    """Pads examples to the longest (dynamic padding) and masks each with its own seed.

    Returns tensors (B, T): input_ids (masked), token_type_ids, attention_mask, labels (-100 where not masked);
    and next_sentence_label (B,) when the examples have one.
    """

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15, whole_word: bool = False,
                 pad_to_multiple_of: int | None = None) -> None:
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise PlmkitError(f"{type(tokenizer).__name__} has no mask or pad token; masked-LM needs both")
        if not 0.0 < mlm_probability < 1.0:
            raise PlmkitError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise PlmkitError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of!r}")
        self.mlm_probability, self.whole_word, self.pad_to_multiple_of = mlm_probability, whole_word, pad_to_multiple_of
        self.vocab_size, self.mask_id, self.pad_id = len(tokenizer), tokenizer.mask_token_id, tokenizer.pad_token_id
        self.special_ids = sorted({i for i in tokenizer.all_special_ids if i is not None} | {self.pad_id})
        self._special = torch.tensor(self.special_ids, dtype=torch.long)
        self._continuation: torch.Tensor | None = None
        if whole_word:
            table = torch.zeros(self.vocab_size, dtype=torch.bool)
            for token, token_id in tokenizer.get_vocab().items():
                if token.startswith("##") and len(token) > 2 and token_id < self.vocab_size:
                    table[token_id] = True
            if not table.any():
                raise PlmkitError("whole_word masking needs a WordPiece vocabulary ('##' continuation tokens)")
            self._continuation = table

    def __call__(self, examples: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, torch.Tensor]:
        if len(seeds) != len(examples):
            raise PlmkitError(f"got {len(examples)} examples but {len(seeds)} seeds; one seed per example")
        if not examples:
            raise PlmkitError("cannot collate an empty list of examples")
        rows = [torch.as_tensor(np.asarray(ex["input_ids"]), dtype=torch.long) for ex in examples]
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        token_type_ids = torch.zeros((batch, width), dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for i, (ids, example, seed) in enumerate(zip(rows, examples, seeds, strict=True)):
            masked, row_labels = self.mask(ids, seed)
            n = len(ids)
            input_ids[i, :n], labels[i, :n], attention_mask[i, :n] = masked, row_labels, 1
            if "token_type_ids" in example:
                token_type_ids[i, :n] = torch.as_tensor(np.asarray(example["token_type_ids"]), dtype=torch.long)
        out = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
               "labels": labels}
        if "next_sentence_label" in examples[0]:
            out["next_sentence_label"] = torch.tensor([int(ex["next_sentence_label"]) for ex in examples],
                                                      dtype=torch.long)
        return out

    def mask(self, ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask one unpadded example (T,) with a generator seeded `seed`: (masked ids (T,), labels (T,))."""
        generator = torch.Generator().manual_seed(int(seed) % (1 << 64))
        row = ids.unsqueeze(0)  # (1, T)
        special = torch.isin(row, self._special)
        kwargs = dict(vocab_size=self.vocab_size, mask_token_id=self.mask_id, mlm_probability=self.mlm_probability,
                      special_ids=self.special_ids, generator=generator)
        if self._continuation is not None:
            words = word_ids_from_continuation(self._continuation[row], special)
            masked, labels = whole_word_mask(row, special, words, **kwargs)
        else:
            masked, labels = mask_tokens(row, special, **kwargs)
        return masked[0], labels[0]
