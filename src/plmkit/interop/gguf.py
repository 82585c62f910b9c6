"""llama.cpp GGUF files -> plmkit `CausalLM` and `BPETokenizer` (Llama architecture, byte-level BPE vocabulary).

Tensors are read by `plmkit.interop.gguf_reader` and dequantised to float32 (`gguf.quants.dequantize`: Q4_0, Q4_1, Q8_0,
K-quants, F16, ...). llama.cpp's converter permutes the rows of Q and K within each head from Hugging Face's
"rotate_half" rotary layout to the interleaved one; `unpermute_rotary` undoes it (as `transformers`'
`LlamaTensorProcessor` does), so the declarative key map below then reads like the Hugging Face one. The tokenizer
is rebuilt from the `tokenizer.ggml.*` metadata, and `tokenizer.chat_template` comes along for instruct models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.interop.gguf_reader import GGUFContents
from plmkit.interop.keymap import Key, expand, gate_up_rows, load_into, qkv_rows

log = logging.getLogger(__name__)

GGUF_LLAMA_KEYS: dict[str, Key | str] = {
    "decoder.embed.token.weight": "token_embd.weight",
    "decoder.layers.{}.attn_norm.weight": "blk.{}.attn_norm.weight",
    "decoder.layers.{}.attn.qkv_proj.weight": Key(tuple(f"blk.{{}}.attn_{p}.weight" for p in "qkv"), split=qkv_rows),
    "decoder.layers.{}.attn.qkv_proj.bias": Key(tuple(f"blk.{{}}.attn_{p}.bias" for p in "qkv"), split=qkv_rows),
    "decoder.layers.{}.attn.out_proj.weight": "blk.{}.attn_output.weight",
    "decoder.layers.{}.attn.out_proj.bias": "blk.{}.attn_output.bias",
    "decoder.layers.{}.mlp_norm.weight": "blk.{}.ffn_norm.weight",
    "decoder.layers.{}.mlp.in_proj.weight": Key(("blk.{}.ffn_gate.weight", "blk.{}.ffn_up.weight"),
                                                split=gate_up_rows),
    "decoder.layers.{}.mlp.out_proj.weight": "blk.{}.ffn_down.weight",
    "decoder.final_norm.weight": "output_norm.weight",
    "lm_head.proj.weight": "output.weight",
}

# `llama.<key>` metadata -> our config field.
GGUF_LLAMA_CONFIG = {"block_count": "num_layers", "embedding_length": "hidden_size",
                     "feed_forward_length": "intermediate_size", "attention.head_count": "num_heads",
                     "attention.head_count_kv": "num_kv_heads", "context_length": "max_position_embeddings",
                     "rope.freq_base": "rope_theta", "attention.layer_norm_rms_epsilon": "layer_norm_eps",
                     "vocab_size": "vocab_size"}

# llama.cpp's pre-tokenizer names -> how text is split before byte-level BPE. "smollm" (and StarCoder's) isolate
# every digit first, then split as GPT-2 does (llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM; the Digits + ByteLevel
# pre-tokenizer of SmolLM2's own tokenizer.json).
GPT2_PRE_TOKENIZERS = ("gpt2", "default")
DIGIT_PRE_TOKENIZERS = ("smollm", "starcoder", "refact")
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


def unpermute_rotary(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation: within each head, interleaved rotary pairs (2i, 2i+1) back to
    Hugging Face's halves (i, i + D/2). w: (num_heads * D, ...) weights or (num_heads * D,) biases."""
    rows = w.shape[0]
    return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute_rotary(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp's permutation (Hugging Face halves -> interleaved pairs), the inverse of `unpermute_rotary`."""
    rows = w.shape[0]
    return w.reshape(num_heads, 2, rows // num_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


@dataclass
class GGUFFile:
    """A GGUF file's metadata (plain Python values) and a way to read its tensors."""

    path: Path
    contents: GGUFContents

    @classmethod
    def open(cls, path: str | Path) -> GGUFFile:
        try:
            import gguf  # noqa: F401 - dequantisation needs it; say so before reading anything
        except ImportError:
            raise PlmkitError("reading GGUF files needs the gguf package (pip install gguf)") from None
        path = Path(path)
        if not path.is_file():
            raise PlmkitError(f"{path}: no such GGUF file")
        return cls(path, GGUFContents(path))

    @property
    def metadata(self) -> dict[str, Any]:
        return self.contents.metadata

    @property
    def tensor_names(self) -> list[str]:
        return [t.name for t in self.contents.tensors]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor, dequantised to float32, shaped as PyTorch weights are ((out, in) for a matrix)."""
        return {t.name: torch.from_numpy(self.contents.dequantized(t)) for t in self.contents.tensors}


def config_from_gguf(f: GGUFFile, **overrides: Any) -> ModelConfig:
    from plmkit.models.decoder import DECODER_STYLES

    arch = f.get("general.architecture")
    if arch != "llama":
        raise PlmkitError(f"{f.path}: GGUF architecture {arch!r} is not supported (plmkit reads 'llama')")
    scaling = f.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise PlmkitError(f"{f.path}: llama.rope.scaling.type={scaling!r} is not supported")
    ours = {field: f.get(f"llama.{key}") for key, field in GGUF_LLAMA_CONFIG.items() if f.get(f"llama.{key}")
            is not None}
    if "vocab_size" not in ours:
        ours["vocab_size"] = len(f.get("tokenizer.ggml.tokens") or [])
    ours["rope_theta"] = float(ours.get("rope_theta", 10000.0))
    ours["layer_norm_eps"] = float(ours.get("layer_norm_eps", 1e-5))
    ours["tie_word_embeddings"] = "output.weight" not in f.tensor_names
    ours["bias"] = any(n.endswith("attn_q.bias") for n in f.tensor_names)
    for role in ("bos", "eos"):
        ours[f"{role}_token_id"] = f.get(f"tokenizer.ggml.{role}_token_id")
    ours["pad_token_id"] = f.get("tokenizer.ggml.padding_token_id")
    config = ModelConfig(**{**DECODER_STYLES["llama"], **ours, **overrides})
    rope_dims = f.get("llama.rope.dimension_count", config.head_dim)
    if rope_dims != config.head_dim:
        raise PlmkitError(f"{f.path}: rotary over {rope_dims} of {config.head_dim} head dimensions is not supported")
    return config


def load_gguf_model(path: str | Path | GGUFFile, **config_overrides: Any) -> Any:
    """A plmkit CausalLM with the (dequantised) weights of a llama.cpp GGUF file, in eval mode."""
    from plmkit.models.decoder import CausalLM

    f = path if isinstance(path, GGUFFile) else GGUFFile.open(path)
    config = config_from_gguf(f, **config_overrides)
    state = f.tensors()
    for i in range(config.num_layers):
        for part, heads in (("q", config.num_heads), ("k", config.kv_heads)):
            for kind in ("weight", "bias"):
                name = f"blk.{i}.attn_{part}.{kind}"
                if name in state:
                    state[name] = unpermute_rotary(state[name], heads)
    model = CausalLM(config, init=False)  # every weight comes from the file
    load_into(model, state, expand(GGUF_LLAMA_KEYS, config.num_layers), str(f.path))
    model.eval()
    return model


def load_gguf_tokenizer(path: str | Path | GGUFFile) -> Any:
    """The byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.model == "gpt2"`), with its special
    tokens and, for instruct models, its chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    from plmkit.data.tokenizer import BPETokenizer

    f = path if isinstance(path, GGUFFile) else GGUFFile.open(path)
    kind = f.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise PlmkitError(f"{f.path}: tokenizer.ggml.model={kind!r} is not supported (plmkit reads byte-level BPE, "
                          "'gpt2')")
    pre = f.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in DIGIT_PRE_TOKENIZERS:
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in GPT2_PRE_TOKENIZERS:
        pre_tokenizer = byte_level
    else:
        raise PlmkitError(f"{f.path}: pre-tokenizer {pre!r} is not supported; choose from: "
                          f"{', '.join(GPT2_PRE_TOKENIZERS + DIGIT_PRE_TOKENIZERS)}")
    tokens: list[str] = list(f.get("tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in f.get("tokenizer.ggml.merges") or []]
    backend = Tokenizer(BPE({t: i for i, t in enumerate(tokens)}, merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, ...) stay whole and are special; user-defined ones stay whole.
    types = list(f.get("tokenizer.ggml.token_type") or [])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, types, strict=False) if kind == TOKEN_CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(tokens, types, strict=False) if kind == TOKEN_USER_DEFINED])
    if f.get("tokenizer.ggml.add_bos_token") and f.get("tokenizer.ggml.bos_token_id") is not None:
        from tokenizers import processors

        bos = tokens[f.get("tokenizer.ggml.bos_token_id")]
        backend.post_processor = processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1",
                                                               special_tokens=[(bos, tokens.index(bos))])
    specials = {role: tokens[i] for role, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                                                  ("pad_token", "padding"))
                if (i := f.get(f"tokenizer.ggml.{key}_token_id")) is not None and 0 <= i < len(tokens)}
    tokenizer = BPETokenizer(backend, special_tokens=specials,
                             model_max_length=int(f.get("llama.context_length") or 1024))
    tokenizer.chat_template = f.get("tokenizer.chat_template")
    return tokenizer


def load_gguf(path: str | Path, **config_overrides: Any) -> tuple[Any, Any]:
    """(CausalLM, BPETokenizer) from one GGUF file, read once."""
    f = GGUFFile.open(path)
    return load_gguf_model(f, **config_overrides), load_gguf_tokenizer(f)
