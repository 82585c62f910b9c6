"""Task heads on top of a backbone's hidden states. Each computes a loss only when labels are given."""

from plmkit.heads.classification import SequenceClassificationHead, TokenClassificationHead, classification_loss
from plmkit.heads.lm import LMHead
from plmkit.heads.mlm import MaskedLMHead
from plmkit.heads.pooler import Pooler
from plmkit.heads.pretraining import NextSentenceHead
from plmkit.heads.span_qa import SpanQAHead

__all__ = ["LMHead", "MaskedLMHead", "NextSentenceHead", "Pooler", "SequenceClassificationHead", "SpanQAHead",
           "TokenClassificationHead", "classification_loss"]
