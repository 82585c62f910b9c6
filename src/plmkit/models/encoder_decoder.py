"""The encoder-decoder Transformer (T5, BART) and its sequence-to-sequence language model, from a `ModelConfig`.

T5 and BART are configs (`seq2seq_config("t5")`, `seq2seq_config("bart")`): relative position bias vs learned
positions, RMSNorm pre-LN vs LayerNorm post-LN with an embedding LayerNorm, biases, attention and embedding
scaling and a logits bias are fields; this module wires the layers they name. Both stacks share one token
embedding; the decoder's layers attend causally to themselves and to all of the encoder's (unpadded) states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.heads.lm import IGNORE_INDEX, LMHead
from plmkit.layers.cross_attention import RelativePositionBias, Seq2SeqAttention
from plmkit.layers.dropout import Dropout
from plmkit.layers.feedforward import MLPS
from plmkit.layers.kv_cache import KVCache
from plmkit.layers.norms import build_norm
from plmkit.layers.seq2seq_block import Seq2SeqBlock
from plmkit.outputs import EncoderOutput, Seq2SeqLMOutput

SEQ2SEQ_STYLES: dict[str, dict[str, Any]] = {
    "t5": dict(is_encoder_decoder=True, norm_position="pre", type_vocab_size=0, position_embedding="relative",
               norm="rmsnorm", mlp="standard", activation="relu", bias=False, layer_norm_eps=1e-6,
               scale_attention=False, scale_tied_output=True, tie_word_embeddings=True, pad_token_id=0,
               eos_token_id=1, decoder_start_token_id=0),
    "bart": dict(is_encoder_decoder=True, norm_position="post", type_vocab_size=0, position_embedding="learned",
                 norm="layernorm", mlp="standard", activation="gelu", bias=True, layer_norm_eps=1e-5,
                 position_offset=2, embedding_norm=True, logits_bias=True, tie_word_embeddings=True, pad_token_id=1,
                 bos_token_id=0, eos_token_id=2, decoder_start_token_id=2),
}


def seq2seq_config(style: str = "t5", **fields: Any) -> ModelConfig:
    """An encoder-decoder config in the style of T5 or BART, with `fields` (sizes, vocabulary, ...) on top."""
    if style not in SEQ2SEQ_STYLES:
        raise PlmkitError(f"unknown encoder-decoder style {style!r}; choose from: {', '.join(SEQ2SEQ_STYLES)}")
    return ModelConfig(**{**SEQ2SEQ_STYLES[style], **fields})


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing: labels (B, T) -> decoder inputs (B, T), the start token then labels[:, :-1], -100 -> pad."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


def eos_terminated(ids: Sequence[int], eos: int | None) -> list[int]:
    """A source's ids ending in eos, as T5's and BART's tokenizers (and plmkit's text2text tasks) make them: eos is
    appended unless the tokenizer already put it there."""
    ids = list(ids)
    return ids if eos is None or (ids and ids[-1] == eos) else [*ids, eos]


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (input_ids, attention_mask), each (B, S), padded on the right (positions start at 0 in every
    row, as the source of a learned-position encoder needs)."""
    width = max(len(r) for r in rows)
    if width == 0:
        raise PlmkitError("cannot generate from an empty source")
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


def padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, S) 1/0 key mask -> (B, 1, 1, S) additive bias: 0 at tokens, the dtype's minimum at padding."""
    if mask is None or bool(mask.all()):
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class Seq2SeqCache:
    """What incremental decoding keeps: each decoder layer's self-attention keys and values (a KVCache, which
    grows), and its cross-attention keys and values of the encoder's states (computed once)."""

    def __init__(self, num_layers: int, max_length: int = 0) -> None:
        self.self_attn = KVCache(num_layers, max_length)
        self.cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        return self.self_attn.length

    def __len__(self) -> int:
        return self.length

    def advance(self, steps: int) -> None:
        self.self_attn.advance(steps)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',), in that order (beam search)."""
        self.self_attn.reorder(index)
        self.cross = [None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
                      for kv in self.cross]


