"""Building blocks of a Transformer: embeddings, attention, feed-forward, block. Each is wired by a builder."""

from plmkit.layers.attention import SelfAttention
from plmkit.layers.block import TransformerBlock
from plmkit.layers.embeddings import Embeddings
from plmkit.layers.feedforward import ACTIVATIONS, FeedForward, get_activation
from plmkit.layers.packing import Packing

__all__ = ["ACTIVATIONS", "Embeddings", "FeedForward", "Packing", "SelfAttention", "TransformerBlock", "get_activation"]
