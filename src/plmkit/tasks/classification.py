"""Sentence and sentence-pair classification and regression: GLUE, ChnSentiCorp, and any CSV/TSV/JSONL file.

One class, `ClassificationTask`, configured by data: which columns hold the text, the second text and the label,
the file format, whether the target is a number (regression), and the metrics to report.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.evaluation.metrics import CLASSIFICATION_METRICS
from plmkit.models.bert import BertForSequenceClassification
from plmkit.tasks.base import Task, label_id, model_labels, sorted_labels
from plmkit.tasks.readers import field, read_csv, read_jsonl, read_tsv, record_value

FORMATS = ("tsv", "csv", "jsonl")


@dataclass
class TextExample:
    """One text (or text pair) and its label: a class name, a number for regression, or None when unlabelled."""

    text: str
    text_pair: str | None = None
    label: str | float | None = None
    id: str = ""
    source: str = ""  # "file:line", for error messages


class ClassificationTask(Task):
    """Classify (or score, with `regression=True`) one text or a pair.

    Columns are header names, or 0-based indices for a file without a header (`header=False`, as CoLA).
    `positive_label` is the class whose F1 `f1` reports. `hub_labels` names the classes of the hub copy's integer
    labels where the local files spell them out (QNLI's "entailment"); without it, hub label i becomes "i".
    """

    kind = "sequence-classification"
    model_class = BertForSequenceClassification

    def __init__(self, name: str, *, text_column: str | int = "text", text_pair_column: str | int | None = None,
                 label_column: str | int | None = "label", regression: bool = False, format: str = "tsv",
                 header: bool = True, positive_label: str = "1", metrics: Sequence[str] | None = None,
                 main_metric: str = "", hub_columns: tuple[str, str | None, str] | None = None,
                 hub_labels: Sequence[str] | None = None, **task_options: Any) -> None:
        if format not in FORMATS:
            raise PlmkitError(f"task {name!r}: unknown format {format!r}; choose from: {', '.join(FORMATS)}")
        if metrics is None:
            metrics = ("spearman", "pearson") if regression else ("accuracy",)
        unknown = [m for m in metrics if m not in CLASSIFICATION_METRICS]
        if unknown:
            raise PlmkitError(f"task {name!r}: unknown metric {unknown[0]!r}; choose from: "
                              f"{', '.join(CLASSIFICATION_METRICS)}")
        super().__init__(name, metrics=metrics, main_metric=main_metric, **task_options)
        self.text_column, self.text_pair_column, self.label_column = text_column, text_pair_column, label_column
        self.regression, self.format, self.header = regression, format, header
        self.positive_label = positive_label
        self.hub_columns, self.hub_labels = hub_columns, tuple(hub_labels) if hub_labels else None

    # ------------------------------------------------------------------ reading
    def read_file(self, path: Path, split: str = "train") -> list[TextExample]:
        examples = []
        for where, text, pair, label in self._rows(Path(path)):
            examples.append(TextExample(text=str(text), text_pair=None if pair is None else str(pair),
                                        label=self._parse_label(label, where), id=str(len(examples)), source=where))
        return examples

    def _rows(self, path: Path) -> Iterator[tuple[str, Any, Any, Any]]:
        """("file:line", text, text_pair, label) per row. A label column absent from the header (or from the first
        JSON row) means an unlabelled file, such as a test split; absent from one row only, it is an error."""
        text_col, pair_col, label_col = self.text_column, self.text_pair_column, self.label_column
        if self.format == "jsonl":
            unlabelled = None
            for lineno, record in read_jsonl(path):
                where = f"{path}:{lineno}"
                if unlabelled is None:
                    unlabelled = label_col is None or label_col not in record
                yield (where, record_value(record, text_col, where),
                       None if pair_col is None else record_value(record, pair_col, where),
                       None if unlabelled else record_value(record, label_col, where))
            return
        rows = read_tsv(path, self.header) if self.format == "tsv" else read_csv(path)
        for lineno, fields, names in rows:
            where = f"{path}:{lineno}"
            unlabelled = label_col is None or (names is not None and isinstance(label_col, str)
                                               and label_col not in names)
            yield (where, field(fields, names, text_col, where),
                   None if pair_col is None else field(fields, names, pair_col, where),
                   None if unlabelled else field(fields, names, label_col, where))

    def _parse_label(self, label: Any, where: str) -> str | float | None:
        if label is None:
            return None
        if self.regression:
            try:
                return float(label)
            except (TypeError, ValueError):
                raise PlmkitError(f"{where}: label {label!r} is not a number (task {self.name!r} is a regression)") \
                    from None
        label = str(label).strip()
        if not label:
            raise PlmkitError(f"{where}: empty label")
        return label

    def from_hf_dataset(self, dataset: Any, split: str = "train") -> list[TextExample]:
        if self.hub_columns is None:
            return super().from_hf_dataset(dataset, split)
        text_col, pair_col, label_col = self.hub_columns
        name = self.hub[0] if self.hub else "dataset"
        examples = []
        for i, row in enumerate(dataset):
            label = row.get(label_col)
            if label is not None and label < 0:  # the hub marks the unlabelled test rows with -1
                label = None
            elif label is not None and not self.regression:
                label = self.hub_labels[label] if self.hub_labels else str(label)
            examples.append(TextExample(text=row[text_col], text_pair=row[pair_col] if pair_col else None,
                                        label=label, id=str(row.get("idx", i)), source=f"{name}[{split}][{i}]"))
        return examples

    # ------------------------------------------------------------------ labels, features, model
    def label_list(self, examples: Sequence[TextExample]) -> list[str]:
        """Sorted class names seen in `examples` (["score"] for a regression)."""
        if self.regression:
            return ["score"]
        labels = sorted_labels(e.label for e in examples if e.label is not None)
        if not labels:
            raise PlmkitError(f"task {self.name!r}: no labelled examples to take the label set from")
        return labels

    def featurize(self, examples: Sequence[TextExample], tokenizer: Any, label2id: dict[str, int] | None = None,
                  max_length: int = 128, **options: Any) -> list[dict[str, Any]]:
        """One feature per example: input_ids, token_type_ids, attention_mask (lists) and `labels` (class id, or
        float for a regression) when the example has a label."""
        if not examples:
            return []
        texts = [e.text for e in examples]
        pairs = None
        if self.text_pair_column is not None:
            missing = next((e for e in examples if e.text_pair is None), None)
            if missing is not None:
                raise PlmkitError(f"{missing.source or missing.id}: task {self.name!r} needs a text pair")
            pairs = [e.text_pair for e in examples]
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
        features = []
        for i, example in enumerate(examples):
            feature = {key: encoded[key][i] for key in keys}
            if example.label is not None:
                feature["labels"] = self._label_value(example, label2id)
            features.append(feature)
        return features

    def _label_value(self, example: TextExample, label2id: dict[str, int] | None) -> int | float:
        if self.regression:
            return float(example.label)
        if label2id is None:
            raise PlmkitError(f"task {self.name!r}: featurize needs label2id for labelled examples")
        return label_id(label2id, str(example.label), example.source or f"example {example.id}")

    def _collate_labels(self, features: Sequence[dict[str, Any]], length: int) -> dict[str, torch.Tensor]:
        if not self._labelled(features, "labels"):
            return {}
        dtype = torch.float if self.regression else torch.long
        return {"labels": torch.tensor([f["labels"] for f in features], dtype=dtype)}

    def model_config(self, config: ModelConfig, id2label: dict[int, str] | None) -> ModelConfig:
        if self.regression:
            return config.replace(num_labels=1, id2label=id2label or {0: "score"}, problem_type="regression")
        if id2label is None:
            return config
        return config.replace(num_labels=len(id2label), id2label=id2label, problem_type="single_label_classification")

    # ------------------------------------------------------------------ scoring and prediction
    def scorer(self, model: Any, examples: Sequence[TextExample] = ()) -> ClassificationScorer:
        return ClassificationScorer(self, model_labels(model))

    def predict(self, model: Any, tokenizer: Any, inputs: Sequence[Any], *, batch_size: int = 32,
                max_length: int = 128, top_k: int = 1) -> list[Any]:
        """Predictions for examples, texts or (text, text_pair) pairs: {"label", "score"} (the class probability;
        a list of the `top_k` best when top_k > 1), or {"score"} (the predicted value) for a regression."""
        examples = [as_text_example(item) for item in inputs]
        paired = {e.text_pair is not None for e in examples}
        if len(paired) > 1:
            raise PlmkitError("cannot predict single texts and text pairs in one call")
        labels = model_labels(model)
        results: list[Any] = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                chunk = examples[start:start + batch_size]
                pairs = [e.text_pair for e in chunk] if True in paired else None
                enc = tokenizer([e.text for e in chunk], pairs, truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt")
                logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits.float().cpu()
                if self.regression or logits.shape[-1] == 1:
                    results.extend({"score": float(v)} for v in logits[:, 0])
                    continue
                probs, ids = logits.softmax(-1).topk(min(top_k, logits.shape[-1]), dim=-1)
                for row_p, row_i in zip(probs.tolist(), ids.tolist(), strict=True):
                    ranked = [{"label": labels[i], "score": p} for p, i in zip(row_p, row_i, strict=True)]
                    results.append(ranked if top_k > 1 else ranked[0])
        return results

    def zero_shot_evaluate(self, encoder: Any, examples: Sequence[TextExample],
                           batch_size: int = 64) -> dict[str, float]:
        """Score sentence pairs by the cosine of their sentence embeddings (a `plmkit.similarity.SentenceEncoder`)
        against the gold scores, with no fine-tuning: {"spearman", "pearson"} (STS-B's zero-shot evaluation)."""
        from plmkit.evaluation.evaluate import evaluate_similarity

        if self.text_pair_column is None or not self.regression:
            raise PlmkitError(f"task {self.name!r}: zero-shot similarity needs sentence pairs with a numeric score")
        scored = [e for e in examples if e.label is not None]
        return evaluate_similarity(encoder, [e.text for e in scored], [e.text_pair for e in scored],
                                   [float(e.label) for e in scored], batch_size=batch_size)


def as_text_example(item: Any) -> TextExample:
    """A TextExample from a TextExample, a str, a (text, text_pair) tuple or a {"text", "text_pair"} dict."""
    if isinstance(item, TextExample):
        return item
    if isinstance(item, str):
        return TextExample(item)
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, str) for t in item):
        return TextExample(item[0], item[1])
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return TextExample(item["text"], item.get("text_pair"))
    raise PlmkitError(f"cannot classify {type(item).__name__}: pass a str, a (text, text_pair) pair or a dict "
                      "with 'text' (and 'text_pair')")


