"""Hugging Face T5 (`T5ForConditionalGeneration`) and BART (`BartForConditionalGeneration`) <-> plmkit `Seq2SeqLM`.

Each format is data: a config name map, key maps of the encoder layers, the decoder layers and the rest (see
`plmkit.interop.keymap`), and the keys that carry nothing of their own (the stacks' copies of the shared embedding,
a tied output matrix, T5's unused cross-attention position bias). Separate Q/K/V are fused on import and split on
export; T5's gated feed-forward fuses wi_0 (gate) and wi_1 (up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmkit.config import _HF_ACT, _HF_IGNORED, _OURS_TO_HF_ACT, ModelConfig
from plmkit.errors import PlmkitError
from plmkit.interop.checkpoint import read_hf_config_dict, read_state_dict, write_model_dir
from plmkit.interop.hub import resolve_model_dir
from plmkit.interop.keymap import Key, expand, export, gate_up_rows, load_into, qkv_rows

log = logging.getLogger(__name__)


def kv_rows(config: ModelConfig) -> list[int]:
    """Rows of K and V in a fused cross-attention projection."""
    return [config.hidden_size] * 2


def flat(t: torch.Tensor) -> torch.Tensor:
    """BART's (1, V) logits bias -> our (V,)."""
    return t.reshape(-1)


def row(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1)


# ------------------------------------------------------------------ T5
_T5_SELF = "block.{}.layer.0.SelfAttention."
_T5_CROSS = "block.{}.layer.1.EncDecAttention."
T5_ENCODER_LAYER: dict[str, Key | str] = {
    "attn_norm.weight": "block.{}.layer.0.layer_norm.weight",
    "attn.qkv_proj.weight": Key(tuple(f"{_T5_SELF}{p}.weight" for p in "qkv"), split=qkv_rows),
    "attn.out_proj.weight": f"{_T5_SELF}o.weight",
    "mlp_norm.weight": "block.{}.layer.1.layer_norm.weight",
    "mlp.in_proj.weight": "block.{}.layer.1.DenseReluDense.wi.weight",
    "mlp.out_proj.weight": "block.{}.layer.1.DenseReluDense.wo.weight",
}
T5_DECODER_LAYER: dict[str, Key | str] = {
    "attn_norm.weight": "block.{}.layer.0.layer_norm.weight",
    "attn.qkv_proj.weight": Key(tuple(f"{_T5_SELF}{p}.weight" for p in "qkv"), split=qkv_rows),
    "attn.out_proj.weight": f"{_T5_SELF}o.weight",
    "cross_norm.weight": "block.{}.layer.1.layer_norm.weight",
    "cross_attn.q_proj.weight": f"{_T5_CROSS}q.weight",
    "cross_attn.kv_proj.weight": Key((f"{_T5_CROSS}k.weight", f"{_T5_CROSS}v.weight"), split=kv_rows),
    "cross_attn.out_proj.weight": f"{_T5_CROSS}o.weight",
    "mlp_norm.weight": "block.{}.layer.2.layer_norm.weight",
    "mlp.in_proj.weight": "block.{}.layer.2.DenseReluDense.wi.weight",
    "mlp.out_proj.weight": "block.{}.layer.2.DenseReluDense.wo.weight",
}
T5_REST: dict[str, Key | str] = {
    "model.shared.weight": "shared.weight",
    "model.encoder.position_bias.embedding.weight": f"encoder.{_T5_SELF.format(0)}relative_attention_bias.weight",
    "model.decoder.position_bias.embedding.weight": f"decoder.{_T5_SELF.format(0)}relative_attention_bias.weight",
    "model.encoder.final_norm.weight": "encoder.final_layer_norm.weight",
    "model.decoder.final_norm.weight": "decoder.final_layer_norm.weight",
    "lm_head.proj.weight": "lm_head.weight",
}
T5_CONFIG = {"vocab_size": "vocab_size", "d_model": "hidden_size", "d_ff": "intermediate_size",
             "num_layers": "num_layers", "num_decoder_layers": "num_decoder_layers", "num_heads": "num_heads",
             "relative_attention_num_buckets": "relative_attention_num_buckets",
             "relative_attention_max_distance": "relative_attention_max_distance",
             "dropout_rate": "hidden_dropout", "layer_norm_epsilon": "layer_norm_eps",
             "pad_token_id": "pad_token_id", "eos_token_id": "eos_token_id",
             "decoder_start_token_id": "decoder_start_token_id"}
