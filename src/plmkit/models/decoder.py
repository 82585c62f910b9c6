"""The causal Transformer decoder (GPT-2, Llama) and its language model, built from a `ModelConfig`.

GPT-2 and Llama are configs, not classes (`decoder_config("gpt2")`, `decoder_config("llama")`): learned vs rotary
positions, LayerNorm vs RMSNorm, GELU MLP vs SwiGLU, multi-head vs grouped-query attention, biases and a tied or
separate output matrix are fields of the config; this module only wires the layers they name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.heads.lm import LMHead
from plmkit.layers.causal_attention import CausalSelfAttention
from plmkit.layers.decoder_block import DecoderBlock
from plmkit.layers.embeddings import tied_lookup_sparse_grad
from plmkit.layers.feedforward import MLPS
from plmkit.layers.kv_cache import KVCache
from plmkit.layers.norms import build_norm
from plmkit.layers.rotary import RotaryEmbedding
from plmkit.outputs import CausalLMOutput, DecoderOutput

# The fields that make GPT-2 and Llama; sizes and vocabulary come from the caller.
DECODER_STYLES: dict[str, dict[str, Any]] = {
    "gpt2": dict(causal=True, norm_position="pre", type_vocab_size=0, position_embedding="learned", norm="layernorm",
                 mlp="standard", activation="gelu_tanh", bias=True, layer_norm_eps=1e-5, tie_word_embeddings=True,
                 pad_token_id=None),
    "llama": dict(causal=True, norm_position="pre", type_vocab_size=0, position_embedding="rotary", norm="rmsnorm",
                  mlp="gated", activation="silu", bias=False, layer_norm_eps=1e-6, tie_word_embeddings=False,
                  hidden_dropout=0.0, attention_dropout=0.0, pad_token_id=None),
}


def decoder_config(style: str = "gpt2", **fields: Any) -> ModelConfig:
    """A decoder config in the style of GPT-2 or Llama, with `fields` (sizes, vocabulary, ...) on top."""
    if style not in DECODER_STYLES:
        raise PlmkitError(f"unknown decoder style {style!r}; choose from: {', '.join(DECODER_STYLES)}")
    return ModelConfig(**{**DECODER_STYLES[style], **fields})


def check_decoder_config(config: ModelConfig) -> None:
    """The fields a decoder needs, each named when wrong."""
    if not config.causal:
        raise PlmkitError("config: a decoder needs causal=True (use decoder_config(...) or set it)")
    if config.norm_position != "pre":
        raise PlmkitError("config: the decoder is pre-LN; set norm_position='pre'")
    if config.type_vocab_size != 0:
        raise PlmkitError("config: the decoder has no segment embedding; set type_vocab_size=0")


def build_decoder_block(config: ModelConfig, index: int) -> DecoderBlock:
    """Wire one layer from the config: the block itself knows nothing of configs."""
    c = config
    return DecoderBlock(
        attn=CausalSelfAttention(c.hidden_size, c.num_heads, c.kv_heads, c.attention_dropout, c.bias, index),
        mlp=MLPS[c.mlp](c.hidden_size, c.intermediate_size, c.activation, c.bias),
        attn_norm=build_norm(c.norm, c.hidden_size, c.layer_norm_eps, c.bias),
        mlp_norm=build_norm(c.norm, c.hidden_size, c.layer_norm_eps, c.bias),
        dropout=c.hidden_dropout,
    )


class DecoderEmbeddings(nn.Module):
    """Token embedding, plus a learned position table unless positions are rotary, then dropout (no norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                         if config.position_embedding == "learned" else None)
        self.dropout = nn.Dropout(config.hidden_dropout) if config.hidden_dropout > 0 else nn.Identity()

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None, past: int) -> torch.Tensor:
        """input_ids (B, T) -> (B, T, C); positions past..past+T-1 unless `position_ids` (B, T) are given."""
        x = self.token(input_ids)
        if self.position is not None:
            T, limit = input_ids.shape[1], self.position.num_embeddings
            last = int(position_ids.max()) if position_ids is not None else past + T - 1
            if last >= limit:
                raise ValueError(f"position {last} is past max_position_embeddings {limit}; truncate the input")
            # (T, C) broadcasts over the batch: no index tensor to build per call.
            x = x + (self.position.weight[past:past + T] if position_ids is None else self.position(position_ids))
        return self.dropout(x)


def causal_mask(attention_mask: torch.Tensor | None, seq_len: int, past: int) -> torch.Tensor | None:
    """The boolean (B or 1, 1, T, S) mask of T new queries over S = past + T keys, or None when SDPA's own causal
    mask is exact (no padding, and no block of several new positions after cached ones).

    attention_mask (B, S): 1 = token, 0 = padding, over the cached and the new positions (Hugging Face's
    convention). A padding query would see no key at all; it may see itself, so that its (unused) output stays
    finite instead of NaN, which would reach real positions through 0 * NaN.
    """
    total = past + seq_len
    if attention_mask is not None and attention_mask.shape[-1] != total:
        raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions; expected {total} "
                         f"({past} cached + {seq_len} new)")
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and (past == 0 or seq_len == 1):
        return None
    device = attention_mask.device if attention_mask is not None else None
    query = torch.arange(past, total, device=device)[:, None]
    key = torch.arange(total, device=device)[None, :]
    mask = (key <= query)[None, None]  # (1, 1, T, S)
    if padded:
        mask = (mask & attention_mask.bool()[:, None, None, :]) | (key == query)
    return mask


