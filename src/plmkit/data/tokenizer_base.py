"""The shared base of plmkit's tokenizers: the Hugging Face calling convention, `BatchEncoding`, special tokens,
saving. The concrete tokenizers (`BertTokenizer`, `BPETokenizer`) are in `plmkit.data.tokenizer`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from plmkit.errors import PlmkitError
from plmkit.interop.hub import looks_like_hub_id

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
# Order of the special-token roles, as Hugging Face lists them.
SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
BERT_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                 "mask_token": "[MASK]"}
GPT2_SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
_PADDING = {None: None, False: None, "do_not_pad": None, True: "longest", "longest": "longest",
            "max_length": "max_length"}
_TRUNCATION = {False: None, "do_not_truncate": None, True: "longest_first", "longest_first": "longest_first",
               "only_first": "only_first", "only_second": "only_second"}
# BatchEncoding key → tokenizers.Encoding attribute
_ENCODING_FIELDS = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask",
                    "special_tokens_mask": "special_tokens_mask", "offset_mapping": "offsets"}
# A model_max_length this large means "no limit" (Hugging Face stores int(1e30) when a model has none).
NO_MAX_LENGTH = int(1e20)


class BatchEncoding(dict):
    """The output of a tokenizer call: `input_ids`, `token_type_ids`, `attention_mask`, ... by key or attribute.

    Values are lists (flat for a single text, nested for a batch) or, with `return_tensors`, arrays of shape (B, T)
    (`offset_mapping`: (B, T, 2)). `encodings` keeps the `tokenizers.Encoding` of each row for `word_ids`.
    """

    def __init__(self, data: dict[str, Any], encodings: list | None = None) -> None:
        super().__init__(data)
        self.encodings = encodings or []

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor value to `device` (in place, like Hugging Face's); returns self."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Index of the word each token comes from (None for special and padding tokens)."""
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 or 1 for tokens of the first or second text, None for special and padding tokens."""
        return self.encodings[batch_index].sequence_ids


def _token_str(value: Any) -> str | None:
    """A special token as written in a tokenizer config: a string or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlmkitError(f"cannot read {path}: {err}".replace("\n", " ")) from err


def _as_dir(path: PathLike) -> Path:
    directory = Path(path)
    if not directory.exists() and looks_like_hub_id(str(path)):
        from plmkit.interop.hub import resolve_model_dir

        return resolve_model_dir(str(path))  # a hub id such as "bert-base-uncased": download, or one clear line
    if not directory.is_dir():
        what = "must be a directory, not a file" if directory.exists() else "not found"
        raise PlmkitError(f"tokenizer directory {what}: {directory}")
    return directory


def _read_dir(path: PathLike) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """(directory, its tokenizer_config.json or {}, the special tokens that config names by role)."""
    directory = _as_dir(path)
    config_file = directory / "tokenizer_config.json"
    config = _read_json(config_file) if config_file.is_file() else {}
    return directory, config, {role: _token_str(config[role]) for role in SPECIAL_ROLES if config.get(role)}


def _tensor(rows: list, return_tensors: str, key: str) -> Any:
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise PlmkitError(f"cannot make '{key}' a tensor: sequences have lengths {min(lengths)} to {max(lengths)}; "
                          "pass padding=True (or padding='max_length')")
    if return_tensors == "pt":
        import torch

        return torch.tensor(rows, dtype=torch.long)
    import numpy as np

    return np.array(rows, dtype=np.int64)


