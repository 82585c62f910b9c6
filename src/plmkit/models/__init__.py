"""Model backbones and task models."""

from plmkit.models.bert import (
                                MODEL_CLASSES,
                                BertForMaskedLM,
                                BertForNextSentencePrediction,
                                BertForPreTraining,
                                BertForQuestionAnswering,
                                BertForSentenceSimilarity,
                                BertForSequenceClassification,
                                BertForTokenClassification,
                                BertModel,
                                BertPreTrainedModel,
)
from plmkit.models.decoder import CausalLM, DecoderModel, decoder_config
from plmkit.models.encoder import Encoder
from plmkit.models.encoder_decoder import EncoderDecoderModel, Seq2SeqLM, seq2seq_config, shift_tokens_right

__all__ = ["MODEL_CLASSES", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
           "BertForQuestionAnswering", "BertForSentenceSimilarity", "BertForSequenceClassification",
           "BertForTokenClassification", "BertModel", "BertPreTrainedModel", "CausalLM", "DecoderModel", "Encoder",
           "EncoderDecoderModel", "Seq2SeqLM", "decoder_config", "seq2seq_config", "shift_tokens_right"]
