"""Hugging Face BERT <-> plmkit, through one declarative key map.

Each plmkit parameter names the Hugging Face key(s) it comes from; `{}` stands for the layer index. A parameter
that fuses several Hugging Face tensors (Q, K and V into `qkv_proj`) lists them in order and is concatenated
along dim 0 on import and split on export. Every source key is accounted for: mapped, known to be redundant
(a tied decoder, a saved buffer), or belonging to a known head this model does not have; anything else is an
error that lists the keys, as are missing keys and shape mismatches.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.interop.checkpoint import read_config, read_state_dict, write_model_dir
from plmkit.interop.hub import resolve_model_dir

log = logging.getLogger(__name__)

_QKV = tuple(f"encoder.layer.{{}}.attention.self.{p}" for p in ("query", "key", "value"))

# Backbone: our key -> Hugging Face key(s), relative to the base-model prefix ("" or "bert.").
BACKBONE_MAP: dict[str, str | tuple[str, ...]] = {
    "encoder.embed.token.weight": "embeddings.word_embeddings.weight",
    "encoder.embed.position.weight": "embeddings.position_embeddings.weight",
    "encoder.embed.segment.weight": "embeddings.token_type_embeddings.weight",
    "encoder.embed.norm.weight": "embeddings.LayerNorm.weight",
    "encoder.embed.norm.bias": "embeddings.LayerNorm.bias",
    "encoder.layers.{}.attn.qkv_proj.weight": tuple(f"{k}.weight" for k in _QKV),
    "encoder.layers.{}.attn.qkv_proj.bias": tuple(f"{k}.bias" for k in _QKV),
    "encoder.layers.{}.attn.out_proj.weight": "encoder.layer.{}.attention.output.dense.weight",
    "encoder.layers.{}.attn.out_proj.bias": "encoder.layer.{}.attention.output.dense.bias",
    "encoder.layers.{}.attn_norm.weight": "encoder.layer.{}.attention.output.LayerNorm.weight",
    "encoder.layers.{}.attn_norm.bias": "encoder.layer.{}.attention.output.LayerNorm.bias",
    "encoder.layers.{}.mlp.in_proj.weight": "encoder.layer.{}.intermediate.dense.weight",
    "encoder.layers.{}.mlp.in_proj.bias": "encoder.layer.{}.intermediate.dense.bias",
    "encoder.layers.{}.mlp.out_proj.weight": "encoder.layer.{}.output.dense.weight",
    "encoder.layers.{}.mlp.out_proj.bias": "encoder.layer.{}.output.dense.bias",
    "encoder.layers.{}.mlp_norm.weight": "encoder.layer.{}.output.LayerNorm.weight",
    "encoder.layers.{}.mlp_norm.bias": "encoder.layer.{}.output.LayerNorm.bias",
    "pooler.dense.weight": "pooler.dense.weight",
    "pooler.dense.bias": "pooler.dense.bias",
}

# Heads: our key -> Hugging Face key (these carry no base-model prefix in Hugging Face checkpoints).
HEAD_MAPS: dict[str, dict[str, str]] = {
    "mlm": {
        "mlm.transform.weight": "cls.predictions.transform.dense.weight",
        "mlm.transform.bias": "cls.predictions.transform.dense.bias",
        "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
        "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "mlm.bias": "cls.predictions.bias",
        "mlm.decoder.weight": "cls.predictions.decoder.weight",  # only when the decoder is not tied
    },
    "nsp": {"nsp.proj.weight": "cls.seq_relationship.weight", "nsp.proj.bias": "cls.seq_relationship.bias"},
    "classifier": {"classifier.proj.weight": "classifier.weight", "classifier.proj.bias": "classifier.bias"},
    "qa": {"qa.proj.weight": "qa_outputs.weight", "qa.proj.bias": "qa_outputs.bias"},
}

# Keys that carry no information of their own: a saved position-id buffer, the decoder tied to the embeddings,
# and the decoder bias that Hugging Face ties to `cls.predictions.bias`.
REDUNDANT_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids", "cls.predictions.decoder.weight",
                  "cls.predictions.decoder.bias")
BASE_PREFIX = "bert."
_HEAD_PREFIXES = {"mlm": "cls.predictions.", "nsp": "cls.seq_relationship.", "classifier": "classifier.",
                  "qa": "qa_outputs."}


def key_map(model: nn.Module, prefix: str | None = None) -> dict[str, tuple[str, ...]]:
    """Our parameter name -> Hugging Face key(s). Backbone keys carry `prefix`; by default the one a checkpoint of
    this model's class has in `transformers` ("" for BertModel, "bert." for the task models)."""
    config: ModelConfig = model.config
    if prefix is None:
        prefix = getattr(type(model), "hf_prefix", BASE_PREFIX)
    out: dict[str, tuple[str, ...]] = {}
    for ours, theirs in BACKBONE_MAP.items():
        theirs = (theirs,) if isinstance(theirs, str) else theirs
        layers = range(config.num_layers) if "{}" in ours else [None]
        for i in layers:
            out[ours.format(i) if i is not None else ours] = tuple(prefix + t.format(i) for t in theirs)
    for head in getattr(model, "heads", ()):
        out.update({ours: (theirs,) for ours, theirs in HEAD_MAPS[head].items()})
    params = dict(model.named_parameters())
    return {ours: theirs for ours, theirs in out.items() if ours in params}