class _SpecialToken:
    """A special-token role on a tokenizer: `tok.pad_token` (settable, as in Hugging Face) and `tok.pad_token_id`."""

    def __init__(self, role: str, as_id: bool = False) -> None:
        self.role, self.as_id = role, as_id

    def __get__(self, obj: PretrainedTokenizer | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        token = obj._specials.get(self.role)
        return obj._tokenizer.token_to_id(token) if self.as_id and token is not None else token

    def __set__(self, obj: PretrainedTokenizer, token: str | None) -> None:
        if self.as_id:
            raise AttributeError(f"set {self.role} (a token), not its id")
        obj._set_special(self.role, token)


class PretrainedTokenizer:
    """What `BertTokenizer` and `BPETokenizer` share: calling, encoding, decoding, saving.

    Wraps a `tokenizers.Tokenizer`; its truncation and padding are set on every call, as Hugging Face does.
    """

    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    tokenizer_class = ""
    bos_token, bos_token_id = _SpecialToken("bos_token"), _SpecialToken("bos_token", as_id=True)
    eos_token, eos_token_id = _SpecialToken("eos_token"), _SpecialToken("eos_token", as_id=True)
    unk_token, unk_token_id = _SpecialToken("unk_token"), _SpecialToken("unk_token", as_id=True)
    sep_token, sep_token_id = _SpecialToken("sep_token"), _SpecialToken("sep_token", as_id=True)
    pad_token, pad_token_id = _SpecialToken("pad_token"), _SpecialToken("pad_token", as_id=True)
    cls_token, cls_token_id = _SpecialToken("cls_token"), _SpecialToken("cls_token", as_id=True)
    mask_token, mask_token_id = _SpecialToken("mask_token"), _SpecialToken("mask_token", as_id=True)

    def __init__(self, backend: Tokenizer, special_tokens: dict[str, str | None], model_max_length: int) -> None:
        self._tokenizer = backend
        self.model_max_length = model_max_length
        self._specials: dict[str, str] = {}
        for role, token in special_tokens.items():
            self._set_special(role, token)

    def _set_special(self, role: str, token: str | None) -> None:
        if role not in SPECIAL_ROLES:
            raise PlmkitError(f"unknown special token role {role!r}; choose from: {', '.join(SPECIAL_ROLES)}")
        if token is None:
            self._specials.pop(role, None)
            return
        # An added special token, so that e.g. "[MASK]" in a text is one token (a no-op when it already is one).
        self._tokenizer.add_special_tokens([token])
        self._specials[role] = token

    @property
    def all_special_tokens(self) -> list[str]:
        """The role tokens, then any other special token of the backend."""
        extra = [t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.special]
        ordered = [self._specials[role] for role in SPECIAL_ROLES if role in self._specials]
        return list(dict.fromkeys([*ordered, *extra]))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._tokenizer.token_to_id(token) for token in self.all_special_tokens]

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (Hugging Face's name for it)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the model vocabulary, without tokens added on top of it."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token → id, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def _configure(self, truncation: str | None, max_length: int | None, padding: str | None) -> None:
        if truncation is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(max_length, stride=0, strategy=truncation, direction="right")
        if padding is None:
            self._tokenizer.no_padding()
        else:
            if self.pad_token is None:
                raise PlmkitError(f"{type(self).__name__} has no pad_token to pad with; set one (tok.pad_token = ...)")
            self._tokenizer.enable_padding(direction="right", pad_id=self.pad_token_id, pad_type_id=0,
                                           pad_token=self.pad_token,
                                           length=max_length if padding == "max_length" else None)

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        add_special_tokens: bool = True,
        is_split_into_words: bool = False,
    ) -> BatchEncoding:
        """Tokenize one text (or pair) or a batch of them.

        padding: False, True / "longest" (to the longest in the batch) or "max_length".
        truncation: False, True / "longest_first", "only_first" or "only_second"; without `max_length` it truncates
        to `model_max_length`. As in Hugging Face, truncation=None with a max_length and no padding truncates
        "longest_first". return_tensors: None (lists; a single text gives flat lists), "pt" or "np" (shape (B, T)).
        is_split_into_words: text is a list of words (a batch: a list of such lists).
        """
        if padding not in _PADDING:
            raise PlmkitError(f"unknown padding {padding!r}; choose from: False, True, 'longest', 'max_length'")
        if truncation is None:
            truncation = max_length is not None and _PADDING[padding] is None
        if truncation not in _TRUNCATION:
            raise PlmkitError(f"unknown truncation {truncation!r}; choose from: False, True, 'longest_first', "
                              "'only_first', 'only_second'")
        if return_tensors not in (None, "pt", "np"):
            raise PlmkitError(f"unknown return_tensors {return_tensors!r}; choose from: None, 'pt', 'np'")
        pad, trunc = _PADDING[padding], _TRUNCATION[truncation]
        if max_length is None and (trunc is not None or pad == "max_length"):
            max_length = self.model_max_length
            if max_length >= NO_MAX_LENGTH:
                logger.warning("no max_length given and model_max_length is unset: not truncating or padding to it")
                trunc, pad = None, (None if pad == "max_length" else pad)
        batched, inputs = _batch_inputs(text, text_pair, is_split_into_words)
        self._configure(trunc, max_length, pad)
        try:
            encodings = self._tokenizer.encode_batch(inputs, is_pretokenized=is_split_into_words,
                                                     add_special_tokens=add_special_tokens)
        except Exception as err:  # the Rust side raises plain Exceptions, e.g. for an impossible truncation
            raise PlmkitError(f"cannot tokenize: {err}".replace("\n", " ")) from err
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        wanted = {"input_ids": True, "token_type_ids": return_token_type_ids, "attention_mask": return_attention_mask,
                  "special_tokens_mask": return_special_tokens_mask, "offset_mapping": return_offsets_mapping}
        data = {key: [getattr(e, _ENCODING_FIELDS[key]) for e in encodings] for key, keep in wanted.items() if keep}
        if return_tensors is not None:
            data = {key: _tensor(rows, return_tensors, key) for key, rows in data.items()}
        elif not batched:
            data = {key: rows[0] for key, rows in data.items()}
        return BatchEncoding(data, encodings)

    def encode(self, text: str, text_pair: str | None = None, *, add_special_tokens: bool = True,
               truncation: bool | str | None = None, max_length: int | None = None,
               padding: bool | str = False) -> list[int]:
        """Token ids of one text (or pair), special tokens included by default."""
        if not isinstance(text, str):
            raise PlmkitError(f"encode takes one str, got {type(text).__name__}; call the tokenizer on a batch")
        return self(text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation,
                    max_length=max_length, padding=padding)["input_ids"]

    def tokenize(self, text: str) -> list[str]:
        """Tokens of `text`, without special tokens."""
        self._configure(None, None, None)
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        """Text of a sequence of ids (a list, 1-D tensor or array). Note: skips special tokens by default."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return self._tokenizer.decode([ids] if isinstance(ids, int) else list(ids),
                                      skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True) -> list[str]:
        """`decode` for each row of a list of id lists or a (B, T) tensor."""
        sequences = sequences.tolist() if hasattr(sequences, "tolist") else sequences
        return self._tokenizer.decode_batch([list(s) for s in sequences], skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Id of a token (or of each token); unknown tokens give `unk_token_id`."""
        if isinstance(tokens, str):
            token_id = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | None | list[str | None]:
        """Token of an id (or of each id)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        return [self._tokenizer.id_to_token(i) for i in ids]

    def get_special_tokens_mask(self, ids: Any) -> list[int]:
        """1 where an id (of a sequence that already has its special tokens) is a special token, else 0.

        Hugging Face's `get_special_tokens_mask(ids, already_has_special_tokens=True)`; used to keep masking off
        [CLS], [SEP] and [PAD] in pretraining.
        """
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        special = set(self.all_special_ids)
        return [int(i in special) for i in ids]

    def _config(self) -> dict[str, Any]:
        """tokenizer_config.json contents (subclasses add their keys)."""
        roles = {role: self._specials[role] for role in SPECIAL_ROLES if role in self._specials}
        return {"tokenizer_class": self.tokenizer_class, "model_max_length": self.model_max_length, **roles}

    def save_pretrained(self, directory: PathLike) -> list[Path]:
        """Write tokenizer.json, the model's vocabulary files, tokenizer_config.json and special_tokens_map.json."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self._configure(None, None, None)
        self._tokenizer.save(str(out / "tokenizer.json"))
        written = [out / "tokenizer.json", *map(Path, self._tokenizer.model.save(str(out)))]
        config = self._config()
        special_map = {role: config[role] for role in SPECIAL_ROLES if role in config}
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
            (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(out / name)
        logger.info("saved %s (%d tokens) to %s", type(self).__name__, len(self), out)
        return written


def _batch_inputs(text: Any, text_pair: Any, split: bool) -> tuple[bool, list]:
    """(is a batch, inputs for `encode_batch`), checking the types and that pairs line up."""
    def is_one(x: Any) -> bool:
        return (isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x)) if split else isinstance(x, str)

    def rows(x: Any, name: str) -> tuple[bool, list]:
        if is_one(x):
            return False, [x]
        if isinstance(x, (list, tuple)) and all(is_one(item) for item in x):
            return True, list(x)
        kind = "a list of words or a list of such lists" if split else "a str or a list of str"
        raise PlmkitError(f"{name} must be {kind}, got {type(x).__name__}")

    batched, texts = rows(text, "text")
    if text_pair is None:
        return batched, texts
    pair_batched, pairs = rows(text_pair, "text_pair")
    if pair_batched != batched or len(pairs) != len(texts):
        raise PlmkitError(f"text_pair must match text: got {len(texts)} texts and {len(pairs)} pairs")
    return batched, list(zip(texts, pairs, strict=True))
