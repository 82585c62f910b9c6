"""`plmkit info DIR`: what a model directory holds: architecture, size, heads, tokenizer."""

from __future__ import annotations

import argparse
from pathlib import Path

from plmkit.interop import detect_architecture, resolve_model_dir
from plmkit.interop.checkpoint import read_keys, weight_files
from plmkit.models import MODEL_CLASSES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="describe a model directory", description=__doc__)
    parser.add_argument("model", metavar="DIR", help="a Hugging Face / plmkit model directory (or hub id)")
    parser.set_defaults(func=run)
    return parser


def describe(model_dir: Path) -> list[tuple[str, str]]:
    """Rows of (field, value). Loads the model, so a broken checkpoint is reported here too."""
    arch = detect_architecture(model_dir)
    model = MODEL_CLASSES[arch].from_pretrained(model_dir)
    c = model.config
    files = weight_files(model_dir)
    rows = [
        ("directory", str(model_dir)),
        ("architecture", arch),
        ("weights", f"{', '.join(f.name for f in files)} ({len(read_keys(model_dir))} tensors)"),
        ("parameters", f"{model.num_parameters:,}"),
        ("layers", str(c.num_layers)),
        ("hidden size", f"{c.hidden_size} ({c.num_heads} heads of {c.head_dim})"),
        ("feed-forward", f"{c.intermediate_size} ({c.activation})"),
        ("norm", f"{c.norm_position}-LN, eps {c.layer_norm_eps:g}"),
        ("vocabulary", f"{c.vocab_size:,} tokens, {c.type_vocab_size} segments, {c.max_position_embeddings} positions"),
        ("heads", ", ".join(["pooler"] * (model.pooler is not None) + list(model.heads)) or "none (bare encoder)"),
    ]
    if "classifier" in model.heads:
        rows.append(("labels", ", ".join(c.labels) + (f" ({c.problem_type})" if c.problem_type else "")))
    tokenizer = [f for f in ("tokenizer.json", "vocab.txt", "vocab.json") if (model_dir / f).is_file()]
    rows.append(("tokenizer", ", ".join(tokenizer) or "none"))
    return rows


def run(args: argparse.Namespace) -> int:
    rows = describe(resolve_model_dir(args.model))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
