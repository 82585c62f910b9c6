"""Corpus preparation: raw text → sentences of token ids in sharded memmaps, streamed with bounded memory.

`prepare_corpus` reads documents in order (`plmkit.data.corpus`), sends chunks of them to worker processes that cut
them into sentences and tokenize them, and writes the results, in the order read, to the shards of a train and a
validation split (format: `plmkit.data.shards`). At most a few chunks (about 1 MB of text each) are in flight and
shard files are appended to as results come in, so memory does not grow with the corpus. The output does not depend
on the number of workers. meta.json is written last, through a temporary file and `os.replace`; the old one is
deleted before any shard is touched, so a crashed run never leaves a meta.json that describes partial shards.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from plmkit.data.corpus import DOC_BOUNDARIES, DocumentReader, expand_inputs, split_sentences
from plmkit.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    SHARD_FILE,
    TOKENIZER_DIR,
    shard_name,
    tokenizer_hash,
)
from plmkit.errors import PlmkitError

logger = logging.getLogger(__name__)

DEFAULT_SHARD_TOKENS = 1 << 26  # 64M tokens: 128 MB of uint16 per shard
CHUNK_CHARS = 1 << 20  # text per worker task
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


@dataclass(frozen=True)
class PrepareSummary:
    """What `prepare_corpus` wrote: per split, its documents, sentences, tokens and shards."""

    output_dir: Path
    splits: dict[str, dict[str, int]]
    files: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        parts = [f"{split} {c['documents']:,} documents, {c['sentences']:,} sentences, {c['tokens']:,} tokens in "
                 f"{c['shards']} shard(s)" for split, c in self.splits.items() if c["documents"]]
        return (f"prepared {self.files} file(s), {self.bytes / 1e6:.1f} MB, in {self.seconds:.1f} s: "
                f"{'; '.join(parts)} -> {self.output_dir}")


# ---- workers: text -> sentences -> token ids ----------------------------------------------------------------------

_backend: Any = None  # the worker's tokenizers.Tokenizer


def _init_worker(tokenizer_dir: str, single_process: bool = False) -> None:
    global _backend
    from plmkit.data.tokenizer import load_tokenizer

    if not single_process:  # one tokenizing thread per worker process: the processes are the parallelism
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _backend = load_tokenizer(tokenizer_dir).backend_tokenizer
    _backend.no_truncation()
    _backend.no_padding()


def _encode_chunk(job: tuple[list[str], bool, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(token ids (N,), sentence lengths (S,), sentences per document (D,)) of a chunk of D documents.

    Sentences with no tokens are dropped, so a document can have 0 sentences (the caller drops it)."""
    documents, sentences_wanted, dtype = job
    sentences: list[str] = []
    counts = np.empty(len(documents), dtype=np.int64)
    for i, text in enumerate(documents):
        parts = split_sentences(text) if sentences_wanted else [text]
        sentences.extend(parts)
        counts[i] = len(parts)
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets we do not need: ~25% faster
    encode = getattr(_backend, "encode_batch_fast", _backend.encode_batch)
    encodings = encode(sentences, add_special_tokens=False)
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=dtype, count=int(lengths.sum()))
    keep = lengths > 0
    owner = np.repeat(np.arange(len(documents)), counts)
    return ids, lengths[keep], np.bincount(owner[keep], minlength=len(documents)).astype(np.int64)


