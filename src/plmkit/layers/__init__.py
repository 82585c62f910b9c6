"""Building blocks of a Transformer: embeddings, attention, feed-forward, block. Each is wired by a builder."""

from plmkit.layers.attention import SelfAttention
from plmkit.layers.block import TransformerBlock
from plmkit.layers.causal_attention import CausalSelfAttention
from plmkit.layers.cross_attention import RelativePositionBias, Seq2SeqAttention, relative_position_bucket
from plmkit.layers.decoder_block import DecoderBlock
from plmkit.layers.embeddings import Embeddings
from plmkit.layers.feedforward import ACTIVATIONS, MLPS, FeedForward, GatedFeedForward, get_activation
from plmkit.layers.kv_cache import KVCache
from plmkit.layers.norms import NORMS, build_norm
from plmkit.layers.packing import Packing
from plmkit.layers.rotary import RotaryEmbedding, apply_rotary
from plmkit.layers.seq2seq_block import Seq2SeqBlock

__all__ = ["ACTIVATIONS", "MLPS", "NORMS", "CausalSelfAttention", "DecoderBlock", "Embeddings", "FeedForward",
           "GatedFeedForward", "KVCache", "Packing", "RelativePositionBias", "RotaryEmbedding", "SelfAttention",
           "Seq2SeqAttention", "Seq2SeqBlock", "TransformerBlock", "apply_rotary", "build_norm", "get_activation",
           "relative_position_bucket"]