class Seq2SeqStack(nn.Module):
    """Embedding scale and positions (the token embedding is the model's, passed in), `num_layers` blocks and, when
    pre-LN, a final norm. `decoder=True` gives causal self-attention and cross-attention to a memory."""

    def __init__(self, config: ModelConfig, num_layers: int, decoder: bool) -> None:
        super().__init__()
        c = self.config = config
        self.decoder = decoder
        self.embed_scale = math.sqrt(c.hidden_size) if c.scale_embedding else 1.0
        self.position = (nn.Embedding(c.max_position_embeddings + c.position_offset, c.hidden_size)
                         if c.position_embedding == "learned" else None)
        self.position_bias = (RelativePositionBias(c.relative_attention_num_buckets, c.relative_attention_max_distance,
                                                   c.num_heads, bidirectional=not decoder)
                              if c.position_embedding == "relative" else None)
        self.embed_norm = build_norm(c.norm, c.hidden_size, c.layer_norm_eps, c.bias) if c.embedding_norm else None
        self.dropout = Dropout(c.hidden_dropout) if c.hidden_dropout > 0 else nn.Identity()

        def attention(cross: bool, index: int) -> Seq2SeqAttention:
            return Seq2SeqAttention(c.hidden_size, c.num_heads, c.attention_dropout, c.bias, c.scale_attention,
                                    cross, index)

        def norm() -> nn.Module:
            return build_norm(c.norm, c.hidden_size, c.layer_norm_eps, c.bias)

        self.layers = nn.ModuleList(
            Seq2SeqBlock(attention(False, i), norm(), MLPS[c.mlp](c.hidden_size, c.intermediate_size, c.activation,
                                                                   c.bias), norm(),
                         attention(True, i) if decoder else None, norm() if decoder else None, c.hidden_dropout,
                         c.norm_position)
            for i in range(num_layers))
        self.final_norm = norm() if c.norm_position == "pre" else None

    def self_bias(self, mask: torch.Tensor | None, T: int, past: int, dtype: torch.dtype,
                  device: torch.device) -> torch.Tensor | None:
        """The additive (B or 1, H or 1, T, S) bias of T queries over S = past + T keys: position bias, padding and,
        in the decoder, causality. A query that may see no key at all sees itself (its output is unused)."""
        S = past + T
        if mask is not None and mask.shape[-1] != S:
            raise ValueError(f"attention mask covers {mask.shape[-1]} positions; expected {S}")
        key, query = torch.arange(S, device=device)[None], torch.arange(past, S, device=device)[:, None]
        allowed = (key <= query)[None, None] if self.decoder and T > 1 else None  # (1, 1, T, S)
        if mask is not None and not bool(mask.all()):
            keys = mask.bool()[:, None, None, :]
            allowed = keys if allowed is None else allowed & keys
            allowed = allowed | (~allowed.any(-1, keepdim=True) & (key == query))
        bias = None
        if allowed is not None:
            bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        if self.position_bias is not None:
            positions = self.position_bias(T, S, past).to(dtype)
            bias = positions if bias is None else bias + positions
        return bias

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, cache: Seq2SeqCache | None = None) -> torch.Tensor:
        """tokens (B, T, C) token embeddings -> (B, T, C) states.

        mask (B, S): 1 at tokens, 0 at padding, over the cached and new positions. memory (B, M, C) and
        memory_mask (B, M): the encoder's states, for the decoder. cache: the decoder's Seq2SeqCache.
        """
        B, T, _ = tokens.shape
        past = cache.length if cache is not None else 0
        x = tokens * self.embed_scale if self.embed_scale != 1.0 else tokens
        if self.position is not None:
            off, limit = self.config.position_offset, self.config.max_position_embeddings
            if past + T > limit:
                raise ValueError(f"position {past + T - 1} is past max_position_embeddings {limit}; truncate the input")
            x = x + self.position.weight[past + off:past + T + off]
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.dropout(x)
        self_bias = self.self_bias(mask, T, past, x.dtype, x.device)
        cross_bias = padding_bias(memory_mask, x.dtype) if self.decoder else None
        for layer in self.layers:
            x = layer(x, self_bias, memory, cross_bias, cache)
        if cache is not None:
            cache.advance(T)
        if self.final_norm is not None:
            x = self.dropout(self.final_norm(x))
        return x


