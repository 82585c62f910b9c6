"""Token classification (NER): CoNLL-2003, CLUENER and any CoNLL-column or JSONL file of tokens and tags.

Labels live on words; the model sees sub-word tokens. The first sub-token of each word carries the word's label and
every other position (later sub-tokens, [CLS], [SEP], padding) gets -100, which the loss ignores. Predictions come
back per word (the tag of its first sub-token) and as entity spans with their text. Scores are entity-level
precision/recall/F1 from seqeval in strict IOB2 mode.

`case_token_types=True` gives an uncased model (e.g. all-MiniLM-L6-v2, whose tokenizer lower-cases) back the one cue
for names that lower-casing removes: token type 1 marks the sub-tokens of every word that starts with an upper-case
letter (single-sentence tagging leaves the segment embedding unused otherwise). The setting is stored in the fine-tuned
model's config (`case_token_types`), so evaluation and prediction mark capitals the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.evaluation.metrics import entity_scores
from plmkit.models.bert import BertForTokenClassification
from plmkit.tasks.base import IGNORE_INDEX, Task, label_id, model_labels, pad_rows
from plmkit.tasks.readers import read_conll, read_jsonl, record_value

logger = logging.getLogger(__name__)

FORMATS = ("conll", "jsonl", "cluener")
# The CoNLL-2003 NER tags in the order of the Hugging Face hub copy's integer labels.
CONLL2003_HUB_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@dataclass
class TokenExample:
    """A sentence as words and, when labelled, one tag per word."""

    tokens: list[str]
    tags: list[str] | None = None
    id: str = ""
    source: str = ""  # "file:line" of the sentence's first line, for error messages


def tag_list(tags: Sequence[str]) -> list[str]:
    """Tags in a stable order: "O", then B-/I- of each entity type (both, even if only one was seen, so that a
    tag of another split is never unknown), then any other tag, sorted."""
    distinct = set(tags)
    types = sorted({tag[2:] for tag in distinct if tag[:2] in ("B-", "I-")})
    iob = (["O"] if "O" in distinct or types else []) + [f"{prefix}-{t}" for t in types for prefix in "BI"]
    return iob + sorted(distinct - set(iob))


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) word spans of IOB2 tags. An I-X that does not continue an X entity starts one, as
    the Hugging Face pipeline reads it (seqeval's strict mode, used for scoring, drops such entities instead)."""
    spans: list[tuple[str, int, int]] = []
    current: list[Any] | None = None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = (tag[0], tag[2:]) if tag[:2] in ("B-", "I-") else ("O", "")
        if current is not None and (prefix != "I" or kind != current[0]):
            spans.append((current[0], current[1], i))
            current = None
        if prefix == "B" or (prefix == "I" and current is None):
            current = [kind, i]
    return spans


def word_predictions(word_ids: Sequence[int | None], token_tags: Sequence[Any], num_words: int) -> list[Any]:
    """The value at the first sub-token of each word (None for a word with no token: cut off or empty)."""
    words: list[Any] = [None] * num_words
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            words[word] = token_tags[position]
        previous = word
    return words


def case_types(word_ids: Sequence[int | None], words: Sequence[str]) -> list[int]:
    """Token type per token: 1 for a sub-token of a word that starts with an upper-case letter, else 0 (special
    tokens and padding included)."""
    return [int(w is not None and words[w][:1].isupper()) for w in word_ids]


def fill_missing(tags: list[str | None]) -> list[str]:
    """Tags for words the model never saw (truncated, or no sub-token such as a space): "O", or I-X inside an X
    entity so that a space in an entity does not cut it in two."""
    filled = list(tags)
    for i, tag in enumerate(filled):
        if tag is None:
            before = filled[i - 1] if i else "O"
            after = next((t for t in filled[i + 1:] if t is not None), "O")
            inside = before[:2] in ("B-", "I-") and after == f"I-{before[2:]}"
            filled[i] = f"I-{before[2:]}" if inside else "O"
    return filled


