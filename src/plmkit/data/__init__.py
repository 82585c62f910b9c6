"""Data: tokenizers (and, later, corpus shards, task readers and collate functions)."""

from plmkit.data.tokenizer import BatchEncoding, BertTokenizer, BPETokenizer, load_tokenizer
from plmkit.data.tokenizer_train import train_bytelevel_bpe, train_wordpiece

__all__ = ["BatchEncoding", "BertTokenizer", "BPETokenizer", "load_tokenizer", "train_bytelevel_bpe",
           "train_wordpiece"]