class ClassificationScorer:
    """Keeps the predicted class id (or value) and the gold label of each feature; nothing else."""

    def __init__(self, task: ClassificationTask, labels: list[str]) -> None:
        self.task = task
        self.num_labels = len(labels)
        self.pos_label = labels.index(task.positive_label) if task.positive_label in labels else 1
        self.preds: list[float] = []
        self.golds: list[float] = []

    def update(self, features: list[dict[str, Any]], outputs: Any) -> None:
        logits = outputs.logits.float()
        if self.task.regression:
            self.preds.extend(logits[:, 0].tolist())
        else:
            self.preds.extend(logits.argmax(-1).tolist())
        for feature in features:
            if "labels" not in feature:
                raise PlmkitError(f"task {self.task.name!r}: cannot evaluate features without labels")
            gold = feature["labels"]
            if not self.task.regression and not 0 <= gold < self.num_labels:
                raise PlmkitError(f"gold label id {gold} is outside the model's {self.num_labels} labels")
            self.golds.append(gold)

    def compute(self) -> dict[str, float]:
        results = {}
        for name in self.task.metrics:
            metric = CLASSIFICATION_METRICS[name]
            if name == "f1":
                metric = functools.partial(metric, pos_label=self.pos_label)
            results[name] = metric(self.preds, self.golds)
        return results
