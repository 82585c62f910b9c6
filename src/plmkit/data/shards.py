"""The on-disk format of a prepared pretraining corpus, and `PreparedCorpus`, its reader.

A prepared corpus is a folder (written by `plmkit.data.prepare.prepare_corpus`):

    meta.json                       written last: format version, tokenizer hash, dtype, counts, settings
    tokenizer/                      a byte-for-byte copy of the tokenizer's files
    train-00000.bin                 token ids of whole documents, back to back (uint16, or uint32 for vocab > 65535)
    train-00000.sentences.npy       int64 (S + 1,): token offset of each sentence in the .bin, then the token count
    train-00000.documents.npy       int64 (D + 1,): sentence index of each document's first sentence, then S
    validation-00000.*              the same for the validation split

A document never spans two shards. The .bin files are read as read-only memmaps, opened on first use, so opening a
corpus costs nothing and a `PreparedCorpus` pickles (to DataLoader workers) without its arrays.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from plmkit.errors import PlmkitError

FORMAT = "plmkit-pretraining-corpus"
FORMAT_VERSION = 1
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "validation")
# Every file a prepare writes besides meta.json and tokenizer/ matches this (a rerun deletes the old ones first).
SHARD_FILE = re.compile(r"^(train|validation)-\d{5}\.(bin|sentences\.npy|documents\.npy)$")


# The files whose bytes define a tokenizer's ids, in order of preference (hashed to tie a corpus to its tokenizer).
_HASHED_FILES = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))


def tokenizer_hash(tokenizer_dir: str | Path) -> tuple[str, str]:
    """(sha256 of the tokenizer's defining file(s), their names): tokenizer.json, else vocab.txt, else the BPE pair."""
    directory = Path(tokenizer_dir)
    for names in _HASHED_FILES:
        if all((directory / name).is_file() for name in names):
            digest = hashlib.sha256()
            for name in names:
                digest.update((directory / name).read_bytes())
            return digest.hexdigest(), "+".join(names)
    raise PlmkitError(f"no tokenizer.json, vocab.txt or vocab.json + merges.txt in {directory}")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


class Shard:
    """One shard: `tokens` (N,) memmap, `sentence_offsets` (S + 1,), `document_offsets` (D + 1,), all lazy."""

    def __init__(self, directory: Path, name: str, *, tokens: int, sentences: int, documents: int,
                 dtype: np.dtype) -> None:
        self.directory, self.name, self.dtype = directory, name, dtype
        self.num_tokens, self.num_sentences, self.num_documents = tokens, sentences, documents
        path = directory / f"{name}.bin"
        if not path.is_file():
            raise PlmkitError(f"{path}: shard missing (meta.json lists it)")
        size, expected = path.stat().st_size, tokens * dtype.itemsize
        if size != expected:
            raise PlmkitError(f"{path}: {size} bytes, but meta.json says {tokens} {dtype.name} tokens "
                              f"({expected} bytes); prepare the corpus again")

    def __getstate__(self) -> dict[str, Any]:
        # The arrays are re-opened where the shard is unpickled, never copied through a pipe.
        return {k: v for k, v in self.__dict__.items() if k not in ("tokens", "sentence_offsets", "document_offsets")}

    @cached_property
    def tokens(self) -> np.ndarray:
        if self.num_tokens == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.directory / f"{self.name}.bin", dtype=self.dtype, mode="r", shape=(self.num_tokens,))

    @cached_property
    def sentence_offsets(self) -> np.ndarray:
        return self._index("sentences", self.num_sentences + 1, self.num_tokens)

    @cached_property
    def document_offsets(self) -> np.ndarray:
        return self._index("documents", self.num_documents + 1, self.num_sentences)

    def _index(self, kind: str, length: int, last: int) -> np.ndarray:
        path = self.directory / f"{self.name}.{kind}.npy"
        try:
            offsets = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise PlmkitError(f"cannot read {path}: {err}".replace("\n", " ")) from err
        if offsets.shape != (length,) or offsets[0] != 0 or offsets[-1] != last:
            raise PlmkitError(f"{path}: does not match meta.json (shape {offsets.shape}, expected ({length},) "
                              f"from 0 to {last}); prepare the corpus again")
        return offsets

    def document_span(self, index: int) -> tuple[int, int]:
        """(first, end) token offsets of document `index` within this shard."""
        sentences = self.sentence_offsets
        return int(sentences[self.document_offsets[index]]), int(sentences[self.document_offsets[index + 1]])

    def document(self, index: int) -> list[np.ndarray]:
        """The sentences of document `index`, each a (length,) array of token ids (views of the memmap)."""
        first, end = self.document_offsets[index], self.document_offsets[index + 1]
        bounds = self.sentence_offsets[first : end + 1]
        return [self.tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class PreparedCorpus:
    """A prepared corpus folder: its splits, their shards and documents, and the tokenizer to decode with."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            what = "is not a folder" if self.directory.exists() and not self.directory.is_dir() else "has no meta.json"
            raise PlmkitError(f"{self.directory} {what}: not a prepared corpus (run `plmkit prepare`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PlmkitError(f"{meta_path}: cannot read: {err}".replace("\n", " ")) from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PlmkitError(f"{meta_path}: not a plmkit prepared-corpus meta.json")
        if meta.get("format_version") != FORMAT_VERSION:
            raise PlmkitError(f"{meta_path}: format version {meta.get('format_version')!r}; this plmkit reads "
                              f"version {FORMAT_VERSION} (prepare the corpus again)")
        self.meta = meta
        try:
            self.dtype = np.dtype(meta["dtype"])
            self._shards = {split: [Shard(self.directory, s["name"], tokens=int(s["tokens"]),
                                          sentences=int(s["sentences"]), documents=int(s["documents"]),
                                          dtype=self.dtype) for s in info["shards"]]
                            for split, info in meta["splits"].items()}
            self.vocab_size = int(meta["tokenizer"]["vocab_size"])
            self.special_ids: dict[str, int] = dict(meta["tokenizer"]["special_ids"])
        except (KeyError, TypeError, ValueError) as err:
            raise PlmkitError(f"{meta_path}: malformed ({type(err).__name__}: {err})") from err
        self._doc_starts = {split: np.cumsum([0] + [s.num_documents for s in shards])
                            for split, shards in self._shards.items()}

    def __repr__(self) -> str:
        counts = ", ".join(f"{split}: {self.num_documents(split)} docs, {self.num_tokens(split)} tokens"
                           for split in self.splits)
        return f"PreparedCorpus({str(self.directory)!r}; {counts})"

    @property
    def splits(self) -> list[str]:
        """Split names that hold at least one document ('train', and 'validation' if there is one)."""
        return [split for split in self._shards if self.num_documents(split) > 0]

    def shards(self, split: str = "train") -> list[Shard]:
        if split not in self._shards:
            raise PlmkitError(f"{self.directory}: no split {split!r}; choose from: {', '.join(self.splits)}")
        return self._shards[split]

    def num_documents(self, split: str = "train") -> int:
        return sum(s.num_documents for s in self.shards(split))

    def num_sentences(self, split: str = "train") -> int:
        return sum(s.num_sentences for s in self.shards(split))

    def num_tokens(self, split: str = "train") -> int:
        return sum(s.num_tokens for s in self.shards(split))

    def locate(self, split: str, index: int) -> tuple[int, int]:
        """(shard index, document index within that shard) of the split's document `index`."""
        self.shards(split)  # an unknown split: one clear error
        starts = self._doc_starts[split]
        if not 0 <= index < starts[-1]:
            raise IndexError(f"document {index} out of range for split {split!r} ({starts[-1]} documents)")
        shard = int(np.searchsorted(starts, index, side="right")) - 1
        return shard, index - int(starts[shard])

    def document(self, split: str, index: int) -> list[np.ndarray]:
        """Document `index` of `split` (counted across its shards) as a list of sentences of token ids."""
        shard, local = self.locate(split, index)
        return self.shards(split)[shard].document(local)

    def documents(self, split: str = "train") -> Iterator[list[np.ndarray]]:
        """Every document of `split`, in order, as lists of sentences of token ids."""
        for shard in self.shards(split):
            for index in range(shard.num_documents):
                yield shard.document(index)

    def check_tokenizer(self, tokenizer_dir: str | Path) -> None:
        """Raise PlmkitError unless `tokenizer_dir` holds the tokenizer this corpus was prepared with (same hash)."""
        digest, files = tokenizer_hash(tokenizer_dir)
        if digest != self.meta["tokenizer"]["sha256"]:
            raise PlmkitError(f"{self.directory} was prepared with another tokenizer than {tokenizer_dir} "
                              f"(sha256 of {files}: {digest[:12]}, corpus: {self.meta['tokenizer']['sha256'][:12]}); "
                              "prepare the corpus again with this tokenizer")

    @cached_property
    def tokenizer(self) -> Any:
        """The tokenizer the corpus was prepared with (from the copy in the corpus folder)."""
        from plmkit.data.tokenizer import load_tokenizer

        return load_tokenizer(self.directory / TOKENIZER_DIR)

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of token ids: a 1-D array or list, or a document (a list of sentences, concatenated)."""
        if isinstance(ids, list) and ids and isinstance(ids[0], np.ndarray):
            ids = np.concatenate(ids)
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "tokenizer"}
