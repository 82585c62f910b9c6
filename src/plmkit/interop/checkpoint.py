"""Reading and writing checkpoint directories: safetensors (preferred), sharded safetensors, or a pickled
`pytorch_model.bin` loaded with `weights_only=True` so that an untrusted file cannot execute code.
Writes are atomic: a file is written beside its target and renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from plmkit.config import ModelConfig, read_json
from plmkit.errors import PlmkitError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
CONFIG = "config.json"


def read_hf_config_dict(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CONFIG
    if not path.is_file():
        raise PlmkitError(f"{model_dir}: no {CONFIG}; not a Hugging Face model directory")
    return read_json(path)


def read_config(model_dir: Path) -> ModelConfig:
    return ModelConfig.from_hf_dict(read_hf_config_dict(model_dir), source=str(model_dir / CONFIG))


def weight_files(model_dir: Path) -> list[Path]:
    if (model_dir / SAFETENSORS).is_file():
        return [model_dir / SAFETENSORS]
    if (model_dir / SAFETENSORS_INDEX).is_file():
        index = read_json(model_dir / SAFETENSORS_INDEX)
        shards = sorted(set(index.get("weight_map", {}).values()))
        for shard in shards:
            if not (model_dir / shard).is_file():
                raise PlmkitError(f"{model_dir / SAFETENSORS_INDEX}: shard {shard} is missing")
        return [model_dir / s for s in shards]
    if (model_dir / PICKLE).is_file():
        return [model_dir / PICKLE]
    raise PlmkitError(f"{model_dir}: no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE})")


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise PlmkitError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or malicious pickle raises many kinds of error
        raise PlmkitError(f"{path}: cannot be loaded safely with weights_only=True "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PlmkitError(f"{path}: expected a mapping of names to tensors")
    return state


def read_state_dict(model_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a checkpoint directory, and a name for it to use in messages."""
    files = weight_files(model_dir)
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(_read_file(path))
    return state, str(files[0] if len(files) == 1 else model_dir)


def read_keys(model_dir: Path) -> list[str]:
    """Tensor names only (no data read for safetensors)."""
    files = weight_files(model_dir)
    if files[0].suffix != ".safetensors":
        return list(_read_file(files[0]))
    keys: list[str] = []
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                keys.extend(f.keys())
        except (SafetensorError, OSError, ValueError) as e:
            raise PlmkitError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None
    return keys


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, then rename over `path`: a reader never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_model_dir(model_dir: Path, hf_config: dict[str, Any], state: dict[str, torch.Tensor],
                    tokenizer: Any = None) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    dtypes = {str(t.dtype).removeprefix("torch.") for t in state.values()}
    hf_config = {**hf_config, "dtype": dtypes.pop() if len(dtypes) == 1 else "float32"}
    atomic_write(model_dir / SAFETENSORS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    atomic_write(model_dir / CONFIG, lambda p: p.write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8"))
    if tokenizer is not None:
        tokenizer.save_pretrained(model_dir)
    return model_dir