T5_IGNORED = {"d_kv", "feed_forward_proj", "dense_act_fn", "is_gated_act", "initializer_factor", "n_positions",
              "scale_decoder_outputs", "is_encoder_decoder", "is_decoder", "classifier_dropout", "max_length",
              "tie_word_embeddings"}


def _gated(keys: dict[str, Key | str], mlp_prefix: str) -> dict[str, Key | str]:
    """T5 v1.1's gated-GELU: wi_0 (gate) and wi_1 (up) instead of wi."""
    out = dict(keys)
    out["mlp.in_proj.weight"] = Key((f"{mlp_prefix}.wi_0.weight", f"{mlp_prefix}.wi_1.weight"), split=gate_up_rows)
    return out


def t5_config_from_hf(d: dict[str, Any], source: str = "config.json") -> ModelConfig:
    from plmkit.models.encoder_decoder import SEQ2SEQ_STYLES

    ours = _from_hf(d, T5_CONFIG, T5_IGNORED, source)
    ours["attention_dropout"] = ours.get("hidden_dropout", 0.1)
    proj = d.get("feed_forward_proj", "relu")
    gated, act = proj.startswith("gated-"), proj.removeprefix("gated-")
    act = "gelu_new" if proj == "gated-gelu" else act
    if act not in _HF_ACT:
        raise PlmkitError(f"{source}: feed_forward_proj {proj!r} is not supported")
    ours.update(mlp="gated" if gated else "standard", activation=_HF_ACT[act])
    hidden, heads = ours.get("hidden_size", 512), ours.get("num_heads", 8)
    if d.get("d_kv", hidden // heads) != hidden // heads:
        raise PlmkitError(f"{source}: d_kv={d['d_kv']} is not supported (plmkit has d_kv = d_model / num_heads = "
                          f"{hidden // heads})")
    tied = d.get("tie_word_embeddings", True) is not False
    ours.update(tie_word_embeddings=tied, scale_tied_output=bool(d.get("scale_decoder_outputs", tied)))
    ours.setdefault("decoder_start_token_id", ours.get("pad_token_id", 0))
    defaults = {"vocab_size": 32128, "hidden_size": 512, "intermediate_size": 2048, "num_layers": 6, "num_heads": 8}
    return ModelConfig(**{**SEQ2SEQ_STYLES["t5"], **defaults, **ours})


def t5_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    d: dict[str, Any] = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}
    d.update({theirs: getattr(c, ours) for theirs, ours in T5_CONFIG.items()})
    act = _OURS_TO_HF_ACT[c.activation]
    proj = ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if c.mlp == "gated" else act
    d.update(num_decoder_layers=c.decoder_layers, d_kv=c.head_dim, feed_forward_proj=proj, is_encoder_decoder=True,
             tie_word_embeddings=c.tie_word_embeddings, scale_decoder_outputs=c.scale_tied_output)
    return d


# ------------------------------------------------------------------ BART
def _bart_attn(ours: str, theirs: str) -> dict[str, Key | str]:
    out: dict[str, Key | str] = {}
    for p in ("weight", "bias"):
        if ours == "attn":
            out[f"attn.qkv_proj.{p}"] = Key(tuple(f"layers.{{}}.{theirs}.{q}_proj.{p}" for q in "qkv"), split=qkv_rows)
        else:
            out[f"{ours}.q_proj.{p}"] = f"layers.{{}}.{theirs}.q_proj.{p}"
            out[f"{ours}.kv_proj.{p}"] = Key(tuple(f"layers.{{}}.{theirs}.{q}_proj.{p}" for q in "kv"), split=kv_rows)
        out[f"{ours}.out_proj.{p}"] = f"layers.{{}}.{theirs}.out_proj.{p}"
    return out


