"""Hugging Face GPT-2 (`GPT2LMHeadModel`) and Llama (`LlamaForCausalLM`) <-> plmkit `CausalLM`.

Each format is data: a config name map, a key map (see `plmkit.interop.keymap`) and the keys that carry nothing of
their own. GPT-2 stores its projections as Conv1D, (in, out), so they are transposed; its Q/K/V are already one
fused `c_attn`. Llama's separate q/k/v and gate/up projections are fused on import and split on export. Llama's
rotary layout ("rotate_half") is plmkit's, so its Q/K weights are copied as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plmkit.config import _HF_ACT, _HF_IGNORED, _OURS_TO_HF_ACT, ModelConfig, read_json
from plmkit.errors import PlmkitError
from plmkit.interop.checkpoint import read_hf_config_dict, read_state_dict, write_model_dir
from plmkit.interop.hub import resolve_model_dir
from plmkit.interop.keymap import Key, expand, export, gate_up_rows, load_into, qkv_rows, transpose

log = logging.getLogger(__name__)

CHAT_TEMPLATE = "chat_template.jinja"

GPT2_KEYS: dict[str, Key | str] = {
    "decoder.embed.token.weight": "wte.weight",
    "decoder.embed.position.weight": "wpe.weight",
    "decoder.layers.{}.attn_norm.weight": "h.{}.ln_1.weight",
    "decoder.layers.{}.attn_norm.bias": "h.{}.ln_1.bias",
    "decoder.layers.{}.attn.qkv_proj.weight": Key("h.{}.attn.c_attn.weight", load=transpose, save=transpose),
    "decoder.layers.{}.attn.qkv_proj.bias": "h.{}.attn.c_attn.bias",
    "decoder.layers.{}.attn.out_proj.weight": Key("h.{}.attn.c_proj.weight", load=transpose, save=transpose),
    "decoder.layers.{}.attn.out_proj.bias": "h.{}.attn.c_proj.bias",
    "decoder.layers.{}.mlp_norm.weight": "h.{}.ln_2.weight",
    "decoder.layers.{}.mlp_norm.bias": "h.{}.ln_2.bias",
    "decoder.layers.{}.mlp.in_proj.weight": Key("h.{}.mlp.c_fc.weight", load=transpose, save=transpose),
    "decoder.layers.{}.mlp.in_proj.bias": "h.{}.mlp.c_fc.bias",
    "decoder.layers.{}.mlp.out_proj.weight": Key("h.{}.mlp.c_proj.weight", load=transpose, save=transpose),
    "decoder.layers.{}.mlp.out_proj.bias": "h.{}.mlp.c_proj.bias",
    "decoder.final_norm.weight": "ln_f.weight",
    "decoder.final_norm.bias": "ln_f.bias",
}

_ATTN = "layers.{}.self_attn."
LLAMA_KEYS: dict[str, Key | str] = {
    "decoder.embed.token.weight": "embed_tokens.weight",
    "decoder.layers.{}.attn_norm.weight": "layers.{}.input_layernorm.weight",
    "decoder.layers.{}.attn.qkv_proj.weight": Key(tuple(f"{_ATTN}{p}_proj.weight" for p in "qkv"), split=qkv_rows),
    "decoder.layers.{}.attn.qkv_proj.bias": Key(tuple(f"{_ATTN}{p}_proj.bias" for p in "qkv"), split=qkv_rows),
    "decoder.layers.{}.attn.out_proj.weight": f"{_ATTN}o_proj.weight",
    "decoder.layers.{}.attn.out_proj.bias": f"{_ATTN}o_proj.bias",
    "decoder.layers.{}.mlp_norm.weight": "layers.{}.post_attention_layernorm.weight",
    "decoder.layers.{}.mlp.in_proj.weight": Key(("layers.{}.mlp.gate_proj.weight", "layers.{}.mlp.up_proj.weight"),
                                                split=gate_up_rows),
    "decoder.layers.{}.mlp.in_proj.bias": Key(("layers.{}.mlp.gate_proj.bias", "layers.{}.mlp.up_proj.bias"),
                                              split=gate_up_rows),
    "decoder.layers.{}.mlp.out_proj.weight": "layers.{}.mlp.down_proj.weight",
    "decoder.layers.{}.mlp.out_proj.bias": "layers.{}.mlp.down_proj.bias",
    "decoder.final_norm.weight": "norm.weight",
}
# The output matrix carries no base-model prefix.
HEAD_KEYS: dict[str, Key | str] = {"lm_head.proj.weight": "lm_head.weight"}

# Config keys of each format mapped one to one onto ours.
GPT2_CONFIG = {"vocab_size": "vocab_size", "n_embd": "hidden_size", "n_layer": "num_layers", "n_head": "num_heads",
               "n_positions": "max_position_embeddings", "layer_norm_epsilon": "layer_norm_eps",
               "resid_pdrop": "hidden_dropout", "attn_pdrop": "attention_dropout",
               "initializer_range": "initializer_range", "bos_token_id": "bos_token_id",
               "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
               "tie_word_embeddings": "tie_word_embeddings"}
LLAMA_CONFIG = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
                "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
                "num_key_value_heads": "num_kv_heads", "max_position_embeddings": "max_position_embeddings",
                "rms_norm_eps": "layer_norm_eps", "attention_dropout": "attention_dropout",
                "initializer_range": "initializer_range", "bos_token_id": "bos_token_id",
                "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
                "tie_word_embeddings": "tie_word_embeddings"}
# Keys whose only supported value is the one given (None: absent is fine too).
GPT2_REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                 "reorder_and_upcast_attn": False, "add_cross_attention": False}
LLAMA_REQUIRED = {"pretraining_tp": 1, "rope_scaling": None, "rope_interleaved": False}
# Keys that change nothing in the network: sequence-summary heads, GPT-2's context size, generation settings.
IGNORED = _HF_IGNORED | {"summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
                         "summary_first_dropout", "n_ctx", "embd_pdrop", "n_inner", "activation_function",
                         "rope_parameters", "rope_theta", "attention_bias", "mlp_bias", "head_dim",
                         "unk_token_id", "max_length", "transformers_version", "is_llama_config",
                         "transformers.js_config"}


def _from_hf(d: dict[str, Any], names: dict[str, str], required: dict[str, Any], source: str) -> dict[str, Any]:
    for key, ok in required.items():
        if d.get(key) is not None and d[key] != ok:
            raise PlmkitError(f"{source}: {key}={d[key]!r} is not supported (plmkit supports {ok!r})")
    unknown = sorted(set(d) - set(names) - set(required) - IGNORED)
    if unknown:
        raise PlmkitError(f"{source}: unknown key {unknown[0]!r}" + (f" (and {unknown[1:]})" if unknown[1:] else ""))
    return {ours: d[theirs] for theirs, ours in names.items() if d.get(theirs) is not None}


def _activation(act: str, source: str) -> str:
    if act not in _HF_ACT:
        raise PlmkitError(f"{source}: activation {act!r} is not supported; choose from: {', '.join(_HF_ACT)}")
    return _HF_ACT[act]


def gpt2_config_from_hf(d: dict[str, Any], source: str = "config.json") -> ModelConfig:
    from plmkit.models.decoder import DECODER_STYLES

    ours = _from_hf(d, GPT2_CONFIG, GPT2_REQUIRED, source)
    n_embd = ours.get("hidden_size", 768)
    ours["intermediate_size"] = d.get("n_inner") or 4 * n_embd
    ours["activation"] = _activation(d.get("activation_function", "gelu_new"), source)
    if d.get("embd_pdrop", ours.get("hidden_dropout", 0.1)) != ours.get("hidden_dropout", 0.1):
        log.info("%s: embd_pdrop %s differs from resid_pdrop; plmkit uses one dropout (%s) for both", source,
                 d["embd_pdrop"], ours.get("hidden_dropout", 0.1))
    defaults = {"vocab_size": 50257, "hidden_size": 768, "num_layers": 12, "num_heads": 12,
                "max_position_embeddings": 1024, "hidden_dropout": 0.1, "attention_dropout": 0.1}
    return ModelConfig(**{**DECODER_STYLES["gpt2"], **defaults, **ours})


def gpt2_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    d = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    d.update({theirs: getattr(c, ours) for theirs, ours in GPT2_CONFIG.items()})
    d.update(n_inner=c.intermediate_size, activation_function=_OURS_TO_HF_ACT[c.activation],
             embd_pdrop=c.hidden_dropout, n_ctx=c.max_position_embeddings, **GPT2_REQUIRED)
    return d


def llama_config_from_hf(d: dict[str, Any], source: str = "config.json") -> ModelConfig:
    from plmkit.models.decoder import DECODER_STYLES

    ours = _from_hf(d, LLAMA_CONFIG, LLAMA_REQUIRED, source)
    ours["activation"] = _activation(d.get("hidden_act", "silu"), source)
    rope = d.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise PlmkitError(f"{source}: rope_type {rope['rope_type']!r} is not supported (plmkit supports 'default')")
    ours["rope_theta"] = float(rope.get("rope_theta", d.get("rope_theta", 10000.0)))
    attention_bias, mlp_bias = bool(d.get("attention_bias", False)), bool(d.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        raise PlmkitError(f"{source}: attention_bias={attention_bias} with mlp_bias={mlp_bias} is not supported "
                          "(plmkit has one `bias` for both)")
    ours["bias"] = attention_bias
    hidden, heads = ours.get("hidden_size", 4096), ours.get("num_heads", 32)
    if ours.get("num_kv_heads") == heads:
        ours["num_kv_heads"] = None  # plain multi-head attention, as our configs write it
    if d.get("head_dim") not in (None, hidden // heads):
        raise PlmkitError(f"{source}: head_dim={d['head_dim']} is not supported (plmkit has head_dim = "
                          f"hidden_size / num_attention_heads = {hidden // heads})")
    defaults = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_layers": 32,
                "num_heads": 32, "max_position_embeddings": 2048, "tie_word_embeddings": False}
    return ModelConfig(**{**DECODER_STYLES["llama"], **defaults, **ours})


def llama_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    d = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    d.update({theirs: getattr(c, ours) for theirs, ours in LLAMA_CONFIG.items()})
    d.update(num_key_value_heads=c.kv_heads, hidden_act=_OURS_TO_HF_ACT[c.activation], head_dim=c.head_dim,
             rope_parameters={"rope_theta": c.rope_theta, "rope_type": "default"}, attention_bias=c.bias,
             mlp_bias=c.bias, pretraining_tp=1)
    return d


@dataclass(frozen=True)
class DecoderFormat:
    """One Hugging Face decoder architecture, as data."""

    model_type: str
    architecture: str
    base_prefix: str  # of the backbone's keys in the LM checkpoint
    keys: dict[str, Key | str]
    redundant: tuple[str, ...]  # regexes of keys with nothing of their own
    config_from_hf: Callable[[dict[str, Any], str], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    fields: dict[str, Any]  # the config values this format can hold

    def unsupported(self, c: ModelConfig) -> list[str]:
        """Our config fields this format cannot express, as `field=value`."""
        wrong = [f"{k}={getattr(c, k)!r}" for k, v in self.fields.items() if getattr(c, k) != v]
        if self.model_type == "gpt2" and c.kv_heads != c.num_heads:
            wrong.append(f"num_kv_heads={c.num_kv_heads}")
        if c.activation not in _OURS_TO_HF_ACT:
            wrong.append(f"activation={c.activation!r}")
        return wrong

    def key_map(self, c: ModelConfig, prefix: str | None = None) -> dict[str, Key]:
        prefix = self.base_prefix if prefix is None else prefix
        return {**expand(self.keys, c.num_layers, prefix), **expand(HEAD_KEYS, c.num_layers)}


FORMATS = {
    "gpt2": DecoderFormat("gpt2", "GPT2LMHeadModel", "transformer.", GPT2_KEYS,
                          (r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias",),
                          gpt2_config_from_hf, gpt2_config_to_hf,
                          dict(position_embedding="learned", norm="layernorm", mlp="standard", bias=True)),
    "llama": DecoderFormat("llama", "LlamaForCausalLM", "model.", LLAMA_KEYS,
                           (r"(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq",),
                           llama_config_from_hf, llama_config_to_hf,
                           dict(position_embedding="rotary", norm="rmsnorm", mlp="gated")),
}


def format_for(config: ModelConfig, name: str | None = None) -> DecoderFormat:
    """The named format, or the one that can hold this config."""
    candidates = [FORMATS[name]] if name in FORMATS else list(FORMATS.values())
    if name is not None and name not in FORMATS:
        raise PlmkitError(f"unknown Hugging Face decoder format {name!r}; choose from: {', '.join(FORMATS)}")
    for fmt in candidates:
        if not fmt.unsupported(config):
            return fmt
    reasons = "; ".join(f"{f.model_type}: {', '.join(f.unsupported(config))}" for f in candidates)
    raise PlmkitError(f"config: no Hugging Face format holds this decoder ({reasons})")


def read_decoder_config(model_dir: Path) -> tuple[ModelConfig, DecoderFormat]:
    d = read_hf_config_dict(model_dir)
    source = str(model_dir / "config.json")
    model_type = d.get("model_type")
    if model_type not in FORMATS:
        raise PlmkitError(f"{source}: model_type {model_type!r} is not a supported decoder; choose from: "
                          f"{', '.join(FORMATS)}")
    fmt = FORMATS[model_type]
    return fmt.config_from_hf(d, source), fmt


def convert_from_hf(model: Any, state: dict[str, Any], fmt: DecoderFormat, source: str = "checkpoint") -> None:
    """Copy a Hugging Face state dict (of the LM or of the bare base model) into a plmkit CausalLM in place."""
    prefix = fmt.base_prefix if any(k.startswith(fmt.base_prefix) for k in state) else ""
    # A tied output matrix is the embedding; a saved copy of it is redundant.
    redundant = fmt.redundant + (("lm_head.weight",) if model.config.tie_word_embeddings else ())
    load_into(model, state, fmt.key_map(model.config, prefix), source, redundant)


def convert_to_hf(model: Any, fmt: DecoderFormat | None = None) -> dict[str, Any]:
    fmt = fmt or format_for(model.config)
    return export(model, fmt.key_map(model.config))


def load_pretrained(name_or_path: str | Path, **config_overrides: Any) -> Any:
    """Build a plmkit CausalLM from a Hugging Face GPT-2 or Llama directory (or hub id) and load its weights."""
    from plmkit.models.decoder import CausalLM

    model_dir = resolve_model_dir(name_or_path)
    config, fmt = read_decoder_config(model_dir)
    if config_overrides:
        config = config.replace(**config_overrides)
    model = CausalLM(config, init=False)  # every weight comes from the checkpoint
    state, source = read_state_dict(model_dir)
    convert_from_hf(model, state, fmt, source)
    model.eval()
    return model


def save_pretrained(model: Any, save_directory: str | Path, tokenizer: Any = None,
                    hf_format: str | None = None) -> Path:
    """Write `config.json` and `model.safetensors` (atomically) that `transformers` loads with nothing missing."""
    fmt = format_for(model.config, hf_format)
    out = write_model_dir(Path(save_directory), fmt.config_to_hf(model.config), convert_to_hf(model, fmt),
                          tokenizer=tokenizer)
    template = getattr(tokenizer, "chat_template", None)
    if template:  # where transformers 5 keeps it, and in tokenizer_config.json for older readers
        (out / CHAT_TEMPLATE).write_text(template, encoding="utf-8")
        config_path = out / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config_path.write_text(json.dumps({**config, "chat_template": template}, indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
    return out


def read_chat_template(model_dir: Path) -> str | None:
    """A directory's chat template: chat_template.jinja, else tokenizer_config.json's `chat_template` (a string;
    the older list of named templates gives its "default")."""
    if (model_dir / CHAT_TEMPLATE).is_file():
        return (model_dir / CHAT_TEMPLATE).read_text(encoding="utf-8")
    config_path = model_dir / "tokenizer_config.json"
    template = read_json(config_path).get("chat_template") if config_path.is_file() else None
    if isinstance(template, list):
        template = {t.get("name"): t.get("template") for t in template}.get("default")
    return template
