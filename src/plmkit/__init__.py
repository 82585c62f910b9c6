"""plmkit: build, pretrain, fine-tune, evaluate and use Transformer language models.

    import plmkit, torch
    tok = plmkit.BertTokenizer.from_pretrained(model_dir)
    model = plmkit.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    inputs = tok("Hello, my dog is cute", return_tensors="pt")
    outputs = model(**inputs, labels=torch.tensor([1]).unsqueeze(0))
"""

from __future__ import annotations

from pathlib import Path

from plmkit.config import ModelConfig
from plmkit.data.tokenizer import BertTokenizer, BPETokenizer, load_tokenizer
from plmkit.errors import PlmkitError
from plmkit.models import (
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
from plmkit.models.decoder import CausalLM, DecoderModel, decoder_config, load_causal_lm
from plmkit.models.encoder_decoder import EncoderDecoderModel, Seq2SeqLM, seq2seq_config
from plmkit.pipelines import pipeline
from plmkit.tasks import get_task

__version__ = "0.1.0"


def from_pretrained(name_or_path: str | Path, **config_overrides) -> BertPreTrainedModel | CausalLM | Seq2SeqLM:
    """Load a Hugging Face BERT directory (or hub id) with whichever heads its weights have; a GPT-2 or Llama
    directory, or a llama.cpp `.gguf` file, as a CausalLM; a T5 or BART directory as a Seq2SeqLM."""
    from plmkit.interop import detect_architecture, model_family, resolve_model_dir

    if str(name_or_path).endswith(".gguf"):
        return CausalLM.from_pretrained(name_or_path, **config_overrides)
    model_dir = resolve_model_dir(name_or_path)
    family = model_family(model_dir)
    if family == "decoder":
        return CausalLM.from_pretrained(model_dir, **config_overrides)
    if family == "seq2seq":
        return Seq2SeqLM.from_pretrained(model_dir, **config_overrides)
    return MODEL_CLASSES[detect_architecture(model_dir)].from_pretrained(model_dir, **config_overrides)


__all__ = [
    "BPETokenizer", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForQuestionAnswering", "BertForSentenceSimilarity", "BertForSequenceClassification",
    "BertForTokenClassification", "BertModel",
    "BertPreTrainedModel", "BertTokenizer", "CausalLM", "DecoderModel", "EncoderDecoderModel", "ModelConfig",
    "PlmkitError", "Seq2SeqLM", "decoder_config", "from_pretrained", "get_task", "load_causal_lm", "load_tokenizer",
    "pipeline", "seq2seq_config",
]
