"""Fast tokenizers on the `tokenizers` library, call-compatible with Hugging Face's for the common API.

`BertTokenizer` (WordPiece, as `transformers.BertTokenizerFast`) and `BPETokenizer` (GPT-2 byte-level BPE, as
`transformers.GPT2TokenizerFast`) share one calling convention (`plmkit.data.tokenizer_base`): `tok(text, text_pair,
padding=..., truncation=..., return_tensors=...)` returns a `BatchEncoding`. Both save a directory that
`transformers.AutoTokenizer` loads with identical ids. Training lives in `plmkit.data.tokenizer_train`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordPiece

from plmkit.data.tokenizer_base import (
    BERT_SPECIALS,
    GPT2_SPECIALS,
    BatchEncoding,
    PathLike,
    PretrainedTokenizer,
    _as_dir,
    _read_dir,
    _read_json,
)
from plmkit.errors import PlmkitError

logger = logging.getLogger(__name__)

__all__ = ["BatchEncoding", "BertTokenizer", "BPETokenizer", "PretrainedTokenizer", "bert_backend", "load_tokenizer"]


def _bert_template(backend: Tokenizer, cls_token: str, sep_token: str) -> processors.TemplateProcessing:
    """`[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1 [SEP]:1`, as Hugging Face builds it."""
    ids = [(cls_token, backend.token_to_id(cls_token)), (sep_token, backend.token_to_id(sep_token))]
    return processors.TemplateProcessing(single=f"{cls_token}:0 $A:0 {sep_token}:0",
                                         pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
                                         special_tokens=ids)


def bert_backend(vocab: dict[str, int] | None = None, *, lowercase: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, unk_token: str = "[UNK]") -> Tokenizer:
    """The WordPiece pipeline of BERT, without its post-processor (it needs the [CLS]/[SEP] ids)."""
    backend = Tokenizer(WordPiece(vocab, unk_token=unk_token, max_input_chars_per_word=100) if vocab is not None
                        else WordPiece(unk_token=unk_token, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                    strip_accents=strip_accents, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


class BertTokenizer(PretrainedTokenizer):
    """A fast BERT (WordPiece) tokenizer that gives the ids of `transformers.BertTokenizerFast`."""

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    tokenizer_class = "BertTokenizer"

    def __init__(self, backend: Tokenizer, *, special_tokens: dict[str, str | None] | None = None,
                 model_max_length: int = 512, add_template: bool = False) -> None:
        """Wrap a WordPiece `backend`; `add_template` sets the [CLS]/[SEP] post-processor (needs both in vocab)."""
        specials = {**BERT_SPECIALS, **(special_tokens or {})}
        super().__init__(backend, specials, model_max_length)
        if add_template:
            backend.post_processor = _bert_template(backend, self.cls_token, self.sep_token)

    def _normalizer_flag(self, name: str, default: Any) -> Any:
        normalizer = self._tokenizer.normalizer
        return getattr(normalizer, name) if isinstance(normalizer, normalizers.BertNormalizer) else default

    @property
    def do_lower_case(self) -> bool:
        return self._normalizer_flag("lowercase", True)

    @property
    def strip_accents(self) -> bool | None:
        return self._normalizer_flag("strip_accents", None)

    @property
    def tokenize_chinese_chars(self) -> bool:
        return self._normalizer_flag("handle_chinese_chars", True)

    @classmethod
    def from_file(cls, vocab_file: PathLike, *, lowercase: bool = True, strip_accents: bool | None = None,
                  tokenize_chinese_chars: bool = True, model_max_length: int = 512,
                  special_tokens: dict[str, str | None] | None = None) -> BertTokenizer:
        """Build the pipeline Hugging Face builds from a WordPiece vocab.txt (one token a line, id = line number)."""
        path = Path(vocab_file)
        if not path.is_file():
            raise PlmkitError(f"vocab file not found: {path}")
        try:
            vocab = WordPiece.read_file(str(path))
        except Exception as err:
            raise PlmkitError(f"cannot read vocab file {path}: {err}".replace("\n", " ")) from err
        specials = {**BERT_SPECIALS, **(special_tokens or {})}
        backend = bert_backend(vocab, lowercase=lowercase, strip_accents=strip_accents,
                               tokenize_chinese_chars=tokenize_chinese_chars, unk_token=specials["unk_token"])
        return cls(backend, special_tokens=specials, model_max_length=model_max_length, add_template=True)

    @classmethod
    def from_pretrained(cls, path: PathLike) -> BertTokenizer:
        """Load a directory holding tokenizer.json (preferred) or vocab.txt, plus optional tokenizer_config.json."""
        directory, config, specials = _read_dir(path)
        max_len = int(config.get("model_max_length", 512))
        if (directory / "tokenizer.json").is_file():
            tok = cls(_load_backend(directory / "tokenizer.json"), special_tokens=specials, model_max_length=max_len)
            for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
                if key in config and config[key] != getattr(tok, key):  # transformers 5 would follow the config
                    logger.warning("%s: %s=%r disagrees with tokenizer.json's normalizer (%r); using tokenizer.json",
                                   directory / "tokenizer_config.json", key, config[key], getattr(tok, key))
            return tok
        if not (directory / "vocab.txt").is_file():
            raise PlmkitError(f"no tokenizer.json or vocab.txt in {directory}")
        return cls.from_file(directory / "vocab.txt", lowercase=config.get("do_lower_case", True),
                             strip_accents=config.get("strip_accents"),
                             tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                             model_max_length=max_len, special_tokens=specials)

    def _config(self) -> dict[str, Any]:
        if not isinstance(self._tokenizer.normalizer, normalizers.BertNormalizer):
            logger.warning("normalizer is not a BertNormalizer; Hugging Face will rebuild it from tokenizer_config")
        return {**super()._config(), "do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars, "clean_up_tokenization_spaces": False}


class BPETokenizer(PretrainedTokenizer):
    """A GPT-2 style byte-level BPE tokenizer that gives the ids of `transformers.GPT2TokenizerFast`.

    GPT-2 adds no token around a text, and has no pad token unless one is set (`tok.pad_token = tok.eos_token`).
    """

    tokenizer_class = "GPT2Tokenizer"

    def __init__(self, backend: Tokenizer, *, special_tokens: dict[str, str | None] | None = None,
                 model_max_length: int = 1024) -> None:
        defaults = {role: tok for role, tok in GPT2_SPECIALS.items() if backend.token_to_id(tok) is not None}
        super().__init__(backend, {**defaults, **(special_tokens or {})}, model_max_length)

    @classmethod
    def from_files(cls, vocab_file: PathLike, merges_file: PathLike, *, model_max_length: int = 1024,
                   special_tokens: dict[str, str | None] | None = None) -> BPETokenizer:
        """Build the GPT-2 pipeline from vocab.json and merges.txt."""
        for path in (Path(vocab_file), Path(merges_file)):
            if not path.is_file():
                raise PlmkitError(f"BPE file not found: {path}")
        try:
            vocab, merges = BPE.read_file(str(vocab_file), str(merges_file))
        except Exception as err:
            raise PlmkitError(f"cannot read {vocab_file} / {merges_file}: {err}".replace("\n", " ")) from err
        backend = Tokenizer(BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                                fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        return cls(backend, special_tokens=special_tokens, model_max_length=model_max_length)

    @classmethod
    def from_pretrained(cls, path: PathLike) -> BPETokenizer:
        """Load a directory holding tokenizer.json (preferred) or vocab.json + merges.txt."""
        directory, config, specials = _read_dir(path)
        max_len = int(config.get("model_max_length", 1024))
        if (directory / "tokenizer.json").is_file():
            return cls(_load_backend(directory / "tokenizer.json"), special_tokens=specials, model_max_length=max_len)
        if not (directory / "vocab.json").is_file() or not (directory / "merges.txt").is_file():
            raise PlmkitError(f"no tokenizer.json or vocab.json + merges.txt in {directory}")
        return cls.from_files(directory / "vocab.json", directory / "merges.txt", model_max_length=max_len,
                              special_tokens=specials)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "add_prefix_space": False, "errors": "replace"}


def _load_backend(path: Path) -> Tokenizer:
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as err:
        raise PlmkitError(f"cannot read {path}: {err}".replace("\n", " ")) from err
    # Truncation/padding baked into a tokenizer.json are ignored, as Hugging Face does: they are set per call.
    backend.no_truncation()
    backend.no_padding()
    return backend


def load_tokenizer(path: PathLike) -> BertTokenizer | BPETokenizer:
    """Load a tokenizer directory as `BertTokenizer` or `BPETokenizer`, by what it holds.

    Decided by tokenizer_config.json's tokenizer_class, else the model type in tokenizer.json, else the vocabulary
    files (vocab.txt: WordPiece; vocab.json + merges.txt: BPE).
    """
    directory = _as_dir(path)
    kinds = {"BertTokenizer": BertTokenizer, "BertTokenizerFast": BertTokenizer, "GPT2Tokenizer": BPETokenizer,
             "GPT2TokenizerFast": BPETokenizer}
    if (directory / "tokenizer_config.json").is_file():
        name = _read_json(directory / "tokenizer_config.json").get("tokenizer_class")
        if name in kinds:
            return kinds[name].from_pretrained(directory)
    if (directory / "tokenizer.json").is_file():
        model_type = _read_json(directory / "tokenizer.json").get("model", {}).get("type")
        by_model = {"WordPiece": BertTokenizer, "BPE": BPETokenizer}
        if model_type not in by_model:
            raise PlmkitError(f"{directory / 'tokenizer.json'}: unsupported model type {model_type!r}; "
                              "choose from: WordPiece, BPE")
        return by_model[model_type].from_pretrained(directory)
    if (directory / "vocab.txt").is_file():
        return BertTokenizer.from_pretrained(directory)
    if (directory / "vocab.json").is_file():
        return BPETokenizer.from_pretrained(directory)
    raise PlmkitError(f"no tokenizer files (tokenizer.json, vocab.txt or vocab.json + merges.txt) in {directory}")
