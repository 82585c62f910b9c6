"""Train a BERT WordPiece or a GPT-2 byte-level BPE tokenizer on text files (plain or .gz, UTF-8).

Both stream the files line by line into the `tokenizers` trainers, so a bad byte is reported with its file and line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE

from plmkit.data.text import iter_lines
from plmkit.data.tokenizer import BERT_SPECIALS, BertTokenizer, BPETokenizer, PathLike, bert_backend
from plmkit.errors import PlmkitError

logger = logging.getLogger(__name__)

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIALS = ("<|endoftext|>",)


def _check_files(files: PathLike | Sequence[PathLike]) -> list[Path]:
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    if not paths:
        raise PlmkitError("no training files given")
    for path in paths:
        if not path.is_file():
            raise PlmkitError(f"training file not found: {path}")
    return paths


def _training_texts(files: PathLike | Sequence[PathLike] | None,
                    texts: Iterable[str] | None) -> tuple[list[Path], Iterator[list[str]] | Iterable[str]]:
    if texts is not None:
        if files:
            raise PlmkitError("give training files or texts, not both")
        return [], texts
    paths = _check_files(files if files is not None else [])
    return paths, iter_lines(paths)


def _check_vocab_size(vocab_size: int, smallest: int) -> None:
    if not isinstance(vocab_size, int) or vocab_size < smallest:
        raise PlmkitError(f"vocab_size must be an int of at least {smallest}, got {vocab_size!r}")


def train_wordpiece(
    files: PathLike | Sequence[PathLike] | None,
    vocab_size: int,
    *,
    texts: Iterable[str] | None = None,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    tokenize_chinese_chars: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    special_tokens: Sequence[str] = WORDPIECE_SPECIALS,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> BertTokenizer:
    """Train a BERT WordPiece vocabulary (special tokens first, ids 0..k-1) and return its tokenizer.

    The BERT normalizer splits CJK characters apart, so Chinese gets one token per character (rare characters
    beyond the `limit_alphabet` most frequent become [UNK]). `special_tokens` must include the five BERT ones.
    `texts` (instead of `files`) trains on any iterable of strings, e.g. the documents of a pretraining corpus.
    """
    paths, batches = _training_texts(files, texts)
    missing = [tok for tok in BERT_SPECIALS.values() if tok not in special_tokens]
    if missing:
        raise PlmkitError(f"special_tokens must include {', '.join(missing)} (BERT needs them)")
    _check_vocab_size(vocab_size, len(special_tokens) + 1)
    backend = bert_backend(lowercase=lowercase, strip_accents=strip_accents,
                           tokenize_chinese_chars=tokenize_chinese_chars)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(special_tokens), limit_alphabet=limit_alphabet,
                                        continuing_subword_prefix="##", show_progress=show_progress)
    backend.train_from_iterator(batches, trainer=trainer)
    logger.info("trained WordPiece: %d tokens from %s", backend.get_vocab_size(),
                f"{len(paths)} file(s)" if paths else "the given texts")
    return BertTokenizer(backend, model_max_length=model_max_length, add_template=True)


def train_bytelevel_bpe(
    files: PathLike | Sequence[PathLike] | None,
    vocab_size: int,
    *,
    texts: Iterable[str] | None = None,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = BPE_SPECIALS,
    roles: dict[str, str] | None = None,
    model_max_length: int = 1024,
    show_progress: bool = False,
) -> BPETokenizer:
    """Train a GPT-2 style byte-level BPE (all 256 byte symbols in the vocabulary) and return its tokenizer.

    Special tokens get the first ids, in order. `roles` names them (`{"bos_token": "<s>", "pad_token": "<pad>",
    ...}`); by default the first special token serves as bos, eos and unk, as "<|endoftext|>" does in GPT-2.
    `texts` (instead of `files`) trains on any iterable of strings, e.g. both sides of a translation corpus.
    """
    paths, batches = _training_texts(files, texts)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    _check_vocab_size(vocab_size, len(alphabet) + len(special_tokens))
    if roles is not None:
        unknown = sorted(set(roles.values()) - set(special_tokens))
        if unknown:
            raise PlmkitError(f"roles name token(s) {', '.join(unknown)} that are not among special_tokens")
    backend = Tokenizer(BPE(dropout=None, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(special_tokens), initial_alphabet=alphabet,
                                  show_progress=show_progress)
    backend.train_from_iterator(batches, trainer=trainer)
    logger.info("trained byte-level BPE: %d tokens from %s", backend.get_vocab_size(),
                f"{len(paths)} file(s)" if paths else "the given texts")
    if roles is None:
        first = special_tokens[0] if special_tokens else None
        roles = {"bos_token": first, "eos_token": first, "unk_token": first}
    return BPETokenizer(backend, special_tokens=dict(roles), model_max_length=model_max_length)