def _strip_base_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints of task models prefix backbone keys with `bert.`; the bare BertModel does not."""
    if any(k.startswith(BASE_PREFIX) for k in state):
        return {k[len(BASE_PREFIX):] if k.startswith(BASE_PREFIX) else k: v for k, v in state.items()}
    return state


def _head_of(hf_key: str) -> str | None:
    for head, prefix in _HEAD_PREFIXES.items():
        if hf_key.startswith(prefix):
            return head
    return None


def convert_from_hf(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> list[str]:
    """Copy a Hugging Face BERT state dict into `model` in place. Returns our keys that were freshly initialised
    (heads the checkpoint did not have). Raises PlmkitError listing missing, unknown or mis-shaped keys."""
    prefix = BASE_PREFIX if any(k.startswith(BASE_PREFIX) for k in state) else ""
    state = _strip_base_prefix(state)

    def as_in_file(key: str) -> str:  # messages name keys as the checkpoint spells them
        return key if _head_of(key) else prefix + key

    mapping = key_map(model, prefix="")
    params = dict(model.named_parameters())
    present_heads = {_head_of(k) for k in state} - {None}
    new_init, missing, mismatched, used = [], [], [], set()
    for ours, theirs in mapping.items():
        found = [t for t in theirs if t in state]
        if not found:
            # A whole head (or the pooler) absent from the checkpoint is initialised fresh, as transformers does.
            head = ours.split(".")[0]
            if head == "pooler" or (head in HEAD_MAPS and head not in present_heads):
                new_init.append(ours)
                continue
            if ours == "mlm.decoder.weight" and "embeddings.word_embeddings.weight" in state:
                # An untied decoder from a checkpoint that saved it tied: start from the embeddings.
                found, theirs = ["embeddings.word_embeddings.weight"], ("embeddings.word_embeddings.weight",)
            else:
                missing.extend(theirs)
                continue
        if len(found) != len(theirs):
            missing.extend(t for t in theirs if t not in state)
            used.update(found)  # the present part of a fused group is not "unexpected"
            continue
        used.update(theirs)
        tensor = state[theirs[0]] if len(theirs) == 1 else torch.cat([state[t] for t in theirs], dim=0)
        if tensor.shape != params[ours].shape:
            mismatched.append(f"{'+'.join(map(as_in_file, theirs))} {tuple(tensor.shape)} "
                              f"vs expected {tuple(params[ours].shape)}")
            continue
        with torch.no_grad():
            params[ours].copy_(tensor)
    model_heads = set(getattr(model, "heads", ()))
    unexpected = []
    for k in state:
        if k in used or k in REDUNDANT_KEYS:
            continue
        head = _head_of(k)
        if head is not None and head not in model_heads and k in HEAD_MAPS[head].values():
            continue  # a known head this model class does not use (e.g. MLM weights loaded into BertModel)
        if k.startswith("pooler.") and k in BACKBONE_MAP.values():
            continue  # a pooler this model does not use
        unexpected.append(k)
    problems = []
    if missing:
        problems.append(_listing("missing keys", [as_in_file(k) for k in missing]))
    if unexpected:
        problems.append(_listing("unexpected keys", [as_in_file(k) for k in unexpected]))
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
    if problems:
        raise PlmkitError(f"{source}: " + "; ".join(problems))
    return new_init


def convert_to_hf(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face names, fused tensors split, tied weights written once."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in key_map(model).items():
        tensor = params[ours].detach()
        parts = tensor.chunk(len(theirs), dim=0) if len(theirs) > 1 else (tensor,)
        for key, part in zip(theirs, parts, strict=True):
            out[key] = part.contiguous().clone()
    return out


def _listing(what: str, keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {what}: {shown}{more}"


# ---------------------------------------------------------------------------------------------- directories
def load_pretrained(cls: type, name_or_path: str | Path, config: ModelConfig | None = None,
                    **config_overrides: Any) -> nn.Module:
    """Build `cls` from a Hugging Face BERT directory or hub id and load its weights."""
    model_dir = resolve_model_dir(name_or_path)
    if config is None:
        config = read_config(model_dir)
    # Arguments of the class itself (e.g. BertModel's add_pooling_layer) go to it; the rest change the config.
    init_params = set(inspect.signature(cls.__init__).parameters) - {"self", "config"}
    init_kwargs = {k: config_overrides.pop(k) for k in list(config_overrides) if k in init_params}
    if config_overrides:
        config = config.replace(**config_overrides)
    model = cls(config, **init_kwargs)
    state, source = read_state_dict(model_dir)
    new_init = convert_from_hf(model, state, source=source)
    if new_init:
        log.warning("%s: newly initialised (not in the checkpoint; train before use): %s", type(model).__name__,
                    ", ".join(sorted({k.rsplit(".", 1)[0] for k in new_init})))
    model.eval()
    return model


def save_pretrained(model: nn.Module, save_directory: str | Path, tokenizer: Any = None) -> Path:
    """Write `config.json` and `model.safetensors` (atomically), and the tokenizer's files when given."""
    hf_config = model.config.to_hf_dict(type(model).hf_architecture)
    return write_model_dir(Path(save_directory), hf_config, convert_to_hf(model), tokenizer=tokenizer)


def detect_architecture(model_dir: Path) -> str:
    """Which task model a directory holds, from its weights' heads (and `architectures` for `classifier`)."""
    from plmkit.interop.checkpoint import read_hf_config_dict, read_keys

    keys = {k[len(BASE_PREFIX):] if k.startswith(BASE_PREFIX) else k for k in read_keys(model_dir)}
    heads = {_head_of(k) for k in keys} - {None}
    if {"mlm", "nsp"} <= heads:
        return "BertForPreTraining"
    if "mlm" in heads:
        return "BertForMaskedLM"
    if "nsp" in heads:
        return "BertForNextSentencePrediction"
    if "qa" in heads:
        return "BertForQuestionAnswering"
    if "classifier" in heads:
        archs = read_hf_config_dict(model_dir).get("architectures") or []
        token_level = "BertForTokenClassification" in archs
        return "BertForTokenClassification" if token_level else "BertForSequenceClassification"
    return "BertModel"
