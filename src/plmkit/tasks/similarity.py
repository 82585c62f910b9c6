"""Semantic similarity fine-tuned as a bi-encoder: sentence pairs with a similarity score, each sentence embedded on
its own (mean pooling) and the pair scored by the cosine of the two embeddings (sentence-transformers'
CosineSimilarityLoss). The fine-tuned model is a plain BertModel: `plmkit.similarity.SentenceEncoder`, `plmkit
search` and the "sentence-similarity" pipeline use it for semantic search over a user's own sentences.

The cross-encoder alternative (both sentences in one input, a regression head on [CLS]) is the regression
`ClassificationTask` (`stsb`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from plmkit.errors import PlmkitError
from plmkit.models.bert import BertForSentenceSimilarity
from plmkit.tasks.base import pad_rows
from plmkit.tasks.classification import ClassificationTask, TextExample, as_text_example


class SentenceSimilarityTask(ClassificationTask):
    """Pairs (`text_column`, `text_pair_column`) with a numeric `label_column`; the training target is the score
    divided by `max_score` (STS-B: 5), so that a cosine can reach it. Metrics: Spearman and Pearson correlation of
    the cosines with the gold scores (unchanged by the division)."""

    kind = "sentence-similarity"
    model_class = BertForSentenceSimilarity

    def __init__(self, name: str, *, max_score: float = 1.0, **options: Any) -> None:
        options.setdefault("text_pair_column", "text_pair")
        options.setdefault("metrics", ("spearman", "pearson"))
        super().__init__(name, regression=True, **options)
        if not max_score > 0:
            raise PlmkitError(f"task {name!r}: max_score must be positive, not {max_score}")
        self.max_score = float(max_score)

    def featurize(self, examples: Sequence[TextExample], tokenizer: Any, label2id: dict[str, int] | None = None,
                  max_length: int = 128, **options: Any) -> list[dict[str, Any]]:
        """One feature per pair: the first text's input_ids / attention_mask, the second's as pair_input_ids /
        pair_attention_mask, and `labels` (the score / max_score) when the pair is scored."""
        if not examples:
            return []
        missing = next((e for e in examples if e.text_pair is None), None)
        if missing is not None:
            raise PlmkitError(f"{missing.source or missing.id}: task {self.name!r} needs a text pair")
        first = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
        second = tokenizer([e.text_pair for e in examples], truncation=True, max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            feature = {"input_ids": first["input_ids"][i], "attention_mask": first["attention_mask"][i],
                       "pair_input_ids": second["input_ids"][i], "pair_attention_mask": second["attention_mask"][i]}
            if example.label is not None:
                feature["labels"] = float(example.label) / self.max_score
            features.append(feature)
        return features

    def collate(self, features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        batch = super().collate(features, pad_token_id)  # the second texts: padded to their own longest
        batch["pair_input_ids"] = pad_rows([f["pair_input_ids"] for f in features], pad_token_id)
        batch["pair_attention_mask"] = pad_rows([f["pair_attention_mask"] for f in features], 0)
        return batch

    def predict(self, model: Any, tokenizer: Any, inputs: Sequence[Any], *, batch_size: int = 32,
                max_length: int = 128, top_k: int = 1) -> list[Any]:
        """For each (text, text_pair) pair: {"score": the cosine of their embeddings}."""
        examples = [as_text_example(item) for item in inputs]
        if any(e.text_pair is None for e in examples):
            raise PlmkitError(f"task {self.name!r} scores sentence pairs: pass (text, text_pair) pairs")
        results = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                features = self.featurize(examples[start:start + batch_size], tokenizer, max_length=max_length)
                batch = {k: v.to(model.device) for k, v in self.collate(features, model.config.pad_token_id).items()}
                results.extend({"score": float(v)} for v in model(**batch).logits[:, 0].float().cpu())
        return results