class EncoderDecoderModel(nn.Module):
    """The shared token embedding, the encoder stack and the decoder stack."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not config.is_encoder_decoder:
            raise PlmkitError("config: an encoder-decoder needs is_encoder_decoder=True (use seq2seq_config(...))")
        if config.type_vocab_size != 0:
            raise PlmkitError("config: the encoder-decoder has no segment embedding; set type_vocab_size=0")
        if config.position_embedding == "rotary":
            raise PlmkitError("config: the encoder-decoder supports position_embedding 'learned' or 'relative'")
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = Seq2SeqStack(config, config.num_layers, decoder=False)
        self.decoder = Seq2SeqStack(config, config.decoder_layers, decoder=True)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        """input_ids (B, S) -> last_hidden_state (B, S, C)."""
        return EncoderOutput(last_hidden_state=self.encoder(self.shared(input_ids), attention_mask))

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
               decoder_attention_mask: torch.Tensor | None = None, cache: Seq2SeqCache | None = None) -> torch.Tensor:
        """decoder_input_ids (B, T), memory (B, S, C) -> (B, T, C)."""
        return self.decoder(self.shared(decoder_input_ids), decoder_attention_mask, memory, memory_mask, cache)


class Seq2SeqLM(nn.Module):
    """An encoder-decoder and a language-model head over the decoder's states (T5ForConditionalGeneration,
    BartForConditionalGeneration)."""

    def __init__(self, config: ModelConfig, *, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.model = EncoderDecoderModel(config)
        self.lm_head = LMHead(config.hidden_size, config.vocab_size,
                              self.model.shared if config.tie_word_embeddings else None)
        self.logits_bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.logits_bias else None
        self.output_scale = (config.hidden_size ** -0.5 if config.scale_tied_output and config.tie_word_embeddings
                             else 1.0)
        # Defaults for `generate` from a checkpoint's generation config (num_beams, forced BOS, ...).
        self.generation_defaults: dict[str, Any] = {}
        if init:
            self.init_weights()

    def init_weights(self) -> None:
        """N(0, initializer_range) for linear and embedding weights, zero biases, norms at identity (BART). A model
        that does not scale its attention scores (T5) gets T5's initialisation instead (`_init_t5`)."""
        if not self.config.scale_attention:
            self._init_t5()
            return
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.logits_bias is not None:
            nn.init.zeros_(self.logits_bias)

    def _init_t5(self) -> None:
        """Hugging Face's T5 initialisation (factor 1): embeddings N(0, 1), each projection N(0, fan_in^-0.5) with the
        query's also scaled by head_dim^-0.5 (T5 folds attention scaling into it), the position bias N(0, C^-0.5).
        With N(0, 0.02) everywhere an unscaled, output-rescaled T5 starts near uniform and learns slowly."""
        C = self.config.hidden_size
        head_dim = C // self.config.num_heads
        nn.init.normal_(self.model.shared.weight, std=1.0)
        if self.lm_head.proj is not None:
            nn.init.normal_(self.lm_head.proj.weight, std=C ** -0.5)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.lm_head.proj:
                nn.init.normal_(module.weight, std=module.in_features ** -0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RelativePositionBias):
                nn.init.normal_(module.embedding.weight, std=C ** -0.5)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, Seq2SeqAttention):  # the query's (C * d_kv)^-0.5 over all heads, as T5's q
                    (module.q_proj.weight if module.cross else module.qkv_proj.weight[:C]).mul_(head_dim ** -0.5)
        if self.logits_bias is not None:
            nn.init.zeros_(self.logits_bias)

    def new_cache(self, max_length: int = 0) -> Seq2SeqCache:
        return Seq2SeqCache(self.config.decoder_layers, max_length)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder states (B, T, C) -> logits (B, T, V)."""
        if self.output_scale != 1.0:
            hidden = hidden * self.output_scale
        logits = F.linear(hidden, self.lm_head.weight)
        return logits + self.logits_bias if self.logits_bias is not None else logits

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cache: Seq2SeqCache | None = None,
                encoder_outputs: EncoderOutput | torch.Tensor | None = None, use_cache: bool = False,
                logits_to_keep: int = 0, return_logits: bool = True,
                label_smoothing: float = 0.0) -> Seq2SeqLMOutput:
        """input_ids (B, S) with attention_mask (B, S), or `encoder_outputs` from `encode`; decoder_input_ids (B, T)
        (by default the labels shifted right) -> logits (B, T, V); loss, the mean cross-entropy over labels (B, T)
        that are not -100, when labels are given (not shifted: position t predicts labels[t]).

        With `cache` (or `use_cache=True`), decoder_input_ids are the new positions after the cached ones and
        decoder_attention_mask, if given, covers cached and new positions. `return_logits=False` with labels projects
        only the labelled positions onto the vocabulary (the same loss, without the padding's logits; training).
        `label_smoothing` mixes the uniform distribution into the targets, as `F.cross_entropy` does.
        """
        if encoder_outputs is None:
            if input_ids is None:
                raise PlmkitError("pass input_ids or encoder_outputs")
            encoder_outputs = self.model.encode(input_ids, attention_mask)
        memory = encoder_outputs if isinstance(encoder_outputs, torch.Tensor) else encoder_outputs.last_hidden_state
        if decoder_input_ids is None:
            if labels is None:
                raise PlmkitError("pass decoder_input_ids or labels")
            decoder_input_ids = self.shift_right(labels)
        if cache is None and use_cache:
            cache = self.new_cache()
        hidden = self.model.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask, cache)
        if logits_to_keep and labels is None:
            hidden = hidden[:, -logits_to_keep:]
        if labels is not None and not return_logits:
            keep = labels != IGNORE_INDEX
            loss = F.cross_entropy(self.logits(hidden[keep]).float(), labels[keep], label_smoothing=label_smoothing)
            return Seq2SeqLMOutput(loss=loss, logits=None, encoder_last_hidden_state=memory, cache=cache)
        logits = self.logits(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=memory, cache=cache)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.decoder_start_token_id is None or c.pad_token_id is None:
            raise PlmkitError("config: shifting labels needs decoder_start_token_id and pad_token_id")
        return shift_tokens_right(labels, c.pad_token_id, c.decoder_start_token_id)

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                 prompts: str | Sequence[str] | None = None, tokenizer: Any = None,
                 decoder_input_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Encode the source once, then decode with `plmkit.generation.generate` (greedy, sampling or beam search;
        its keyword arguments: max_new_tokens, num_beams, do_sample, ...) -> (B, 1 + new) ids that start with
        decoder_start_token_id, as `transformers` returns them.

        The source is input_ids (B, S) with attention_mask (B, S), or `prompts` (texts) with `tokenizer`.
        decoder_input_ids (B, T) continue given decoder prefixes instead (unpadded). Settings not given come from
        the checkpoint's generation config (`generation_defaults`: BART's forced BOS, no-repeat n-grams, beams, ...),
        its `max_length` (decoder start included) standing for max_new_tokens.
        """
        from plmkit.generation import generate

        defaults = dict(self.generation_defaults)
        max_length = defaults.pop("max_length", None)
        if max_length is not None and "max_new_tokens" not in kwargs:
            kwargs["max_new_tokens"] = max_length - 1
        kwargs = {**defaults, **kwargs}

        if (input_ids is None) == (prompts is None):
            raise PlmkitError("pass either input_ids or prompts (with tokenizer=...)")
        if prompts is not None:
            if tokenizer is None:
                raise PlmkitError("prompts need the tokenizer: pass tokenizer=...")
            rows = [eos_terminated(tokenizer.encode(p), self.config.eos_token_id)
                    for p in ([prompts] if isinstance(prompts, str) else prompts)]
            input_ids, attention_mask = right_pad(rows, self.config.pad_token_id or 0)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device) if attention_mask is not None else None
        memory = self.model.encode(input_ids, attention_mask).last_hidden_state
        if decoder_input_ids is None:
            if self.config.decoder_start_token_id is None:
                raise PlmkitError("config: generation needs decoder_start_token_id")
            decoder_input_ids = input_ids.new_full((input_ids.shape[0], 1), self.config.decoder_start_token_id)
        return generate(DecoderStep(self, memory, attention_mask), decoder_input_ids.to(self.device),
                        tokenizer=tokenizer, **kwargs)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **config_overrides: Any) -> Seq2SeqLM:
        """Load a Hugging Face T5 or BART directory (or hub id)."""
        from plmkit.interop.hf_seq2seq import load_pretrained

        return load_pretrained(name_or_path, **config_overrides)

    def save_pretrained(self, save_directory: str | Path, tokenizer: Any = None) -> Path:
        """Write `config.json` + `model.safetensors` that transformers loads as T5ForConditionalGeneration or
        BartForConditionalGeneration (whichever the config matches)."""
        from plmkit.interop.hf_seq2seq import save_pretrained

        return save_pretrained(self, save_directory, tokenizer=tokenizer)


