"""Typed, self-validating model configuration.

`ModelConfig` is plain data: a BERT, a pre-LN encoder or a different size are configs, not classes
(as in UER-py's JSON configs and litgpt's `Config`). It round-trips through YAML/JSON and reads and
writes Hugging Face `config.json` through one declarative name map.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plmkit.errors import PlmkitError
from plmkit.layers.feedforward import ACTIVATIONS, MLPS
from plmkit.layers.norms import NORMS

NORM_POSITIONS = ("post", "pre")
POSITION_EMBEDDINGS = ("learned", "rotary", "relative")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclass
class ModelConfig:
    """Architecture of an encoder or decoder and its heads.

    `norm_position="post"` is BERT (LayerNorm after each residual add); `"pre"` normalises the input of
    each sub-layer and adds a final LayerNorm. `type_vocab_size=0` drops the segment embedding.

    A decoder (`CausalLM`) is `causal=True`, pre-LN and has no segment embedding; GPT-2 and Llama differ only in
    the rest: `position_embedding` ("learned" table or "rotary", RoPE with `rope_theta`), `norm` ("layernorm" or
    "rmsnorm", eps `layer_norm_eps`), `mlp` ("standard": W2 act(W1 x), or "gated": W2 (act(Wg x) * Wu x), SwiGLU
    with `activation="silu"`), `num_kv_heads` (grouped-query attention; None means `num_heads`), `bias` (biases in
    the attention and MLP projections and in LayerNorms) and `tie_word_embeddings`.

    An encoder-decoder (`Seq2SeqLM`, T5 and BART) is `is_encoder_decoder=True`: `num_layers` encoder layers and
    `num_decoder_layers` (None: as many) decoder layers with cross-attention, sharing one token embedding. T5 is
    `position_embedding="relative"` (bucketed position bias, `relative_attention_num_buckets` buckets up to
    `relative_attention_max_distance`) with `scale_attention=False` (no 1/sqrt(d), folded into its init) and
    `scale_tied_output=True` (decoder output times hidden_size**-0.5 before a tied head); BART is learned positions
    shifted by `position_offset=2`, `embedding_norm=True` (a LayerNorm after the embeddings), optionally
    `scale_embedding` (tokens times sqrt(hidden_size)), and `logits_bias` (a bias on the output logits). The decoder
    starts from `decoder_start_token_id`.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    activation: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    norm_position: str = "post"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    causal: bool = False
    position_embedding: str = "learned"
    rope_theta: float = 10000.0
    norm: str = "layernorm"
    mlp: str = "standard"
    num_kv_heads: int | None = None
    bias: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    is_encoder_decoder: bool = False
    num_decoder_layers: int | None = None
    decoder_start_token_id: int | None = None
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    scale_attention: bool = True
    scale_embedding: bool = False
    scale_tied_output: bool = False
    embedding_norm: bool = False
    position_offset: int = 0
    logits_bias: bool = False
    # Token classification from an uncased tokenizer: token type 1 marks words that start with a capital letter
    # (`task.case_token_types`, tasks/token_classification.py). Saved in config.json only when true.
    case_token_types: bool = False
    head_dim: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "num_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise PlmkitError(f"config: {name} must be a positive integer, got {value!r}")
        for name in ("relative_attention_num_buckets", "relative_attention_max_distance"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise PlmkitError(f"config: {name} must be a positive integer, got {value!r}")
        if self.num_decoder_layers is not None and (not isinstance(self.num_decoder_layers, int)
                                                    or isinstance(self.num_decoder_layers, bool)
                                                    or self.num_decoder_layers <= 0):
            raise PlmkitError(f"config: num_decoder_layers must be a positive integer, got {self.num_decoder_layers!r}")
        if not isinstance(self.position_offset, int) or self.position_offset < 0:
            raise PlmkitError(f"config: position_offset must be an integer >= 0, got {self.position_offset!r}")
        if self.type_vocab_size < 0:
            raise PlmkitError(f"config: type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.hidden_size % self.num_heads != 0:
            raise PlmkitError(f"config: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                              f"({self.num_heads})")
        self.head_dim = self.hidden_size // self.num_heads
        if self.activation not in ACTIVATIONS:
            raise PlmkitError(f"config: unknown activation {self.activation!r}; choose from: {', '.join(ACTIVATIONS)}")
        if self.norm_position not in NORM_POSITIONS:
            raise PlmkitError(f"config: unknown norm_position {self.norm_position!r}; choose from: pre, post")
        for name, choices in (("position_embedding", POSITION_EMBEDDINGS), ("norm", tuple(NORMS)),
                              ("mlp", tuple(MLPS))):
            if getattr(self, name) not in choices:
                raise PlmkitError(f"config: unknown {name} {getattr(self, name)!r}; choose from: {', '.join(choices)}")
        if self.num_kv_heads is not None:
            if (not isinstance(self.num_kv_heads, int) or isinstance(self.num_kv_heads, bool) or self.num_kv_heads <= 0
                    or self.num_heads % self.num_kv_heads != 0):
                raise PlmkitError(f"config: num_kv_heads must be a positive integer that divides num_heads "
                                  f"({self.num_heads}), got {self.num_kv_heads!r}")
        if not self.rope_theta > 0:
            raise PlmkitError(f"config: rope_theta must be > 0, got {self.rope_theta!r}")
        if self.position_embedding == "relative" and not self.is_encoder_decoder:
            raise PlmkitError("config: relative position bias (T5) is for encoder-decoders; set is_encoder_decoder")
        if self.position_embedding == "rotary" and self.head_dim % 2 != 0:
            raise PlmkitError(f"config: rotary positions need an even head_dim, got {self.head_dim}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise PlmkitError(f"config: unknown problem_type {self.problem_type!r}; "
                              f"choose from: {', '.join(PROBLEM_TYPES)}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PlmkitError(f"config: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if len(self.id2label) != self.num_labels:
                self.num_labels = len(self.id2label)

    # ------------------------------------------------------------------ plain dict / YAML / JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("head_dim")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlmkitError(_unknown_keys(source, unknown) + f"; known keys: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read a plmkit config from `.yaml`/`.yml`/`.json`."""
        path = Path(path)
        d = _read_mapping(path)
        return cls.from_dict(d.get("model", d), source=str(path))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(self.to_dict())
        path.write_text(text, encoding="utf-8")

    def replace(self, **changes: Any) -> ModelConfig:
        d = self.to_dict()
        d.update(changes)
        return ModelConfig.from_dict(d)

    @property
    def decoder_layers(self) -> int:
        """Layers of an encoder-decoder's decoder stack: `num_decoder_layers`, or `num_layers` when unset."""
        return self.num_decoder_layers or self.num_layers

    @property
    def kv_heads(self) -> int:
        """Key/value heads: `num_kv_heads`, or `num_heads` (plain multi-head attention) when unset."""
        return self.num_kv_heads or self.num_heads

    # ------------------------------------------------------------------ labels
    @property
    def labels(self) -> list[str]:
        id2label = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        return [id2label[i] for i in range(self.num_labels)]

    # ------------------------------------------------------------------ Hugging Face config.json
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Build from a Hugging Face BERT `config.json`. Every key is either mapped, known and harmless, or an error."""
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise PlmkitError(f"{source}: model_type {model_type!r} is not supported by the encoder; expected 'bert'")
        for key, ok in _HF_REQUIRED_VALUES.items():
            if key in d and d[key] is not None and d[key] != ok:
                raise PlmkitError(f"{source}: {key}={d[key]!r} is not supported (plmkit supports {ok!r})")
        unknown = sorted(set(d) - set(_HF_TO_OURS) - _HF_IGNORED - set(_HF_REQUIRED_VALUES))
        if unknown:
            raise PlmkitError(_unknown_keys(source, unknown))
        ours: dict[str, Any] = {}
        for hf_key, our_key in _HF_TO_OURS.items():
            if hf_key in d and d[hf_key] is not None:
                ours[our_key] = d[hf_key]
        if "hidden_act" in d:
            act = d["hidden_act"]
            if act not in _HF_ACT:
                raise PlmkitError(f"{source}: hidden_act {act!r} is not supported; choose from: {', '.join(_HF_ACT)}")
            ours["activation"] = _HF_ACT[act]
        if "id2label" in d and d["id2label"]:
            ours["id2label"] = {int(k): v for k, v in d["id2label"].items()}
            ours["num_labels"] = len(ours["id2label"])
        elif "num_labels" in d:
            ours["num_labels"] = d["num_labels"]
        if d.get("case_token_types"):
            ours["case_token_types"] = bool(d["case_token_types"])
        return cls.from_dict(ours, source=source)

    def to_hf_dict(self, architecture: str) -> dict[str, Any]:
        """A `config.json` that `transformers` reads as the same BERT."""
        if self.norm_position != "post":
            raise PlmkitError("config: only post-LN encoders (norm_position='post') can be saved in Hugging Face BERT "
                              "format; transformers has no pre-LN BERT")
        if self.type_vocab_size == 0:
            raise PlmkitError("config: transformers' BERT always has a segment embedding; type_vocab_size=0 cannot "
                              "be saved in Hugging Face BERT format (use type_vocab_size=1)")
        ours = self.to_dict()
        d: dict[str, Any] = {"architectures": [architecture], "model_type": "bert"}
        for hf_key, our_key in _HF_TO_OURS.items():
            d[hf_key] = ours[our_key]
        d["hidden_act"] = _OURS_TO_HF_ACT[self.activation]
        d["position_embedding_type"] = "absolute"
        id2label = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        d["id2label"] = {str(i): label for i, label in id2label.items()}
        d["label2id"] = {label: i for i, label in id2label.items()}
        if self.case_token_types:  # not a transformers key: its BertConfig keeps it as an attribute
            d["case_token_types"] = True
        return d


# Our field name for each Hugging Face BERT config key.
_HF_TO_OURS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "classifier_dropout": "classifier_dropout",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
    "tie_word_embeddings": "tie_word_embeddings",
    "problem_type": "problem_type",
}
_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu"}
_OURS_TO_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
# Keys whose only supported value is the BERT encoder's.
_HF_REQUIRED_VALUES = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False,
                       "is_encoder_decoder": False}
# Generic `PretrainedConfig` bookkeeping that does not change the network.
_HF_IGNORED = {
    "_name_or_path", "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "use_cache",
    "gradient_checkpointing", "output_attentions", "output_hidden_states", "return_dict", "chunk_size_feed_forward",
    "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "label2id", "id2label", "num_labels",
    "hidden_act", "output_past", "torchscript", "pruned_heads", "tokenizer_class", "prefix", "task_specific_params",
    "finetuning_task", "cross_attention_hidden_size", "tie_encoder_decoder", "problem_type", "use_return_dict",
    "case_token_types",
}


def _unknown_keys(source: str, unknown: list[str]) -> str:
    return f"{source}: unknown key {unknown[0]!r}" + (f" (and {unknown[1:]})" if unknown[1:] else "")


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PlmkitError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
        d = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise PlmkitError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise PlmkitError(f"{path}: expected a mapping of keys to values at the top level")
    return d


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON mapping, with a one-line error naming the file."""
    return _read_mapping(path)
