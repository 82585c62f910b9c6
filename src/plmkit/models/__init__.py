"""Model backbones and task models."""

from plmkit.models.bert import (
                                MODEL_CLASSES,
                                BertForMaskedLM,
                                BertForNextSentencePrediction,
                                BertForPreTraining,
                                BertForQuestionAnswering,
                                BertForSequenceClassification,
                                BertForTokenClassification,
                                BertModel,
                                BertPreTrainedModel,
)
from plmkit.models.decoder import CausalLM, DecoderModel, decoder_config
from plmkit.models.encoder import Encoder

__all__ = ["MODEL_CLASSES", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
           "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification", "BertModel",
           "BertPreTrainedModel", "CausalLM", "DecoderModel", "Encoder", "decoder_config"]