class DecoderStep:
    """The decoder of a Seq2SeqLM over fixed encoder states, with the call signature of a CausalLM, so that
    `plmkit.generation.generate` and its beam search drive it unchanged. Beam search's B * K rows get the encoder
    states of their source row (repeated K times, as its rows are)."""

    def __init__(self, model: Seq2SeqLM, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> None:
        self.model, self.config = model, model.config
        self.memory, self.memory_mask = memory, memory_mask

    @property
    def device(self) -> torch.device:
        return self.memory.device

    def new_cache(self, max_length: int = 0) -> Seq2SeqCache:
        return self.model.new_cache(max_length)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, cache: Seq2SeqCache | None = None,
                 logits_to_keep: int = 0) -> Seq2SeqLMOutput:
        """One decoding step over the new decoder positions input_ids (B or B * K, T)."""
        repeats = input_ids.shape[0] // self.memory.shape[0]
        if repeats > 1:  # the first step of a beam search; from then on the states have B * K rows
            self.memory = self.memory.repeat_interleave(repeats, dim=0)
            if self.memory_mask is not None:
                self.memory_mask = self.memory_mask.repeat_interleave(repeats, dim=0)
        # position_ids are the generator's (left padding of decoder prompts); the decoder counts positions itself.
        return self.model(attention_mask=self.memory_mask, decoder_input_ids=input_ids,
                          decoder_attention_mask=attention_mask, cache=cache, encoder_outputs=self.memory,
                          logits_to_keep=logits_to_keep)
