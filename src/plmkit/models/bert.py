"""BERT task models: one encoder backbone, an optional pooler and the heads a task needs.

The class names and forward signatures follow Hugging Face's (`BertForSequenceClassification`, ...), so the
familiar workflow runs with plmkit names; the modules inside are plmkit's own (`encoder`, `pooler`, `mlm`,
`nsp`, `classifier`, `qa`), and only `plmkit.interop` knows the Hugging Face key names.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.heads import (
    MaskedLMHead,
    NextSentenceHead,
    Pooler,
    SequenceClassificationHead,
    SpanQAHead,
    TokenClassificationHead,
)
from plmkit.layers.embeddings import tied_lookup_sparse_grad
from plmkit.models.encoder import Encoder
from plmkit.outputs import (
    EncoderOutput,
    MaskedLMOutput,
    NextSentencePredictionOutput,
    PreTrainingOutput,
    QuestionAnsweringOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)


class BertPreTrainedModel(nn.Module):
    """Base of the task models: config, BERT initialisation, `from_pretrained` / `save_pretrained`."""

    hf_architecture: ClassVar[str] = "BertModel"
    hf_prefix: ClassVar[str] = "bert."  # of the backbone's keys in a checkpoint ("" for transformers' BertModel)
    uses_pooler: ClassVar[bool] = False
    heads: ClassVar[tuple[str, ...]] = ()  # head modules by attribute name, as the interop map names them

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.pooler = Pooler(config.hidden_size) if self.uses_pooler else None

    # ------------------------------------------------------------------ initialisation
    def init_weights(self) -> None:
        """BERT initialisation: N(0, initializer_range) for linear and embedding weights, zero biases,
        LayerNorm at identity, the padding embedding at zero."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, MaskedLMHead):
                nn.init.zeros_(module.bias)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None,
                output_hidden_states: bool, output_attentions: bool,
                pooled_only: bool = False) -> tuple[EncoderOutput, torch.Tensor | None]:
        """The encoder's output and the pooled [CLS] vector. `pooled_only` (heads that read nothing but the pooled
        vector): unless every layer's states or attentions are asked for, the last layer computes [CLS] alone and
        `last_hidden_state` is (B, 1, C)."""
        first_only = pooled_only and not (output_hidden_states or output_attentions)
        out = self.encoder(input_ids, attention_mask, token_type_ids, position_ids,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                           first_token_only=first_only)
        pooled = self.pooler(out.last_hidden_state) if self.pooler is not None else None
        return out, pooled

    def _tied_lookup(self, labels: torch.Tensor | None) -> contextlib.AbstractContextManager:
        """Sparse token-lookup gradient while a tied masked-LM head scores `labels` (`tied_lookup_sparse_grad`)."""
        head = getattr(self, "mlm", None)
        return tied_lookup_sparse_grad(self.encoder.embed.token, labels if head is not None and head.is_tied else None)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, config: ModelConfig | None = None,
                        **config_overrides: Any) -> BertPreTrainedModel:
        """Load a Hugging Face BERT directory (or hub id) into this class.

        Heads this class has but the checkpoint lacks are freshly initialised (logged, as `transformers`
        warns); backbone keys that are missing, keys nobody knows, and shape mismatches are errors.
        `config_overrides` (e.g. `num_labels=3`) change the checkpoint's config before the model is built.
        """
        from plmkit.interop.hf_bert import load_pretrained

        return load_pretrained(cls, name_or_path, config=config, **config_overrides)

    def save_pretrained(self, save_directory: str | Path, tokenizer: Any = None) -> Path:
        """Write `config.json` + `model.safetensors` (+ tokenizer files) that `transformers` loads as-is."""
        from plmkit.interop.hf_bert import save_pretrained

        return save_pretrained(self, save_directory, tokenizer=tokenizer)


class BertModel(BertPreTrainedModel):
    """The bare encoder (+ pooler): hidden states for feature extraction and sentence embeddings."""

    hf_architecture = "BertModel"
    hf_prefix = ""

    def __init__(self, config: ModelConfig, add_pooling_layer: bool = True) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.encoder = Encoder(config)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> EncoderOutput:
        out, pooled = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                                   output_hidden_states, output_attentions)
        out.pooler_output = pooled
        return out


class BertForMaskedLM(BertPreTrainedModel):
    hf_architecture = "BertForMaskedLM"
    heads = ("mlm",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.mlm = _mlm_head(config, self.encoder)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False, masked_only: bool = False,
                return_logits: bool = True) -> MaskedLMOutput:
        """`masked_only=True` (with labels) decodes only the labelled positions: same loss, logits (N, V).
        `return_logits=False` (with labels) computes that loss without logits (`MaskedLMHead`): training."""
        with self._tied_lookup(labels):
            out, _ = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                                  output_hidden_states, output_attentions)
        logits, loss = self.mlm(out.last_hidden_state, labels, masked_only=masked_only, return_logits=return_logits)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


class BertForNextSentencePrediction(BertPreTrainedModel):
    hf_architecture = "BertForNextSentencePrediction"
    uses_pooler = True
    heads = ("nsp",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.nsp = NextSentenceHead(config.hidden_size)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> NextSentencePredictionOutput:
        out, pooled = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                                   output_hidden_states, output_attentions, pooled_only=True)
        logits, loss = self.nsp(pooled, labels)
        return NextSentencePredictionOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                            attentions=out.attentions)


