"""Extractive question answering (SQuAD v1.1): sliding windows over long contexts and n-best span decoding.

A question and its context are tokenized together with `truncation="only_second"`: a context longer than the
window is cut into overlapping windows (`doc_stride` tokens shared between neighbours), each a feature with the
question repeated. For training, a window holds the answer's first and last token as start/end positions, or both
at [CLS] (index 0) when the answer is not wholly inside it, as Hugging Face's `run_qa` does. For prediction, the
best spans of every window of a question are pooled and the best one wins.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.errors import PlmkitError
from plmkit.evaluation.squad import squad_scores
from plmkit.models.bert import BertForQuestionAnswering
from plmkit.tasks.base import Task
from plmkit.tasks.readers import read_json


@dataclass
class Answer:
    text: str
    start: int  # character offset in the context


@dataclass
class QAExample:
    question: str
    context: str
    answers: list[Answer] | None = None  # all gold answers (the first one is trained on); None when unknown
    id: str = ""
    title: str = ""
    source: str = ""


class SquadTask(Task):
    """SQuAD v1.1. `train_articles=N` splits one file by article, for when only the dev set is at hand: its first N
    articles are "train" and the rest "validation" (the benchmark: 38 of the 48 dev articles, then the last 10)."""

    kind = "question-answering"
    model_class = BertForQuestionAnswering

    def __init__(self, name: str = "squad", *, train_articles: int | None = None, n_best: int = 20,
                 max_answer_length: int = 30, doc_stride: int = 128, max_question_length: int = 64,
                 **task_options: Any) -> None:
        task_options.setdefault("files", {"train": ("train-v1.1.json",),
                                          "validation": ("dev-v1.1.json", "dev-v1.1.reconstructed.json")})
        task_options.setdefault("metrics", ("f1", "exact_match"))
        super().__init__(name, **task_options)
        self.train_articles = train_articles
        if train_articles is not None:
            if not isinstance(train_articles, int) or train_articles < 1:
                raise PlmkitError(f"task {name!r}: train_articles must be a positive integer, got {train_articles!r}")
            self.files["train"] = self.files["validation"]
            self.hub_splits = {"train": "validation", "validation": "validation"}
        self.n_best, self.max_answer_length = n_best, max_answer_length
        self.doc_stride, self.max_question_length = doc_stride, max_question_length

    # ------------------------------------------------------------------ reading
    def find_file(self, data_dir: str | Path, split: str) -> Path:
        try:
            return super().find_file(data_dir, split)
        except PlmkitError as err:
            if self.split_name(split) != "train" or self.train_articles is not None:
                raise
            raise PlmkitError(f"{err}; with only the dev file, split it by article: train_articles=38") from None

    def read_file(self, path: Path, split: str = "validation") -> list[QAExample]:
        data = read_json(Path(path))
        articles = data.get("data") if isinstance(data, dict) else None
        if not isinstance(articles, list):
            raise PlmkitError(f"{path}: not a SQuAD file (no 'data' list of articles)")
        examples = []
        for a, article in self._articles(articles, split, str(path)):
            for p, paragraph in enumerate(_get(article, "paragraphs", f"{path}: data[{a}]")):
                where = f"{path}: data[{a}].paragraphs[{p}]"
                context = _get(paragraph, "context", where)
                for q, qa in enumerate(_get(paragraph, "qas", where)):
                    at = f"{where}.qas[{q}]"
                    answers = [Answer(_get(ans, "text", at), _get(ans, "answer_start", at))
                               for ans in qa.get("answers", [])]
                    examples.append(self._example(_get(qa, "question", at), context, answers or None,
                                                  str(qa.get("id", len(examples))), article.get("title", ""), at))
        return examples

    def _articles(self, articles: list, split: str, source: str) -> list[tuple[int, Any]]:
        numbered = list(enumerate(articles))
        if self.train_articles is None:
            return numbered
        if self.train_articles >= len(articles):
            raise PlmkitError(f"{source}: train_articles={self.train_articles} leaves no article to evaluate on "
                              f"(the file has {len(articles)})")
        return numbered[:self.train_articles] if split == "train" else numbered[self.train_articles:]

    @staticmethod
    def _example(question: str, context: str, answers: list[Answer] | None, qid: str, title: str,
                 where: str) -> QAExample:
        for answer in answers or []:
            if context[answer.start:answer.start + len(answer.text)] != answer.text:
                raise PlmkitError(f"{where} (id {qid}): answer {answer.text!r} is not at answer_start {answer.start} "
                                  "of the context")
        return QAExample(question, context, answers, qid, title, where)

    def from_hf_dataset(self, dataset: Any, split: str = "train") -> list[QAExample]:
        rows = list(dataset)
        titles = list(dict.fromkeys(row.get("title", "") for row in rows))
        keep = None
        if self.train_articles is not None:
            keep = {title for _, title in self._articles(titles, split, "hub dataset")}
        examples = []
        for i, row in enumerate(rows):
            if keep is not None and row.get("title", "") not in keep:
                continue
            gold = row.get("answers") or {"text": [], "answer_start": []}
            answers = [Answer(t, s) for t, s in zip(gold["text"], gold["answer_start"], strict=True)]
            examples.append(self._example(row["question"], row["context"], answers or None, str(row.get("id", i)),
                                          row.get("title", ""), f"dataset[{split}][{i}]"))
        return examples

    # ------------------------------------------------------------------ features
    def featurize(self, examples: Sequence[QAExample], tokenizer: Any, label2id: dict[str, int] | None = None,
                  max_length: int = 384, doc_stride: int | None = None, **options: Any) -> list[dict[str, Any]]:
        """One feature per window: input_ids, token_type_ids, attention_mask; start_positions and end_positions
        (token indices, 0 when the window lacks the answer) when the example has answers; and for decoding
        `example_index` and `offset_mapping`, an int32 array (T, 2) of character spans in the context (-1 for
        question and special tokens)."""
        if not examples:
            return []
        doc_stride = self.doc_stride if doc_stride is None else doc_stride
        backend = tokenizer.backend_tokenizer
        questions, lengths = self._clip_questions(backend, [e.question.lstrip() for e in examples])
        specials = backend.post_processor.num_special_tokens_to_add(True) if backend.post_processor else 0
        for example, length in zip(examples, lengths, strict=True):
            room = max_length - length - specials  # context tokens per window
            if room <= doc_stride:  # checked here: the tokenizers library panics instead of raising
                raise PlmkitError(f"question {example.id or example.question!r}: windows of {max_length} tokens leave "
                                  f"{room} for the context after the {length}-token question, not more than "
                                  f"doc_stride={doc_stride}; raise max_length or lower doc_stride")
        backend.no_padding()
        backend.enable_truncation(max_length, stride=doc_stride, strategy="only_second")
        try:
            encodings = backend.encode_batch(list(zip(questions, [e.context for e in examples], strict=True)))
        except Exception as err:  # the Rust side raises plain Exceptions, e.g. a stride too large for the window
            raise PlmkitError(f"cannot cut contexts into windows of {max_length} tokens with doc_stride "
                              f"{doc_stride}: {err}".replace("\n", " ")) from None
        finally:
            backend.no_truncation()
        features = []
        for index, (example, encoding) in enumerate(zip(examples, encodings, strict=True)):
            for window in [encoding, *encoding.overflowing]:
                in_context = np.array([s == 1 for s in window.sequence_ids], dtype=bool)
                offsets = np.array(window.offsets, dtype=np.int32).reshape(-1, 2)
                offsets[~in_context] = -1
                feature: dict[str, Any] = {"input_ids": window.ids, "token_type_ids": window.type_ids,
                                           "attention_mask": window.attention_mask}
                if example.answers:
                    answer = example.answers[0]
                    start, end = answer_positions(offsets, answer.start, answer.start + len(answer.text))
                    feature["start_positions"], feature["end_positions"] = start, end
                feature["example_index"] = index
                feature["offset_mapping"] = offsets
                features.append(feature)
        return features

    def _clip_questions(self, backend: Any, questions: list[str]) -> tuple[list[str], list[int]]:
        """Questions cut to `max_question_length` tokens (original BERT's max_query_length), so that a very long
        question never leaves no room for the context; and their lengths in tokens."""
        backend.no_truncation()
        backend.no_padding()
        clipped, lengths = [], []
        for question, enc in zip(questions, backend.encode_batch(questions, add_special_tokens=False), strict=True):
            if len(enc.ids) > self.max_question_length:
                question = question[:enc.offsets[self.max_question_length - 1][1]]
            clipped.append(question)
            lengths.append(min(len(enc.ids), self.max_question_length))
        return clipped, lengths

    def _collate_labels(self, features: Sequence[dict[str, Any]], length: int) -> dict[str, torch.Tensor]:
        if not self._labelled(features, "start_positions"):
            return {}
        return {key: torch.tensor([f[key] for f in features], dtype=torch.long)
                for key in ("start_positions", "end_positions")}

    def label_list(self, examples: Sequence[QAExample]) -> list[str]:
        return []  # spans, not classes

    # ------------------------------------------------------------------ scoring and prediction
    def scorer(self, model: Any, examples: Sequence[QAExample]) -> QAScorer:
        return QAScorer(examples, SpanCollector(self.n_best, self.max_answer_length))

    def predict(self, model: Any, tokenizer: Any, inputs: Sequence[Any], *, batch_size: int = 32,
                max_length: int = 384, doc_stride: int | None = None, top_k: int = 1) -> list[Any]:
        """For each question ({"question", "context"} or a QAExample): {"answer", "score", "start", "end"} with
        character offsets in the context and the span's probability in its window (a list of `top_k` when > 1)."""
        examples = [as_qa_example(item) for item in inputs]
        features = self.featurize(examples, tokenizer, max_length=max_length, doc_stride=doc_stride)
        collector = SpanCollector(max(self.n_best, top_k), self.max_answer_length)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                chunk = features[start:start + batch_size]
                batch = {k: v.to(model.device) for k, v in self.collate(chunk, model.config.pad_token_id).items()
                         if k not in ("start_positions", "end_positions")}
                collector.add_batch(chunk, model(**batch))
        results: list[Any] = []
        for index, example in enumerate(examples):
            ranked = [{"answer": example.context[s:e], "score": p, "start": s, "end": e}
                      for _, s, e, p in collector.best(index, top_k)]
            if not ranked:
                ranked = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
            results.append(ranked if top_k > 1 else ranked[0])
        return results


def as_qa_example(item: Any) -> QAExample:
    if isinstance(item, QAExample):
        return item
    if isinstance(item, dict) and isinstance(item.get("question"), str) and isinstance(item.get("context"), str):
        return QAExample(item["question"], item["context"])
    raise PlmkitError(f"cannot answer {type(item).__name__}: pass a dict with 'question' and 'context'")


def answer_positions(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """Token indices of the first and last token of the answer characters [start_char, end_char) in a window, or
    (0, 0) — [CLS] — when the window does not hold the whole answer. offsets (T, 2), -1 outside the context."""
    context = np.nonzero(offsets[:, 0] >= 0)[0]
    if not len(context) or offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return 0, 0
    first, last = int(context[0]), int(context[-1])
    token_start = first
    while token_start <= last and offsets[token_start, 0] <= start_char:
        token_start += 1
    token_end = last
    while token_end >= first and offsets[token_end, 1] >= end_char:
        token_end -= 1
    return token_start - 1, token_end + 1


def window_spans(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray, n_best: int,
                 max_answer_length: int) -> list[tuple[float, int, int, float]]:
    """The `n_best` spans of one window as (start_logit + end_logit, start char, end char, probability): start
    and end among the context tokens' n_best logits each, start <= end, at most `max_answer_length` tokens.
    The probability is p(start) * p(end) with the softmax taken over the window's context tokens."""
    context = np.nonzero(offsets[:, 0] >= 0)[0]
    if not len(context):
        return []
    k = min(n_best, len(context))
    starts = context[np.argsort(-start_logits[context], kind="stable")[:k]]
    ends = context[np.argsort(-end_logits[context], kind="stable")[:k]]
    scores = start_logits[starts][:, None] + end_logits[ends][None, :]  # (k, k)
    length = ends[None, :] - starts[:, None] + 1
    scores = np.where((length >= 1) & (length <= max_answer_length), scores, -np.inf)
    log_norm = _logsumexp(start_logits[context]) + _logsumexp(end_logits[context])
    spans = []
    for flat in np.argsort(-scores, axis=None, kind="stable")[:n_best]:
        score = scores.flat[flat]
        if not np.isfinite(score):
            break
        i, j = divmod(int(flat), k)
        spans.append((float(score), int(offsets[starts[i], 0]), int(offsets[ends[j], 1]),
                      float(np.exp(score - log_norm))))
    return spans


def _logsumexp(x: np.ndarray) -> float:
    top = float(x.max())
    return top + float(np.log(np.exp(x - top).sum()))


class SpanCollector:
    """The n best distinct answer spans of each question over all its windows (the same span seen in two
    overlapping windows keeps its better score). Holds n_best tuples per question, never logits."""

    def __init__(self, n_best: int = 20, max_answer_length: int = 30) -> None:
        self.n_best, self.max_answer_length = n_best, max_answer_length
        self.spans: dict[int, dict[tuple[int, int], tuple[float, int, int, float]]] = {}

    def add_batch(self, features: Sequence[dict[str, Any]], outputs: Any) -> None:
        starts = outputs.start_logits.float().cpu().numpy()  # (B, T)
        ends = outputs.end_logits.float().cpu().numpy()
        for feature, start_logits, end_logits in zip(features, starts, ends, strict=True):
            length = len(feature["input_ids"])
            self.add(feature["example_index"], start_logits[:length], end_logits[:length], feature["offset_mapping"])

    def add(self, index: int, start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray) -> None:
        pooled = self.spans.setdefault(index, {})
        for span in window_spans(start_logits, end_logits, offsets, self.n_best, self.max_answer_length):
            key = (span[1], span[2])
            if key not in pooled or pooled[key][0] < span[0]:
                pooled[key] = span
        if len(pooled) > self.n_best:
            self.spans[index] = {(s[1], s[2]): s for s in heapq.nlargest(self.n_best, pooled.values())}

    def best(self, index: int, k: int = 1) -> list[tuple[float, int, int, float]]:
        """The k best (score, start char, end char, probability) of a question, best first."""
        return heapq.nlargest(k, self.spans.get(index, {}).values())


class QAScorer:
    """SQuAD exact match and F1 (percent) of the best span of each question against all its gold answers."""

    def __init__(self, examples: Sequence[QAExample], collector: SpanCollector) -> None:
        self.examples, self.collector = examples, collector

    def update(self, features: list[dict[str, Any]], outputs: Any) -> None:
        self.collector.add_batch(features, outputs)

    def compute(self) -> dict[str, float]:
        predictions, references = {}, {}
        for index, example in enumerate(self.examples):
            if not example.answers:
                raise PlmkitError(f"{example.source or example.id}: cannot evaluate a question with no gold answer")
            best = self.collector.best(index)
            predictions[str(index)] = example.context[best[0][1]:best[0][2]] if best else ""
            references[str(index)] = [answer.text for answer in example.answers]
        return squad_scores(predictions, references)


def _get(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise PlmkitError(f"{where}: missing key {key!r}")
    return mapping[key]