def _bart_norms_mlp(names: dict[str, str]) -> dict[str, Key | str]:
    out: dict[str, Key | str] = {}
    for ours, theirs in names.items():
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = f"layers.{{}}.{theirs}.{p}"
    return out


BART_ENCODER_LAYER = {**_bart_attn("attn", "self_attn"),
                      **_bart_norms_mlp({"attn_norm": "self_attn_layer_norm", "mlp.in_proj": "fc1",
                                         "mlp.out_proj": "fc2", "mlp_norm": "final_layer_norm"})}
BART_DECODER_LAYER = {**BART_ENCODER_LAYER, **_bart_attn("cross_attn", "encoder_attn"),
                      **_bart_norms_mlp({"cross_norm": "encoder_attn_layer_norm"})}
BART_REST: dict[str, Key | str] = {
    "model.shared.weight": "model.shared.weight",
    **{f"model.{s}.position.weight": f"model.{s}.embed_positions.weight" for s in ("encoder", "decoder")},
    **{f"model.{s}.embed_norm.{p}": f"model.{s}.layernorm_embedding.{p}" for s in ("encoder", "decoder")
       for p in ("weight", "bias")},
    "logits_bias": Key("final_logits_bias", load=flat, save=row),
    "lm_head.proj.weight": "lm_head.weight",
}
BART_CONFIG = {"vocab_size": "vocab_size", "d_model": "hidden_size", "encoder_layers": "num_layers",
               "decoder_layers": "num_decoder_layers", "encoder_attention_heads": "num_heads",
               "encoder_ffn_dim": "intermediate_size", "max_position_embeddings": "max_position_embeddings",
               "dropout": "hidden_dropout", "attention_dropout": "attention_dropout", "init_std": "initializer_range",
               "scale_embedding": "scale_embedding", "pad_token_id": "pad_token_id", "bos_token_id": "bos_token_id",
               "eos_token_id": "eos_token_id", "decoder_start_token_id": "decoder_start_token_id",
               "tie_word_embeddings": "tie_word_embeddings"}
# Keys of older BART configs whose only supported value is BART's own (absent is fine too).
BART_REQUIRED = {"add_bias_logits": False, "add_final_layer_norm": False, "normalize_before": False,
                 "normalize_embedding": True, "static_position_embeddings": False, "extra_pos_embeddings": 2}
BART_IGNORED = {"decoder_attention_heads", "decoder_ffn_dim", "activation_function", "activation_dropout",
                "encoder_layerdrop", "decoder_layerdrop", "classifier_dropout", "is_encoder_decoder", "is_decoder",
                "forced_eos_token_id", "forced_bos_token_id", "num_hidden_layers", "classif_dropout",
                "gradient_checkpointing", "max_length", "min_length", "num_beams", "no_repeat_ngram_size",
                "early_stopping", "length_penalty"} | set(BART_REQUIRED)


def bart_config_from_hf(d: dict[str, Any], source: str = "config.json") -> ModelConfig:
    from plmkit.models.encoder_decoder import SEQ2SEQ_STYLES

    ours = _from_hf(d, BART_CONFIG, BART_IGNORED, source)
    for theirs, ours_key in (("decoder_attention_heads", "num_heads"), ("decoder_ffn_dim", "intermediate_size")):
        if d.get(theirs) is not None and d[theirs] != ours.get(ours_key, d[theirs]):
            raise PlmkitError(f"{source}: {theirs}={d[theirs]} differs from the encoder's; plmkit has one {ours_key}")
    for key, ok in BART_REQUIRED.items():
        if d.get(key) is not None and d[key] != ok:
            raise PlmkitError(f"{source}: {key}={d[key]!r} is not supported (plmkit supports BART's {ok!r})")
    act = d.get("activation_function", "gelu")
    if act not in _HF_ACT:
        raise PlmkitError(f"{source}: activation_function {act!r} is not supported")
    ours["activation"] = _HF_ACT[act]
    if d.get("activation_dropout"):
        log.info("%s: activation_dropout %s is not modelled (it changes training only)", source,
                 d["activation_dropout"])
    defaults = {"vocab_size": 50265, "hidden_size": 1024, "num_layers": 12, "num_heads": 16,
                "intermediate_size": 4096, "max_position_embeddings": 1024, "hidden_dropout": 0.1,
                "attention_dropout": 0.0}
    return ModelConfig(**{**SEQ2SEQ_STYLES["bart"], **defaults, **ours})