class BertForPreTraining(BertPreTrainedModel):
    """Masked-LM + next-sentence prediction, BERT's pretraining objective; loss is their sum."""

    hf_architecture = "BertForPreTraining"
    uses_pooler = True
    heads = ("mlm", "nsp")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.mlm = _mlm_head(config, self.encoder)
        self.nsp = NextSentenceHead(config.hidden_size)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, next_sentence_label: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False,
                masked_only: bool = False, return_logits: bool = True) -> PreTrainingOutput:
        """`masked_only=True` (with labels) decodes only the labelled positions: same losses, prediction_logits
        (N, V) for the N positions where labels != -100. `return_logits=False` (with labels) computes the same
        masked-LM loss without any prediction logits, faster (`MaskedLMHead`). Pretraining wants both; the
        defaults match transformers."""
        with self._tied_lookup(labels):
            out, pooled = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                                       output_hidden_states, output_attentions)
        logits, mlm_loss = self.mlm(out.last_hidden_state, labels, masked_only=masked_only,
                                    return_logits=return_logits)
        nsp_logits, nsp_loss = self.nsp(pooled, next_sentence_label)
        loss = mlm_loss + nsp_loss if mlm_loss is not None and nsp_loss is not None else None
        return PreTrainingOutput(loss=loss, prediction_logits=logits, seq_relationship_logits=nsp_logits,
                                 mlm_loss=mlm_loss, nsp_loss=nsp_loss, hidden_states=out.hidden_states,
                                 attentions=out.attentions)


class BertForSequenceClassification(BertPreTrainedModel):
    """Pooled [CLS] -> num_labels: cross-entropy (single label), MSE (regression) or BCE (multi-label)."""

    hf_architecture = "BertForSequenceClassification"
    uses_pooler = True
    heads = ("classifier",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = SequenceClassificationHead(config.hidden_size, config.num_labels, _classifier_dropout(config),
                                                     config.problem_type)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> SequenceClassifierOutput:
        out, pooled = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                                   output_hidden_states, output_attentions, pooled_only=True)
        logits, loss = self.classifier(pooled, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


class BertForSentenceSimilarity(BertPreTrainedModel):
    """A bi-encoder, as sentence-transformers' mean-pooling SentenceTransformer: each text of a pair is encoded on
    its own, its real tokens' vectors averaged, and the pair scored by the cosine of the two vectors (`logits`,
    (B, 1)). With `labels` (target similarities, e.g. STS-B's 0-5 scores divided by 5) the loss is the mean
    squared error of the cosine (sentence-transformers' CosineSimilarityLoss). Saved as a bare BertModel: what
    `plmkit.similarity.SentenceEncoder`, sentence-transformers and transformers' AutoModel load for embeddings."""

    hf_architecture = "BertModel"
    hf_prefix = ""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.init_weights()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, C) mean-pooled sentence vectors (not normalised)."""
        from plmkit.similarity import mean_pooling

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state
        return mean_pooling(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, pair_input_ids: torch.Tensor | None = None,
                pair_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        if pair_input_ids is None:
            raise ValueError("BertForSentenceSimilarity scores pairs: give pair_input_ids (the second texts)")
        if pair_attention_mask is None:
            pair_attention_mask = torch.ones_like(pair_input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Both sides in one pass (one set of larger matmuls): the shorter side padded to the longer's length.
        length = max(input_ids.shape[1], pair_input_ids.shape[1])

        def padded(x: torch.Tensor, value: int) -> torch.Tensor:
            return nn.functional.pad(x, (0, length - x.shape[1]), value=value)

        pad_id = self.config.pad_token_id or 0
        ids = torch.cat([padded(input_ids, pad_id), padded(pair_input_ids, pad_id)])
        mask = torch.cat([padded(attention_mask, 0), padded(pair_attention_mask, 0)])
        first, second = self.embed(ids, mask).split(input_ids.shape[0])
        cosine = nn.functional.cosine_similarity(first, second, dim=-1)
        loss = nn.functional.mse_loss(cosine, labels.to(cosine.dtype)) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=cosine.unsqueeze(-1))


class BertForTokenClassification(BertPreTrainedModel):
    """A label per token (NER, POS); positions labelled -100 are ignored by the loss."""

    hf_architecture = "BertForTokenClassification"
    heads = ("classifier",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = TokenClassificationHead(config.hidden_size, config.num_labels, _classifier_dropout(config))
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False,
                output_attentions: bool = False) -> TokenClassifierOutput:
        out, _ = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                              output_hidden_states, output_attentions)
        logits, loss = self.classifier(out.last_hidden_state, labels)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: start and end logits over the tokens."""

    hf_architecture = "BertForQuestionAnswering"
    heads = ("qa",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.qa = SpanQAHead(config.hidden_size)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                start_positions: torch.Tensor | None = None, end_positions: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> QuestionAnsweringOutput:
        out, _ = self._encode(input_ids, attention_mask, token_type_ids, position_ids,
                              output_hidden_states, output_attentions)
        start_logits, end_logits, loss = self.qa(out.last_hidden_state, start_positions, end_positions)
        return QuestionAnsweringOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                       hidden_states=out.hidden_states, attentions=out.attentions)


def _mlm_head(config: ModelConfig, encoder: Encoder) -> MaskedLMHead:
    tied = encoder.embed.token if config.tie_word_embeddings else None
    return MaskedLMHead(config.hidden_size, config.vocab_size, config.activation, config.layer_norm_eps, tied)


def _classifier_dropout(config: ModelConfig) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout


# Every task model by its Hugging Face architecture name.
MODEL_CLASSES: dict[str, type[BertPreTrainedModel]] = {
    cls.hf_architecture: cls
    for cls in (BertModel, BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
                BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering)
}
