"""Typed model outputs. `loss` is set only when labels were given; fields are read by name, never by position."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


class ModelOutput:
    """Mixin: `out.loss`, `out["loss"]`, `"loss" in out` and `out.to_dict()` (fields that are not None)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return getattr(self, key, None) is not None

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}


@dataclass
class EncoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, T, C)
    pooler_output: torch.Tensor | None = None  # (B, C)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # num_layers + 1 of (B, T, C), embeddings first
    attentions: tuple[torch.Tensor, ...] | None = None  # num_layers of (B, H, T, T)


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, V); (N, V) at the N labelled positions with masked_only=True
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class NextSentencePredictionOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, 2): index 0 = "B follows A"
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None  # masked-LM loss + next-sentence loss
    prediction_logits: torch.Tensor | None = None  # (B, T, V); (N, V) at the N labelled positions with masked_only
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2)
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class QuestionAnsweringOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # (B, T)
    end_logits: torch.Tensor | None = None  # (B, T)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class DecoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, T, C), after the final norm
    cache: Any = None  # the KVCache the keys and values of these positions were added to
    hidden_states: tuple[torch.Tensor, ...] | None = None  # num_layers + 1 of (B, T, C), embeddings first


@dataclass
class CausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean next-token cross-entropy over the targets that are not -100
    logits: torch.Tensor | None = None  # (B, T, V); (B, k, V) with logits_to_keep=k; None with return_logits=False
    cache: Any = None  # plmkit.layers.KVCache, to continue from with the next tokens
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean cross-entropy over the labels that are not -100
    logits: torch.Tensor | None = None  # (B, T, V) over the decoder positions; (B, k, V) with logits_to_keep=k
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, C), to pass back as encoder_outputs
    cache: Any = None  # plmkit.models.encoder_decoder.Seq2SeqCache, to continue decoding from