def bart_config_to_hf(c: ModelConfig) -> dict[str, Any]:
    d: dict[str, Any] = {"architectures": ["BartForConditionalGeneration"], "model_type": "bart"}
    d.update({theirs: getattr(c, ours) for theirs, ours in BART_CONFIG.items()})
    d.update(decoder_layers=c.decoder_layers, decoder_attention_heads=c.num_heads,
             decoder_ffn_dim=c.intermediate_size, activation_function=_OURS_TO_HF_ACT[c.activation],
             is_encoder_decoder=True, forced_eos_token_id=None)
    return d


def _from_hf(d: dict[str, Any], names: dict[str, str], ignored: set[str], source: str) -> dict[str, Any]:
    unknown = sorted(set(d) - set(names) - ignored - _HF_IGNORED)
    if unknown:
        raise PlmkitError(f"{source}: unknown key {unknown[0]!r}" + (f" (and {unknown[1:]})" if unknown[1:] else ""))
    return {ours: d[theirs] for theirs, ours in names.items() if d.get(theirs) is not None}


@dataclass(frozen=True)
class Seq2SeqFormat:
    """One Hugging Face encoder-decoder architecture, as data."""

    model_type: str
    architecture: str
    base_prefix: str  # of the stacks' keys in the LM checkpoint ("model." for BART)
    encoder_layer: dict[str, Key | str]
    decoder_layer: dict[str, Key | str]
    rest: dict[str, Key | str]  # full names of both sides
    redundant: tuple[str, ...]
    config_from_hf: Callable[[dict[str, Any], str], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]
    fields: dict[str, Any]  # the config values this format can hold

    def unsupported(self, c: ModelConfig) -> list[str]:
        wrong = [f"{k}={getattr(c, k)!r}" for k, v in self.fields.items() if getattr(c, k) != v]
        if c.activation not in _OURS_TO_HF_ACT:
            wrong.append(f"activation={c.activation!r}")
        return wrong

    def key_map(self, c: ModelConfig) -> dict[str, Key]:
        enc, dec = self.encoder_layer, self.decoder_layer
        if self.model_type == "t5" and c.mlp == "gated":
            enc = _gated(enc, "block.{}.layer.1.DenseReluDense")
            dec = _gated(dec, "block.{}.layer.2.DenseReluDense")
        p = self.base_prefix
        return {**expand({f"model.encoder.layers.{{}}.{k}": v for k, v in enc.items()}, c.num_layers, f"{p}encoder."),
                **expand({f"model.decoder.layers.{{}}.{k}": v for k, v in dec.items()}, c.decoder_layers,
                         f"{p}decoder."),
                **expand(self.rest, 1)}


