"""Sentence embeddings (mean pooling over real tokens) and cosine-similarity semantic search."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from plmkit.data.tokenizer import BertTokenizer
from plmkit.models.bert import BertModel


def mean_pooling(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, C), attention_mask (B, T) -> (B, C): the average of the real tokens' vectors."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


@dataclass
class SearchHit:
    corpus_id: int
    score: float
    text: str


class SentenceEncoder:
    """A BERT and its tokenizer that turn sentences into unit-length vectors (sentence-transformers style)."""

    def __init__(self, model: BertModel, tokenizer: BertTokenizer, max_length: int = 256) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, max_length: int = 256) -> SentenceEncoder:
        return cls(BertModel.from_pretrained(model_dir, add_pooling_layer=False),
                   BertTokenizer.from_pretrained(model_dir), max_length)

    @torch.inference_mode()
    def encode(self, sentences: list[str], batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
        """list of N sentences -> (N, C) embeddings. Sentences are batched by length to keep padding small."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        out = torch.empty(len(sentences), self.model.config.hidden_size)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([sentences[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            hidden = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
            out[idx] = mean_pooling(hidden, batch["attention_mask"])
        return F.normalize(out, dim=-1) if normalize else out

    def search(self, queries: list[str], corpus: list[str], top_k: int = 3) -> list[list[SearchHit]]:
        """For each query, the `top_k` corpus sentences by cosine similarity, best first."""
        hits = semantic_search(self.encode(queries), self.encode(corpus), top_k)
        return [[SearchHit(i, s, corpus[i]) for i, s in row] for row in hits]


def semantic_search(query_emb: torch.Tensor, corpus_emb: torch.Tensor, top_k: int = 3) -> list[list[tuple[int, float]]]:
    """(Q, C) and (N, C) embeddings -> for each query, (corpus index, cosine score) pairs, best first."""
    scores = F.normalize(query_emb, dim=-1) @ F.normalize(corpus_emb, dim=-1).T  # (Q, N)
    values, indices = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return [list(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(indices, values, strict=True)]
