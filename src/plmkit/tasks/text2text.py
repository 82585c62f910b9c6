"""Sequence-to-sequence tasks: translation and summarization, on an encoder-decoder (`Seq2SeqLM`).

One class, `Text2TextTask`, configured by data: where the source and target texts are (two aligned files, one a
language, as Multi30k ships them; two columns of a TSV; two keys of a JSON Lines file), which metric to report
(sacrebleu BLEU, with its Chinese tokenizer when the target is Chinese; ROUGE-1/2/L from `rouge-score`), and how to
generate when evaluating (greedy or beam search, at most `max_new_tokens`). Training is teacher forcing: the
labels are the target's ids followed by the end-of-sequence token, and the model shifts them right itself.

A dataset that comes as one file (BBC news, the TED sample) is split by row number: with `holdout_every=n`, row i
goes to the split that `holdout` gives the residue i % n (e.g. {"validation": n - 1}), the others to training, so
every split has every part of the file (BBC's file is ordered by category).
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
from plmkit.models.encoder_decoder import Seq2SeqLM, eos_terminated, seq2seq_config
from plmkit.tasks.base import IGNORE_INDEX, Task, pad_rows
from plmkit.tasks.readers import iter_lines, read_jsonl, read_tsv, record_value

logger = logging.getLogger(__name__)

FORMATS = ("parallel", "tsv", "jsonl")
METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum")
# What the Hugging Face pipelines call their output, by task kind.
OUTPUT_KEYS = {"translation": "translation_text", "summarization": "summary_text"}


@dataclass
class Text2TextExample:
    """A source text and its reference target (None when unlabelled)."""

    source: str
    target: str | None = None
    id: str = ""
    where: str = ""  # "file:line", for error messages


@dataclass
class Text2TextOutput:
    """What evaluation keeps of a batch: the teacher-forced loss and the generated ids (B, L)."""

    loss: torch.Tensor | None
    sequences: torch.Tensor


class Text2TextTask(Task):
    """Map a source text to a target text.

    `format`: "parallel" (the split's file holds the source language, the target is the file with the same name and
    the target language: train.en.gz / train.de.gz), "tsv" (`source_column`, `target_column`: names with a header,
    0-based indices with `header=False`) or "jsonl" (keys). `source_lang`/`target_lang` name the languages
    ("zh" turns on sacrebleu's Chinese tokenizer). `num_beams`, `max_new_tokens`, `length_penalty`,
    `no_repeat_ngram_size`, `min_length` (decoder tokens, the start token included): how evaluation and prediction
    generate, as in `transformers`' generation config.
    """

    kind = "text2text"
    model_class = Seq2SeqLM

    def __init__(self, name: str, *, format: str = "parallel", source_lang: str | None = None,
                 target_lang: str | None = None, source_column: str | int = "source",
                 target_column: str | int = "target", header: bool = True, metrics: Sequence[str] = ("bleu",),
                 main_metric: str = "", output_key: str = "generated_text", num_beams: int = 1,
                 max_new_tokens: int = 128, length_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                 min_length: int = 0, holdout_every: int = 0,
                 holdout: dict[str, int] | None = None, **task_options: Any) -> None:
        if format not in FORMATS:
            raise PlmkitError(f"task {name!r}: unknown format {format!r}; choose from: {', '.join(FORMATS)}")
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise PlmkitError(f"task {name!r}: unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
        if format == "parallel" and not (source_lang and target_lang):
            raise PlmkitError(f"task {name!r}: parallel files need source_lang and target_lang (e.g. en, de)")
        if format == "parallel" and "files" not in task_options:
            task_options["files"] = {split: tuple(f"{stem}.{source_lang}{gz}" for stem in stems for gz in (".gz", ""))
                                     for split, stems in {"train": ("train",),
                                                          "validation": ("val", "valid", "dev", "validation"),
                                                          "test": ("test",)}.items()}
        if format != "parallel" and "files" not in task_options:
            task_options["files"] = {"train": (f"train.{format}",), "test": (f"test.{format}",),
                                     "validation": tuple(f"{s}.{format}" for s in ("dev", "validation", "valid"))}
        super().__init__(name, metrics=metrics, main_metric=main_metric, **task_options)
        self.format, self.header = format, header
        self.source_lang, self.target_lang = source_lang, target_lang
        self.source_column, self.target_column = source_column, target_column
        self.output_key = output_key
        self.num_beams, self.max_new_tokens, self.length_penalty = int(num_beams), int(max_new_tokens), length_penalty
        self.no_repeat_ngram_size, self.min_length = int(no_repeat_ngram_size), int(min_length)
        self.holdout_every, self.holdout = int(holdout_every), dict(holdout or {})
        self.tokenizer: Any = None
        bad = [s for s, r in self.holdout.items() if not 0 <= r < max(self.holdout_every, 1)]
        if self.holdout and (self.holdout_every < 2 or bad):
            raise PlmkitError(f"task {name!r}: holdout residues must lie in [0, holdout_every) with holdout_every >= 2")

    # ------------------------------------------------------------------ reading
    def read_file(self, path: Path, split: str = "train") -> list[Text2TextExample]:
        rows = list(self._rows(Path(path)))
        if self.holdout_every and self._shares_train_file(split, path):
            rows = [row for i, row in enumerate(rows) if self._fold(i) == split]
        # A pair with an empty side teaches nothing (TED has 30 applause lines with no English): skipped, and said.
        empty = [where for where, src, tgt in rows if not src.strip() or (tgt is not None and not tgt.strip())]
        if empty:
            logger.warning("task %s: skipped %d pair(s) with an empty side, the first at %s", self.name, len(empty),
                           empty[0])
            rows = [(where, src, tgt) for where, src, tgt in rows if src.strip() and (tgt is None or tgt.strip())]
        return [Text2TextExample(source=src, target=tgt, id=str(i), where=where)
                for i, (where, src, tgt) in enumerate(rows)]

    def _fold(self, index: int) -> str:
        residue = index % self.holdout_every
        return next((split for split, r in self.holdout.items() if r == residue), "train")

    def _shares_train_file(self, split: str, path: Path) -> bool:
        """Whether `split` is cut from one file with training (the same file name as training's)."""
        return split == "train" or (split in self.holdout and path.name in self.files.get("train", ()))

    def _rows(self, path: Path) -> list[tuple[str, str, str | None]]:
        if self.format == "parallel":
            return self._parallel_rows(path)
        rows = []
        if self.format == "jsonl":
            for lineno, record in read_jsonl(path):
                where = f"{path}:{lineno}"
                target = record.get(self.target_column) if self.target_column in record else None
                rows.append((where, _text(record_value(record, self.source_column, where), where),
                             None if target is None else _text(target, where)))
            return rows
        for lineno, fields, names in read_tsv(path, self.header):
            where = f"{path}:{lineno}"
            source, target = (_column(fields, names, column, where) for column in (self.source_column,
                                                                                     self.target_column))
            if source is None:
                raise PlmkitError(f"{where}: missing source column {self.source_column!r}")
            rows.append((where, source, target))
        return rows

    def _parallel_rows(self, path: Path) -> list[tuple[str, str, str | None]]:
        name, src, tgt = path.name, f".{self.source_lang}", f".{self.target_lang}"
        gz = ".gz" if name.endswith(".gz") else ""
        stem = name.removesuffix(gz)
        if not stem.endswith(src):
            raise PlmkitError(f"{path}: a parallel source file's name must end in {src}{gz} (the source language)")
        target_path = path.with_name(stem.removesuffix(src) + tgt + gz)
        sources = list(iter_lines(path))
        if not target_path.is_file():
            return [(f"{path}:{lineno}", line, None) for lineno, line in sources]  # unlabelled: nothing to compare
        targets = list(iter_lines(target_path))
        if len(sources) != len(targets):
            raise PlmkitError(f"{path} has {len(sources)} lines but {target_path} has {len(targets)}: parallel files "
                              "must align line by line")
        return [(f"{path}:{lineno}", source, target)
                for (lineno, source), (_, target) in zip(sources, targets, strict=True)]

    def from_hf_dataset(self, dataset: Any, split: str = "train") -> list[Text2TextExample]:
        """Rows of a hub translation dataset (`{"translation": {"en": ..., "de": ...}}`) or with the task's columns."""
        examples = []
        for i, row in enumerate(dataset):
            pair = row.get("translation")
            if isinstance(pair, dict):
                source, target = pair.get(self.source_lang), pair.get(self.target_lang)
            else:
                source, target = row.get(self.source_column), row.get(self.target_column)
            if source is None:
                raise PlmkitError(f"task {self.name!r}: hub row {i} has no source text")
            examples.append(Text2TextExample(str(source), None if target is None else str(target), str(i),
                                             f"hub row {i}"))
        return examples

    # ------------------------------------------------------------------ features
    def texts(self, examples: Sequence[Text2TextExample]) -> list[str]:
        """Every source and target text: what a tokenizer for the task is trained on."""
        return [t for ex in examples for t in (ex.source, ex.target) if t]

    def featurize(self, examples: Sequence[Text2TextExample], tokenizer: Any, label2id: dict[str, int] | None = None,
                  max_length: int = 128, max_target_length: int | None = None,
                  **options: Any) -> list[dict[str, Any]]:
        """input_ids: the source's ids ending in eos (truncated to `max_length`); labels: the target's, likewise
        (to `max_target_length`, by default `max_length`)."""
        if options:
            raise PlmkitError(f"task {self.name!r}: unknown feature option(s) {', '.join(options)}")
        self.tokenizer = tokenizer  # what generated ids are decoded with when these features are scored
        eos = tokenizer.eos_token_id
        if eos is None:
            raise PlmkitError(f"task {self.name!r}: the tokenizer has no eos token")
        max_target_length = max_target_length or max_length
        sources = _encode(tokenizer, [ex.source for ex in examples], eos, max_length)
        labelled = [ex.target is not None for ex in examples]
        targets = _encode(tokenizer, [ex.target for ex in examples if ex.target is not None], eos, max_target_length)
        features, next_target = [], iter(targets)
        for i, ids in enumerate(sources):
            feature: dict[str, Any] = {"input_ids": ids, "attention_mask": [1] * len(ids), "example_index": i}
            if labelled[i]:
                feature["labels"] = next(next_target)
            features.append(feature)
        return features

    def _collate_labels(self, features: Sequence[dict[str, Any]], length: int) -> dict[str, torch.Tensor]:
        if not self._labelled(features, "labels"):
            return {}
        return {"labels": pad_rows([f["labels"] for f in features], IGNORE_INDEX)}  # to the longest target

    # ------------------------------------------------------------------ model
    def build_model(self, config_or_dir: ModelConfig | str | Path, id2label: Any = None) -> Seq2SeqLM:
        if isinstance(config_or_dir, ModelConfig):
            return Seq2SeqLM(config_or_dir)
        from plmkit.interop import resolve_model_dir

        return Seq2SeqLM.from_pretrained(resolve_model_dir(config_or_dir))

    def scratch_config(self, tokenizer: Any, style: str = "bart", **fields: Any) -> ModelConfig:
        """A fresh encoder-decoder config (`seq2seq_config(style, **fields)`) for `tokenizer`'s vocabulary (rounded up
        to a multiple of 8) and special ids."""
        vocab = -(-len(tokenizer) // 8) * 8
        ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
        if tokenizer.bos_token_id is not None:
            ids["bos_token_id"] = tokenizer.bos_token_id
        return seq2seq_config(style, vocab_size=vocab, decoder_start_token_id=tokenizer.eos_token_id,
                              **{**ids, **fields})

    def train_tokenizer(self, examples: Sequence[Text2TextExample], vocab_size: int = 8000,
                        min_frequency: int = 2) -> Any:
        """A byte-level BPE on both sides of the training pairs (one vocabulary for source and target, so the
        embeddings can be shared), with BART's special tokens <s> <pad> </s> <unk> as ids 0-3. Byte-level BPE
        decodes back to the exact text, which detokenized BLEU and ROUGE need."""
        from plmkit.data.tokenizer_train import train_bytelevel_bpe

        specials = ("<s>", "<pad>", "</s>", "<unk>")
        roles = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
        return train_bytelevel_bpe(None, vocab_size, texts=self.texts(examples), special_tokens=specials, roles=roles,
                                   min_frequency=min_frequency)

    def forward(self, model: Any, batch: dict[str, torch.Tensor]) -> Text2TextOutput:
        """The teacher-forced loss (when the batch has labels) and the generated continuation of every source."""
        loss = model(**batch).loss if "labels" in batch else None
        sequences = model.generate(batch["input_ids"], batch.get("attention_mask"), **self.generation_options(model))
        return Text2TextOutput(loss, sequences)

    def generation_options(self, model: Any) -> dict[str, Any]:
        """How evaluation and prediction generate; at most as many new tokens as the decoder has learned positions
        for (after the start token)."""
        max_new = self.max_new_tokens
        if model.config.position_embedding == "learned":
            max_new = min(max_new, model.config.max_position_embeddings - 1)
        return {"num_beams": self.num_beams, "max_new_tokens": max_new, "length_penalty": self.length_penalty,
                "early_stopping": self.num_beams > 1, "no_repeat_ngram_size": self.no_repeat_ngram_size,
                "min_length": min(self.min_length, max_new)}

    def scorer(self, model: Any, examples: Sequence[Text2TextExample]) -> Text2TextScorer:
        return Text2TextScorer(self, examples, self.tokenizer)

    def predict(self, model: Any, tokenizer: Any, inputs: Sequence[Any], batch_size: int = 32,
                **options: Any) -> list[dict[str, Any]]:
        """Generate a target for each input (a string, or a dict with "source" or "text") -> [{output_key: text}]."""
        sources = [x if isinstance(x, str) else x.get("source", x.get("text")) for x in inputs]
        if any(s is None for s in sources):
            raise PlmkitError(f"task {self.name!r}: each input needs a 'source' (or 'text') field")
        generation = {**self.generation_options(model), **options}
        out = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            features = self.featurize([Text2TextExample(s) for s in chunk], tokenizer,
                                      max_length=model.config.max_position_embeddings)
            batch = self.collate(features, pad_token_id=model.config.pad_token_id)
            sequences = model.generate(batch["input_ids"].to(model.device),
                                       batch["attention_mask"].to(model.device), **generation)
            out += [{self.output_key: text} for text in decode(tokenizer, sequences)]
        return out


class Text2TextScorer:
    """Collects generated texts against the references; BLEU/chrF from sacrebleu, ROUGE from rouge-score."""

    def __init__(self, task: Text2TextTask, examples: Sequence[Text2TextExample], tokenizer: Any) -> None:
        self.task, self.examples, self.tokenizer = task, examples, tokenizer
        self.hypotheses: list[str] = []
        self.references: list[str] = []

    def update(self, features: list[dict[str, Any]], outputs: Text2TextOutput) -> None:
        if self.tokenizer is None:
            raise PlmkitError(f"task {self.task.name!r}: featurize the examples before scoring them")
        for feature, text in zip(features, decode(self.tokenizer, outputs.sequences), strict=True):
            reference = self.examples[feature["example_index"]].target
            if reference is None:
                raise PlmkitError(f"{self.examples[feature['example_index']].where}: no reference target to score")
            self.hypotheses.append(text)
            self.references.append(reference)

    def compute(self) -> dict[str, float]:
        return text2text_metrics(self.hypotheses, self.references, self.task.metrics, self.task.target_lang)


def text2text_metrics(hypotheses: Sequence[str], references: Sequence[str], metrics: Sequence[str],
                      target_lang: str | None = None) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, detokenized text; the "zh" tokenizer for Chinese targets, else 13a) and
    ROUGE F-measures x 100 (rouge-score, with stemming; rougeLsum splits sentences on newlines)."""
    out: dict[str, float] = {}
    if "bleu" in metrics or "chrf" in metrics:
        import sacrebleu

        if "bleu" in metrics:
            tokenize = "zh" if target_lang == "zh" else "13a"
            out["bleu"] = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score
        if "chrf" in metrics:
            out["chrf"] = sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score
    rouge = [m for m in metrics if m.startswith("rouge")]
    if rouge:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(rouge, use_stemmer=True)
        totals = dict.fromkeys(rouge, 0.0)
        for hyp, ref in zip(hypotheses, references, strict=True):
            for key, score in scorer.score(ref, hyp).items():
                totals[key] += score.fmeasure
        out.update({key: 100 * total / max(len(hypotheses), 1) for key, total in totals.items()})
    return out


def lead_sentences(text: str, n: int = 3) -> str:
    """The first `n` sentences of a text (the lead-n summarization baseline), one a line."""
    from plmkit.data.corpus import split_sentences

    return "\n".join(s.strip() for s in split_sentences(" ".join(text.split()))[:n])


def decode(tokenizer: Any, sequences: torch.Tensor) -> list[str]:
    """Generated ids (B, L), starting with the decoder's start token -> texts without special tokens."""
    return [text.strip() for text in tokenizer.batch_decode(sequences[:, 1:].tolist(), skip_special_tokens=True)]


def _encode(tokenizer: Any, texts: list[str], eos: int, max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated so that with the eos token (added unless the tokenizer adds it) they fit
    in `max_length`."""
    if not texts:
        return []
    rows = []
    for ids in tokenizer(texts)["input_ids"]:
        ids = eos_terminated(ids, eos)
        if len(ids) > max_length:
            ids = ids[:max_length - 1] + [eos]
        rows.append(ids)
    return rows


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PlmkitError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _column(fields: list[str], names: list[str] | None, column: str | int, where: str) -> str | None:
    """A column of a TSV row; None when the file has no such column at all (unlabelled), an error for a short row."""
    if isinstance(column, str):
        if names is None:
            raise PlmkitError(f"{where}: column {column!r} needs a header row (or give a 0-based index)")
        if column not in names:
            return None
        column = names.index(column)
    if column >= len(fields):
        raise PlmkitError(f"{where}: missing column #{column} (the row has {len(fields)})")
    return fields[column]