FORMATS = {
    "t5": Seq2SeqFormat("t5", "T5ForConditionalGeneration", "", T5_ENCODER_LAYER, T5_DECODER_LAYER, T5_REST,
                        (r"(encoder|decoder)\.embed_tokens\.weight",
                         r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight"),
                        t5_config_from_hf, t5_config_to_hf,
                        # transformers 5 always ties T5's output matrix (v1.1 is tied without output scaling).
                        dict(position_embedding="relative", norm="rmsnorm", norm_position="pre", bias=False,
                             tie_word_embeddings=True,
                             scale_attention=False, scale_embedding=False, embedding_norm=False, logits_bias=False,
                             position_offset=0)),
    "bart": Seq2SeqFormat("bart", "BartForConditionalGeneration", "model.", BART_ENCODER_LAYER, BART_DECODER_LAYER,
                          BART_REST,
                          (r"model\.(encoder|decoder)\.embed_tokens\.weight", r"model\.(encoder|decoder)\.version"),
                          bart_config_from_hf, bart_config_to_hf,
                          dict(position_embedding="learned", norm="layernorm", norm_position="post", bias=True,
                               scale_attention=True, embedding_norm=True, logits_bias=True, position_offset=2,
                               mlp="standard", scale_tied_output=False)),
}


def format_for(config: ModelConfig) -> Seq2SeqFormat:
    for fmt in FORMATS.values():
        if not fmt.unsupported(config):
            return fmt
    reasons = "; ".join(f"{f.model_type}: {', '.join(f.unsupported(config))}" for f in FORMATS.values())
    raise PlmkitError(f"config: no Hugging Face format holds this encoder-decoder ({reasons})")


def convert_from_hf(model: Any, state: dict[str, torch.Tensor], fmt: Seq2SeqFormat, source: str = "checkpoint") -> None:
    """Copy a Hugging Face state dict (of the LM, or of BartModel without the `model.` prefix) into a Seq2SeqLM."""
    if fmt.base_prefix and not any(k.startswith(fmt.base_prefix) for k in state):
        state = {(k if k in ("final_logits_bias", "lm_head.weight") else fmt.base_prefix + k): v
                 for k, v in state.items()}
    if fmt.model_type == "bart" and "final_logits_bias" not in state:  # transformers, too, starts it at zero
        state = {**state, "final_logits_bias": torch.zeros(1, model.config.vocab_size)}
    redundant = fmt.redundant + (("lm_head.weight",) if model.config.tie_word_embeddings else ())
    load_into(model, state, fmt.key_map(model.config), source, redundant)


def convert_to_hf(model: Any, fmt: Seq2SeqFormat | None = None) -> dict[str, torch.Tensor]:
    fmt = fmt or format_for(model.config)
    return export(model, fmt.key_map(model.config))


def read_seq2seq_config(model_dir: Path) -> tuple[ModelConfig, Seq2SeqFormat]:
    d = read_hf_config_dict(model_dir)
    source = str(model_dir / "config.json")
    if d.get("model_type") not in FORMATS:
        raise PlmkitError(f"{source}: model_type {d.get('model_type')!r} is not a supported encoder-decoder; "
                          f"choose from: {', '.join(FORMATS)}")
    fmt = FORMATS[d["model_type"]]
    return fmt.config_from_hf(d, source), fmt


def load_pretrained(name_or_path: str | Path, **config_overrides: Any) -> Any:
    """Build a plmkit Seq2SeqLM from a Hugging Face T5 or BART directory (or hub id) and load its weights."""
    from plmkit.models.encoder_decoder import Seq2SeqLM

    model_dir = resolve_model_dir(name_or_path)
    config, fmt = read_seq2seq_config(model_dir)
    if config_overrides:
        config = config.replace(**config_overrides)
    model = Seq2SeqLM(config, init=False)
    state, source = read_state_dict(model_dir)
    convert_from_hf(model, state, fmt, source)
    model.generation_defaults = read_generation_defaults(model_dir)
    model.eval()
    return model


# Generation settings a checkpoint may carry (generation_config.json, or config.json in older checkpoints) that
# `Seq2SeqLM.generate` uses as defaults, as `transformers` does through model.generation_config.
GENERATION_KEYS = ("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram_size", "min_length",
                   "forced_bos_token_id", "forced_eos_token_id", "max_length")


def read_generation_defaults(model_dir: Path) -> dict[str, Any]:
    from plmkit.config import read_json
    from plmkit.interop.checkpoint import read_hf_config_dict

    path = Path(model_dir) / "generation_config.json"
    d = read_json(path) if path.is_file() else read_hf_config_dict(Path(model_dir))
    return {k: d[k] for k in GENERATION_KEYS if d.get(k) is not None}


def save_pretrained(model: Any, save_directory: str | Path, tokenizer: Any = None) -> Path:
    """Write `config.json` and `model.safetensors` that `transformers` loads with nothing missing or unexpected."""
    fmt = format_for(model.config)
    return write_model_dir(Path(save_directory), fmt.config_to_hf(model.config), convert_to_hf(model, fmt),
                           tokenizer=tokenizer)