class DecoderModel(nn.Module):
    """Embeddings, `num_layers` pre-LN decoder blocks and a final norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_decoder_config(config)
        self.config = config
        self.embed = DecoderEmbeddings(config)
        self.rotary = (RotaryEmbedding(config.head_dim, config.rope_theta)
                       if config.position_embedding == "rotary" else None)
        self.layers = nn.ModuleList(build_decoder_block(config, i) for i in range(config.num_layers))
        self.final_norm = build_norm(config.norm, config.hidden_size, config.layer_norm_eps, config.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                output_hidden_states: bool = False) -> DecoderOutput:
        """input_ids (B, T) -> last_hidden_state (B, T, C).

        attention_mask (B, S): S = cached + T positions, 0 at padding. position_ids (B, T): by default the
        positions after the cached ones; batched generation with left padding passes them (from the mask).
        cache: the keys and values of earlier positions; this call's are added to it.
        """
        T = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        x = self.embed(input_ids, position_ids, past)
        rope = None
        if self.rotary is not None:
            positions = position_ids if position_ids is not None else torch.arange(past, past + T,
                                                                                  device=x.device)[None]
            rope = self.rotary(positions, x.dtype)
        mask = causal_mask(attention_mask, T, past)
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, rope, mask, cache)
            if hidden_states is not None:
                hidden_states.append(x)
        if cache is not None:
            cache.advance(T)
        x = self.final_norm(x)
        if hidden_states is not None:
            hidden_states[-1] = x  # as Hugging Face: the last hidden state is after the final norm
        return DecoderOutput(last_hidden_state=x, cache=cache,
                             hidden_states=tuple(hidden_states) if hidden_states is not None else None)


class CausalLM(nn.Module):
    """A decoder and a language-model head: next-token logits, and the causal LM loss when labels are given."""

    def __init__(self, config: ModelConfig, *, init: bool = True) -> None:
        """`init=False` skips the random initialisation, for loaders that overwrite every weight."""
        super().__init__()
        self.config = config
        self.decoder = DecoderModel(config)
        tied = self.decoder.embed.token if config.tie_word_embeddings else None
        self.lm_head = LMHead(config.hidden_size, config.vocab_size, tied)
        if init:
            self.init_weights()

    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, initializer_range) for linear and embedding weights, zero biases, norms at
        identity, and the projections that write into the residual stream scaled by 1/sqrt(2 * num_layers)."""
        std = self.config.initializer_range
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scaled = name.endswith("out_proj")
                nn.init.normal_(module.weight, mean=0.0, std=std / (2 * self.config.num_layers) ** 0.5 if scaled
                                else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cache: KVCache | None = None,
                position_ids: torch.Tensor | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                return_logits: bool = True, output_hidden_states: bool = False) -> CausalLMOutput:
        """input_ids (B, T) -> logits (B, T, V); loss when labels (B, T) are given (shifted inside: position t is
        scored on labels[t + 1]; -100 is ignored).

        `use_cache=True` starts a KVCache when none is given; `out.cache` continues it. `logits_to_keep=k` computes
        the logits of the last k positions only (generation needs one). `return_logits=False` with labels computes
        the same loss chunk by chunk without holding the (B, T, V) logits (training).
        """
        if cache is None and use_cache:
            cache = self.new_cache()
        # With labels and a tied head, the head's dense gradient of the shared matrix takes the lookup's rows.
        targets = labels[:, 1:] if labels is not None and self.lm_head.is_tied else None
        with tied_lookup_sparse_grad(self.decoder.embed.token, targets):
            out = self.decoder(input_ids, attention_mask, position_ids, cache, output_hidden_states)
        hidden = out.last_hidden_state
        if logits_to_keep and labels is None:
            hidden = hidden[:, -logits_to_keep:]
        logits, loss = self.lm_head(hidden, labels, return_logits=return_logits)
        return CausalLMOutput(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states)

    def new_cache(self, max_length: int = 0) -> KVCache:
        """An empty KVCache for this model (buffers sized for `max_length` positions when known)."""
        return KVCache(self.config.num_layers, max_length)

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`plmkit.generation.generate(self, ...)`."""
        from plmkit.generation import generate

        return generate(self, *args, **kwargs)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **config_overrides: Any) -> CausalLM:
        """Load a Hugging Face GPT-2 or Llama directory (or hub id), or a llama.cpp `.gguf` file."""
        if str(name_or_path).endswith(".gguf"):
            from plmkit.interop.gguf import load_gguf_model

            return load_gguf_model(name_or_path, **config_overrides)
        from plmkit.interop.hf_decoder import load_pretrained

        return load_pretrained(name_or_path, **config_overrides)

    def save_pretrained(self, save_directory: str | Path, tokenizer: Any = None, hf_format: str | None = None) -> Path:
        """Write `config.json` + `model.safetensors` (+ tokenizer files) that `transformers` loads as
        GPT2LMHeadModel or LlamaForCausalLM (`hf_format`, by default whichever the config matches)."""
        from plmkit.interop.hf_decoder import save_pretrained

        return save_pretrained(self, save_directory, tokenizer=tokenizer, hf_format=hf_format)


def load_causal_lm(name_or_path: str | Path) -> tuple[CausalLM, Any]:
    """(model, tokenizer or None) from a `.gguf` file or a Hugging Face GPT-2/Llama directory (or hub id)."""
    if str(name_or_path).endswith(".gguf"):
        from plmkit.interop.gguf import load_gguf

        return load_gguf(name_or_path)
    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.interop.hf_decoder import read_chat_template
    from plmkit.interop.hub import resolve_model_dir

    model_dir = resolve_model_dir(name_or_path)
    model = CausalLM.from_pretrained(model_dir)
    tokenizer = None
    if any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        tokenizer = load_tokenizer(model_dir)
        tokenizer.chat_template = read_chat_template(model_dir)
    return model, tokenizer