class TokenClassificationTask(Task):
    """A tag per word. `format`: "conll" (whitespace columns, `token_column` and `tag_column`), "jsonl"
    (`tokens_key` and `tags_key` lists) or "cluener" (text with character spans; each character is a word).
    `joiner` glues words back into entity text ("" for character-level Chinese)."""

    kind = "token-classification"
    model_class = BertForTokenClassification

    def __init__(self, name: str, *, format: str = "conll", token_column: int = 0, tag_column: int = -1,
                 tokens_key: str = "tokens", tags_key: str = "tags", char_level: bool = False, joiner: str = " ",
                 metrics: Sequence[str] = ("f1", "precision", "recall", "accuracy"), main_metric: str = "f1",
                 hub_columns: tuple[str, str] = ("tokens", "ner_tags"), hub_tags: Sequence[str] | None = None,
                 case_token_types: bool | None = None, **task_options: Any) -> None:
        if format not in FORMATS:
            raise PlmkitError(f"task {name!r}: unknown format {format!r}; choose from: {', '.join(FORMATS)}")
        super().__init__(name, metrics=metrics, main_metric=main_metric, **task_options)
        self.format, self.token_column, self.tag_column = format, token_column, tag_column
        self.tokens_key, self.tags_key = tokens_key, tags_key
        self.char_level, self.joiner = char_level or format == "cluener", "" if format == "cluener" else joiner
        self.hub_columns, self.hub_tags = hub_columns, tuple(hub_tags) if hub_tags else None
        if case_token_types is not None and not isinstance(case_token_types, bool):
            raise PlmkitError(f"task {name!r}: case_token_types must be true or false, got {case_token_types!r}")
        # The option as given (None: take the model's); `case_marks` is what featurize and predict apply.
        self.case_token_types = case_token_types
        self.case_marks = bool(case_token_types)

    # ------------------------------------------------------------------ reading
    def read_file(self, path: Path, split: str = "train") -> list[TokenExample]:
        path = Path(path)
        if self.format == "conll":
            return [TokenExample(tokens, tags, str(i), f"{path}:{line}")
                    for i, (line, tokens, tags) in enumerate(read_conll(path, self.token_column, self.tag_column))]
        examples = []
        for lineno, record in read_jsonl(path):
            where = f"{path}:{lineno}"
            if self.format == "cluener":
                tokens, tags = cluener_tags(record, where)
            else:
                tokens = [str(t) for t in record_value(record, self.tokens_key, where)]
                tags = record.get(self.tags_key)
                if tags is not None and len(tags) != len(tokens):
                    raise PlmkitError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
                tags = None if tags is None else [str(t) for t in tags]
            examples.append(TokenExample(tokens, tags, str(record.get("id", len(examples))), where))
        return examples

    def from_hf_dataset(self, dataset: Any, split: str = "train") -> list[TokenExample]:
        tokens_col, tags_col = self.hub_columns
        names = self.hub_tags
        feature = getattr(dataset, "features", {}).get(tags_col)
        if hasattr(getattr(feature, "feature", None), "names"):  # Sequence(ClassLabel(names=...))
            names = tuple(feature.feature.names)
        examples = []
        for i, row in enumerate(dataset):
            tags = row.get(tags_col)
            if tags is not None:
                tags = [names[t] if isinstance(t, int) and names else str(t) for t in tags]
            examples.append(TokenExample(list(row[tokens_col]), tags, str(row.get("id", i)),
                                         f"{self.hub[0] if self.hub else 'dataset'}[{split}][{i}]"))
        return examples

    # ------------------------------------------------------------------ labels, features, model
    def label_list(self, examples: Sequence[TokenExample]) -> list[str]:
        tags = [tag for e in examples if e.tags for tag in e.tags]
        if not tags:
            raise PlmkitError(f"task {self.name!r}: no tagged examples to take the tag set from")
        return tag_list(tags)

    def featurize(self, examples: Sequence[TokenExample], tokenizer: Any, label2id: dict[str, int] | None = None,
                  max_length: int = 128, **options: Any) -> list[dict[str, Any]]:
        """One feature per sentence, truncated to `max_length` tokens: input_ids, token_type_ids, attention_mask,
        `labels` (the word's tag id on its first sub-token, -100 elsewhere) when tagged, and for decoding
        `word_ids` (the word of each token, None for specials) and `example_index`."""
        if not examples:
            return []
        encoded = tokenizer([e.tokens for e in examples], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
        features = []
        for i, example in enumerate(examples):
            word_ids = encoded.word_ids(i)
            feature: dict[str, Any] = {key: encoded[key][i] for key in keys}
            if self.case_marks:
                feature["token_type_ids"] = case_types(word_ids, example.tokens)
            if example.tags is not None:
                if label2id is None:
                    raise PlmkitError(f"task {self.name!r}: featurize needs label2id for tagged examples")
                where = example.source or f"example {example.id}"
                ids = [label_id(label2id, tag, where) for tag in example.tags]
                first = word_predictions(word_ids, range(len(word_ids)), len(example.tokens))
                labels = [IGNORE_INDEX] * len(word_ids)
                for word, position in enumerate(first):
                    if position is not None:
                        labels[position] = ids[word]
                feature["labels"] = labels
            feature["word_ids"] = word_ids
            feature["example_index"] = i
            features.append(feature)
        return features

    def _collate_labels(self, features: Sequence[dict[str, Any]], length: int) -> dict[str, torch.Tensor]:
        if not self._labelled(features, "labels"):
            return {}
        return {"labels": pad_rows([f["labels"] for f in features], IGNORE_INDEX, length)}

    def configure(self, config: ModelConfig | str | Path) -> None:
        """Take the settings a fine-tuned model carries: mark capitals when its config says it was trained so
        (unless the task was given `case_token_types` itself)."""
        if isinstance(config, (str, Path)):
            from plmkit.interop.checkpoint import read_config

            config = read_config(Path(config))
        saved = bool(getattr(config, "case_token_types", False))  # also a transformers config loaded by hand
        self.case_marks = saved if self.case_token_types is None else self.case_token_types
        if self.case_marks and config.type_vocab_size < 2:
            raise PlmkitError(f"task {self.name!r}: case_token_types needs a segment embedding of 2 types; the model "
                              f"has type_vocab_size={config.type_vocab_size}")

    def model_config(self, config: ModelConfig, id2label: dict[int, str] | None) -> ModelConfig:
        self.configure(config)
        if self.case_marks != config.case_token_types:
            config = config.replace(case_token_types=self.case_marks)
        if id2label is None:
            return config
        return config.replace(num_labels=len(id2label), id2label=id2label)

    # ------------------------------------------------------------------ scoring and prediction
    def scorer(self, model: Any, examples: Sequence[TokenExample]) -> TokenScorer:
        return TokenScorer(self, model_labels(model), examples)

    def split_words(self, text: str, tokenizer: Any) -> list[tuple[str, int, int]]:
        """(word, start, end) of a raw string: characters for a character-level task, else the tokenizer's own
        pre-tokenization (BERT: whitespace and punctuation), so that words match what the model was trained on."""
        if self.char_level:
            return [(ch, i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
        pre = getattr(tokenizer.backend_tokenizer, "pre_tokenizer", None)
        if pre is None:
            import re

            return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        return [(word, start, end) for word, (start, end) in pre.pre_tokenize_str(text)]

    def predict(self, model: Any, tokenizer: Any, inputs: Sequence[Any], *, batch_size: int = 32,
                max_length: int = 512) -> list[dict[str, Any]]:
        """For each input (a str, a list of words or a TokenExample): {"words", "tags", "entities"}, an entity
        being {"type", "text", "start", "end" (word span, end exclusive), "score" (mean probability of its words)}
        plus "char_start" and "char_end" (offsets in the string) when the input is a str."""
        items = [self._as_words(item, tokenizer) for item in inputs]
        labels = model_labels(model)
        self.configure(model.config)
        results = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                texts = [[w for w, _, _ in words] for words, _ in chunk]
                enc = tokenizer(texts, is_split_into_words=True, truncation=True, max_length=max_length,
                                padding=True, return_tensors="pt")
                if self.case_marks:
                    enc["token_type_ids"] = torch.tensor([case_types(enc.word_ids(row), words)
                                                          for row, words in enumerate(texts)])
                inputs_ = {k: v.to(model.device) for k, v in enc.items()}
                probs, ids = model(**inputs_).logits.float().softmax(-1).max(-1)  # (B, T) each
                for row, (words, text) in enumerate(chunk):
                    word_ids = enc.word_ids(row)
                    tags = word_predictions(word_ids, [labels[i] for i in ids[row].tolist()], len(words))
                    scores = word_predictions(word_ids, probs[row].tolist(), len(words))
                    results.append(self._decode(words, text, fill_missing(tags), scores))
        return results

    def _as_words(self, item: Any, tokenizer: Any) -> tuple[list[tuple[str, int | None, int | None]], str | None]:
        if isinstance(item, TokenExample):
            item = item.tokens
        if isinstance(item, str):
            return self.split_words(item, tokenizer), item
        if isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item):
            return [(w, None, None) for w in item], None
        raise PlmkitError(f"cannot tag {type(item).__name__}: pass a str, a list of words or a TokenExample")

    def _decode(self, words: list[tuple[str, int | None, int | None]], text: str | None, tags: list[str],
                scores: list[float | None]) -> dict[str, Any]:
        entities = []
        for kind, start, end in entity_spans(tags):
            known = [s for s in scores[start:end] if s is not None]
            entity = {"type": kind, "text": self.joiner.join(w for w, _, _ in words[start:end]), "start": start,
                      "end": end, "score": sum(known) / len(known) if known else None}
            if text is not None:
                entity["char_start"], entity["char_end"] = words[start][1], words[end - 1][2]
                entity["text"] = text[entity["char_start"]:entity["char_end"]]
            entities.append(entity)
        return {"words": [w for w, _, _ in words], "tags": tags, "entities": entities}


class TokenScorer:
    """Keeps the predicted tag of each word of each sentence (never the logits); scores against the examples' tags.
    Words the model did not see (cut by truncation) count as predicted "O"."""

    def __init__(self, task: TokenClassificationTask, labels: list[str], examples: Sequence[TokenExample]) -> None:
        self.task, self.labels, self.examples = task, labels, examples
        self.predicted: dict[int, list[str | None]] = {}

    def update(self, features: list[dict[str, Any]], outputs: Any) -> None:
        ids = outputs.logits.argmax(-1).tolist()  # (B, T)
        for feature, row in zip(features, ids, strict=True):
            index = feature["example_index"]
            if not 0 <= index < len(self.examples):
                raise PlmkitError(f"feature of example {index}, but only {len(self.examples)} examples were given")
            self.predicted[index] = word_predictions(feature["word_ids"], [self.labels[i] for i in row],
                                                     len(self.examples[index].tokens))

    def compute(self) -> dict[str, float]:
        gold, pred = [], []
        for index, example in enumerate(self.examples):
            if example.tags is None:
                raise PlmkitError(f"{example.source or example.id}: cannot evaluate an untagged sentence")
            gold.append(example.tags)
            pred.append(fill_missing(self.predicted.get(index, [None] * len(example.tokens))))
        scores = entity_scores(gold, pred)
        return {name: scores[name] for name in self.task.metrics}


def cluener_tags(record: dict[str, Any], where: str) -> tuple[list[str], list[str] | None]:
    """CLUENER's {"text", "label": {type: {entity: [[start, end_inclusive], ...]}}} as characters and BIO tags
    (None for a row without "label", as in the unlabelled test file).

    A span nested in a longer one (BIO cannot hold both) is dropped with a warning; the longer one is kept.
    """
    text = record_value(record, "text", where)
    if "label" not in record:
        return list(text), None
    tokens, tags = list(text), ["O"] * len(text)
    spans = set()  # a set: CLUENER repeats some spans
    for kind, entities in (record.get("label") or {}).items():
        for entity, positions in entities.items():
            for start, end in positions:
                if not (0 <= start <= end < len(text)) or text[start:end + 1] != entity:
                    raise PlmkitError(f"{where}: span [{start}, {end}] of {kind} {entity!r} does not match the text")
                spans.add((start, end + 1, kind))
    for start, end, kind in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):  # longest first
        if any(tag != "O" for tag in tags[start:end]):
            logger.warning("%s: %s %r overlaps another entity; BIO keeps the longer one", where, kind,
                           text[start:end])
            continue
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
    return tokens, tags