@contextmanager
def _worker_pool(tokenizer_dir: Path, num_workers: int) -> Iterator[Any]:
    """A pool of tokenizing processes, or None for one process (tokenizing in this one)."""
    if num_workers <= 1:
        _init_worker(str(tokenizer_dir), single_process=True)
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before forking: no Rust thread pool in (or warning from) forks
    try:
        with context.Pool(num_workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
            yield pool
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _encoded_chunks(jobs: Iterator[tuple[Any, ...]], pool: Any, window: int) -> Iterator[tuple]:
    """Results of `_encode_chunk` in job order; each job's last element is passed through alongside its result.

    With a pool at most `window` jobs are in flight (unlike `Pool.imap`, whose feeder thread reads the input as fast
    as it can, and whose results pile up if writing is slower): memory holds a few chunks, whatever the corpus size.
    """
    if pool is None:
        for *job, extra in jobs:
            yield _encode_chunk(tuple(job)), extra
        return
    pending: deque = deque()
    for *job, extra in jobs:
        pending.append((pool.apply_async(_encode_chunk, (tuple(job),)), extra))
        if len(pending) >= window:
            result, extra_done = pending.popleft()
            yield result.get(), extra_done
    while pending:
        result, extra_done = pending.popleft()
        yield result.get(), extra_done


# ---- writing shards -------------------------------------------------------------------------------------------------

class _SplitWriter:
    """Appends whole documents to a split's shards, starting a new shard before a document that would overflow."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._file: Any = None
        self._tokens = 0
        self._sentence_lengths: list[np.ndarray] = []
        self._document_sentences: list[np.ndarray] = []

    def add(self, ids: np.ndarray, sentence_lengths: np.ndarray, document_sentences: np.ndarray) -> None:
        """Write documents: ids (N,), sentence_lengths (S,), document_sentences (D,), every document non-empty."""
        sentence_ends = np.concatenate([[0], np.cumsum(sentence_lengths)])
        doc_sentence_ends = np.concatenate([[0], np.cumsum(document_sentences)])
        doc_token_ends = sentence_ends[doc_sentence_ends]  # (D + 1,)
        first, count = 0, len(document_sentences)
        while first < count:
            room = self.shard_tokens - self._tokens
            fit = int(np.searchsorted(doc_token_ends[first + 1 :] - doc_token_ends[first], room, side="right"))
            if fit == 0 and self._tokens > 0:
                self._close()
                continue
            end = first + max(fit, 1)  # a document longer than a shard gets a shard of its own
            if self._file is None:
                self._file = open(self.directory / f"{shard_name(self.split, len(self.shards))}.bin", "wb")
            ids[doc_token_ends[first] : doc_token_ends[end]].tofile(self._file)
            self._tokens += int(doc_token_ends[end] - doc_token_ends[first])
            # int32 while buffered (a shard's index is the only thing held in memory): 4 bytes per sentence
            self._sentence_lengths.append(
                sentence_lengths[doc_sentence_ends[first] : doc_sentence_ends[end]].astype(np.int32))
            self._document_sentences.append(document_sentences[first:end].astype(np.int32))
            first = end

    def _close(self) -> None:
        self._file.close()
        self._file = None
        name = shard_name(self.split, len(self.shards))
        sentences = _save_offsets(self.directory / f"{name}.sentences.npy", self._sentence_lengths)
        documents = _save_offsets(self.directory / f"{name}.documents.npy", self._document_sentences)
        self.shards.append({"name": name, "documents": documents, "sentences": sentences, "tokens": self._tokens})
        self._tokens, self._sentence_lengths, self._document_sentences = 0, [], []

    def finish(self) -> dict[str, Any]:
        if self._file is not None:
            self._close()
        totals = {key: sum(s[key] for s in self.shards) for key in ("documents", "sentences", "tokens")}
        return {**totals, "shards": self.shards}

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()


def _save_offsets(path: Path, counts: list[np.ndarray]) -> int:
    """Save [0, *cumsum(concatenated counts)] as an int64 .npy, piece by piece: the int64 array of a whole shard is
    never built in memory (it would be 3x the int32 buffer). Returns the number of counts."""
    total = sum(len(c) for c in counts)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<i8")), "fortran_order": False, "shape": (total + 1,)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        offset = np.zeros(1, dtype="<i8")
        offset.tofile(handle)
        for piece in counts:
            ends = np.cumsum(piece, dtype="<i8")
            ends += offset[0]
            ends.tofile(handle)
            if len(ends):
                offset[0] = ends[-1]
    return total


# ---- the pipeline ---------------------------------------------------------------------------------------------------

def _chunks(reader: DocumentReader, sentences: bool, dtype: str) -> Iterator[tuple[list[str], bool, str, int]]:
    """Jobs for `_encode_chunk`, about CHUNK_CHARS of text each, with the bytes read so far (for progress)."""
    documents, size = [], 0
    for text in reader:
        documents.append(text)
        size += len(text)
        if size >= CHUNK_CHARS:
            yield documents, sentences, dtype, reader.bytes_read
            documents, size = [], 0
    if documents:
        yield documents, sentences, dtype, reader.bytes_read


def _special_ids(tokenizer: Any) -> dict[str, int]:
    roles = ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id", "unk_token_id", "bos_token_id",
             "eos_token_id")
    return {role: getattr(tokenizer, role) for role in roles if getattr(tokenizer, role) is not None}


def _clear_output(directory: Path) -> None:
    """Delete what an earlier prepare wrote here: meta.json first, so it never describes half-written shards.
    Only plmkit's own file names are touched (the tokenizer copy is overwritten later)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).unlink(missing_ok=True)
    for path in directory.iterdir():
        if SHARD_FILE.match(path.name) or path.name == f"{META_FILE}.tmp":
            path.unlink()


def _copy_tokenizer(source: Path, directory: Path) -> None:
    """A byte-for-byte copy of the tokenizer files in <directory>/tokenizer (a no-op if the source is that folder)."""
    target = directory / TOKENIZER_DIR
    if target.exists() and target.resolve() == source.resolve():
        return
    target.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        (target / name).unlink(missing_ok=True)  # no stale vocab.txt beside a new tokenizer.json
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def _check_settings(doc_boundary: str, shard_tokens: int, validation_fraction: float, validation_docs: int | None,
                    num_workers: int | None) -> int:
    if doc_boundary not in DOC_BOUNDARIES:
        raise PlmkitError(f"unknown doc_boundary {doc_boundary!r}; choose from: {', '.join(DOC_BOUNDARIES)}")
    if not isinstance(shard_tokens, int) or shard_tokens < 1:
        raise PlmkitError(f"shard_tokens must be a positive int, got {shard_tokens!r}")
    if not isinstance(validation_fraction, (int, float)) or not 0.0 <= validation_fraction < 1.0:
        raise PlmkitError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    if validation_docs is not None and (not isinstance(validation_docs, int) or validation_docs < 0):
        raise PlmkitError(f"validation_docs must be a non-negative int, got {validation_docs!r}")
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if not isinstance(workers, int) or workers < 1:
        raise PlmkitError(f"num_workers must be a positive int, got {num_workers!r}")
    return workers


def prepare_corpus(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    tokenizer_dir: str | os.PathLike,
    *,
    doc_boundary: str = "blank_line",
    text_field: str = "text",
    encoding_errors: str = "strict",
    split_sentences: bool = True,
    num_workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    validation_fraction: float = 0.01,
    validation_docs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PrepareSummary:
    """Tokenize text files into a prepared corpus folder (see `plmkit.data.shards` for the format).

    inputs: files, folders, glob patterns; `.gz`, `.zip` (each member a file) and JSONL (`.jsonl[.gz]`, documents
    in `text_field`) included.
    doc_boundary: "blank_line" (blocks of lines) or "line" (one document a line); JSONL has one per record.
    encoding_errors: "strict" (an invalid UTF-8 line is an error naming it) or "replace" (U+FFFD, with a warning).
    split_sentences: cut documents into sentences (needed for NSP); False keeps a document as one segment.
    validation_fraction: each document goes to validation with this probability (drawn from `seed`, in reading
    order); validation_docs: exactly this many documents instead, chosen uniformly (costs one extra reading pass).
    num_workers: tokenizing processes (default: the CPU count); changes speed only, never the output.
    shard_tokens: a shard is closed before a document that would take it past this many tokens.
    progress: a progress bar (bytes read, MB/s and tokens/s) on stderr.
    """
    started = time.perf_counter()
    workers = _check_settings(doc_boundary, shard_tokens, validation_fraction, validation_docs, num_workers)
    out = Path(output_dir)
    # An input folder may hold the output folder (a rerun of `prepare data/ --output data/prepared`): skip it.
    files = [f for f in expand_inputs(inputs) if out.resolve() not in f.resolve().parents]
    if not files:
        raise PlmkitError(f"no input files outside the output folder {out}")
    tok_dir = Path(tokenizer_dir)
    if not tok_dir.is_dir():
        raise PlmkitError(f"tokenizer directory not found: {tok_dir}")
    from plmkit.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok_dir)
    digest, hashed = tokenizer_hash(tok_dir)
    vocab_size = len(tokenizer)
    dtype = np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)
    reader = DocumentReader(files, doc_boundary=doc_boundary, text_field=text_field, encoding_errors=encoding_errors)
    rng = np.random.default_rng(seed)
    chosen: np.ndarray | None = None
    if validation_docs is not None:
        total_docs = sum(1 for _ in reader)
        if validation_docs >= total_docs and validation_docs > 0:
            raise PlmkitError(f"validation_docs={validation_docs} leaves no training documents: the inputs hold "
                              f"{total_docs} document(s)")
        chosen = np.zeros(total_docs, dtype=bool)
        chosen[rng.choice(total_docs, validation_docs, replace=False)] = True

    _clear_output(out)
    writers = {split: _SplitWriter(out, split, dtype, shard_tokens) for split in ("train", "validation")}
    from tqdm import tqdm

    seen_docs, tokens, done = 0, 0, 0
    # The pool first, the progress bar (and its monitor thread) after: fork a process that has one thread only.
    with _worker_pool(tok_dir, workers) as pool, tqdm(total=reader.total_bytes, unit="B", unit_scale=True,
                                                      desc="prepare", file=sys.stderr, disable=not progress,
                                                      dynamic_ncols=True) as bar:
        try:
            jobs = _chunks(reader, split_sentences, dtype.name)
            for (ids, lengths, doc_sentences), bytes_read in _encoded_chunks(jobs, pool, 2 * workers):
                n = len(doc_sentences)
                is_val = chosen[seen_docs : seen_docs + n] if chosen is not None \
                    else rng.random(n) < validation_fraction
                seen_docs += n
                _write_chunk(writers, ids, lengths, doc_sentences, is_val)
                tokens += len(ids)
                bar.update(bytes_read - done)
                done = bytes_read
                rate = tokens / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{rate / 1e6:.2f}M tok/s", refresh=False)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
    splits = {split: writer.finish() for split, writer in writers.items()}
    if splits["train"]["tokens"] == 0:
        raise PlmkitError(f"no text to train on in {', '.join(map(str, files[:3]))}"
                          f"{' ...' if len(files) > 3 else ''} (all documents empty, or all in validation)")

    _copy_tokenizer(tok_dir, out)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "tokenizer": {"sha256": digest, "hashed_files": hashed, "class": type(tokenizer).__name__,
                      "vocab_size": vocab_size, "special_ids": _special_ids(tokenizer),
                      "all_special_ids": tokenizer.all_special_ids},
        "settings": {"inputs": [str(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)],
                     "doc_boundary": doc_boundary, "text_field": text_field, "encoding_errors": encoding_errors,
                     "split_sentences": split_sentences,
                     "shard_tokens": shard_tokens, "validation_fraction": validation_fraction,
                     "validation_docs": validation_docs, "seed": seed},
        "input_files": len(files),
        "input_bytes": reader.total_bytes,
        "splits": splits,
    }
    _write_json_atomic(out / META_FILE, meta)
    summary = PrepareSummary(out, {s: {k: v if k != "shards" else len(v) for k, v in c.items()}
                                   for s, c in splits.items()},
                             len(files), reader.total_bytes, time.perf_counter() - started)
    logger.debug("%s", summary)
    return summary


def _write_chunk(writers: dict[str, _SplitWriter], ids: np.ndarray, lengths: np.ndarray, doc_sentences: np.ndarray,
                 is_val: np.ndarray) -> None:
    """Send each non-empty document of a chunk to its split's writer, keeping reading order within a split."""
    keep = doc_sentences > 0
    if keep.all() and not is_val.any():
        writers["train"].add(ids, lengths, doc_sentences)
        return
    sentence_ends = np.concatenate([[0], np.cumsum(lengths)])
    doc_sentence_ends = np.concatenate([[0], np.cumsum(doc_sentences)])
    doc_tokens = np.diff(sentence_ends[doc_sentence_ends])
    for split, mask in (("train", keep & ~is_val), ("validation", keep & is_val)):
        if mask.any():
            writers[split].add(ids[np.repeat(mask, doc_tokens)], lengths[np.repeat(mask, doc_sentences)],
                               doc_sentences[mask])


def _write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(content, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
