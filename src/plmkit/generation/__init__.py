"""Using a causal LM: generation (greedy, sampling, beam search), scoring and perplexity, chat templates."""

from plmkit.generation.beam import beam_search
from plmkit.generation.chat import apply_chat_template, render_chat
from plmkit.generation.generate import generate
from plmkit.generation.scoring import Perplexity, TextScore, perplexity, score

__all__ = ["Perplexity", "TextScore", "apply_chat_template", "beam_search", "generate", "perplexity", "render_chat",
           "score"]
