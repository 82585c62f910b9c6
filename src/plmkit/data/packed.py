"""Packed token streams for generative pretraining (causal LM, T5 span corruption), and the causal-LM collator.

`PackedDataset` joins the documents of a prepared split into one token stream, each document followed by the
end-of-text token (GPT-2's `<|endoftext|>`, T5's `</s>`), and cuts the stream into chunks of exactly
`chunk_length` tokens; the tail that does not fill a chunk is dropped, so every example is full length and a batch
needs no padding. As `PretrainingDataset`, it keeps only a small table per document (shard, first token, length)
and reads the tokens from the corpus memmaps in `__getitem__`.

`CausalLMCollator` stacks chunks into a batch with labels = input_ids: the model shifts them inside (position t is
scored on token t + 1), so the end-of-text token is predicted after every document and attention runs across
document boundaries, as in GPT-2's pretraining.
"""

from __future__ import annotations

import logging
import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.data.shards import PreparedCorpus
from plmkit.errors import PlmkitError

logger = logging.getLogger(__name__)


class PackedDataset:
    """Map-style dataset of full-length chunks of a split's token stream; items are {'input_ids': (chunk_length,)}
    int64 arrays."""

    def __init__(self, corpus: PreparedCorpus | str | Path, split: str = "train", chunk_length: int = 1024,
                 eos_id: int | None = None) -> None:
        self.corpus = corpus if isinstance(corpus, PreparedCorpus) else PreparedCorpus(corpus)
        self.split = split
        if not isinstance(chunk_length, int) or isinstance(chunk_length, bool) or chunk_length < 2:
            raise PlmkitError(f"chunk_length must be an int of at least 2, got {chunk_length!r}")
        self.chunk_length = chunk_length
        if eos_id is None:
            eos_id = self.corpus.special_ids.get("eos_token_id")
        if eos_id is None:
            raise PlmkitError(f"{self.corpus.directory}: the tokenizer has no end-of-text (eos) token to put between "
                              "documents")
        self.eos_id = int(eos_id)
        self.shards = self.corpus.shards(split)
        shard_ids, firsts, lengths = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for k, shard in enumerate(self.shards):
            if shard.num_documents == 0:
                continue
            bounds = shard.sentence_offsets[shard.document_offsets].astype(np.int64)  # (D + 1,) token offsets
            shard_ids.append(np.full(shard.num_documents, k, dtype=np.int64))
            firsts.append(bounds[:-1])
            lengths.append(np.diff(bounds))
        self._doc_shard, self._doc_first = np.concatenate(shard_ids), np.concatenate(firsts)
        self._doc_length = np.concatenate(lengths)
        # stream = doc0 eos doc1 eos ... docN-1 eos: document d starts after d documents and d eos tokens
        self._doc_start = np.concatenate([[0], np.cumsum(self._doc_length + 1)])
        self.stream_length = int(self._doc_start[-1])
        self._num_chunks = self.stream_length // chunk_length
        if self.stream_length and self._num_chunks == 0:
            logger.warning("%s: split %r has %d tokens, fewer than one chunk of %d: it gives no examples",
                           self.corpus.directory, split, self.stream_length, chunk_length)

    def __len__(self) -> int:
        return self._num_chunks

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"example {index} out of range ({len(self)} examples)")
        index %= len(self)
        L = self.chunk_length
        start = index * L
        out = np.empty(L, dtype=np.int64)
        d = int(np.searchsorted(self._doc_start, start, side="right")) - 1
        pos = 0
        while pos < L:
            offset = start + pos - int(self._doc_start[d])  # within document d; == its length at its eos
            take = min(int(self._doc_length[d]) - offset, L - pos)
            if take > 0:
                first = int(self._doc_first[d]) + offset
                out[pos:pos + take] = self.shards[self._doc_shard[d]].tokens[first:first + take]
                pos += take
            if pos < L:  # the chunk goes on past document d: its eos comes next
                out[pos] = self.eos_id
                pos += 1
                d += 1
        return {"input_ids": out}


class CausalLMCollator:
    """Stacks equal-length chunks: input_ids (B, T) and labels (B, T), the same tokens (shifted in the model).
    Takes the trainer's per-example seeds and ignores them: nothing here is random."""

    def __call__(self, examples: list[dict[str, Any]], seeds: list[int] | None = None) -> dict[str, torch.Tensor]:
        lengths = {len(e["input_ids"]) for e in examples}
        if len(lengths) != 1:
            raise PlmkitError(f"causal-LM chunks must have one length, got {sorted(lengths)}")
        ids = torch.from_numpy(np.stack([np.asarray(e["input_ids"], dtype=np.int64) for e in examples]))
        return {"input_ids": ids, "labels": ids.clone()}
