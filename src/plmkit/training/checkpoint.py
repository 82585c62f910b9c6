"""Training checkpoints: written atomically, verified on load, the last k kept.

A checkpoint is a directory `step-00000100/` under `<output_dir>/checkpoints/`:

    model.safetensors   the raw model's full weights (never a compiled or DDP wrapper's `_orig_mod.`/`module.`
                        names, never FSDP shards: an FSDP run gathers them first, see `training.distributed`)
    optimizer.pt        the optimizer's full state_dict, keyed by parameter index as `optimizer.state_dict()` is
                        (tensors and numbers only: loaded with weights_only=True)
    rng.pt              every rank's torch CPU (and CUDA) RNG state, a list indexed by rank: dropout continues
                        exactly where it stopped on each process
    trainer_state.json  the step and what the trainer tracks (elapsed time, tokens seen, best metric)
    ema.safetensors     with `train.ema_decay` only: the moving average of the weights (and how many steps it holds)
    manifest.json       size and sha256 of each file above; written last

Everything is written into a hidden temporary directory that is renamed into place only when complete, so a
run killed at any moment leaves either a whole checkpoint or none. On resume the newest checkpoint whose
manifest matches its files is used; a corrupt or truncated one is reported by name and skipped.

The files are the same whatever wrote them (one process, DDP or FSDP, any number of ranks), so a checkpoint
resumes under another set-up; only the RNG states are per rank, and a different world size warns that dropout
will not repeat the original run's (ranks beyond the saved ones reuse the saved states in turn). An `rng.pt` of
one dict (from before the states were per rank) is read as rank 0's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from plmkit.errors import PlmkitError

log = logging.getLogger(__name__)

MODEL, OPTIMIZER, RNG, STATE, MANIFEST = "model.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json", \
    "manifest.json"
EMA = "ema.safetensors"
REQUIRED = (MODEL, OPTIMIZER, RNG, STATE)  # in every checkpoint's manifest; EMA only where the run keeps one
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    step: int


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoint directories, oldest first (temporary directories of interrupted saves are ignored)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [Checkpoint(p, int(m.group(1))) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found, key=lambda c: c.step)


def rng_state() -> dict[str, Any]:
    """This process's RNG state: torch's CPU generator and, with CUDA, the current device's (a rank uses one
    device; `get_rng_state_all` would create a context on every visible GPU from every rank)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, list):  # older checkpoints: every visible device's state
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.set_rng_state(cuda)


def rng_state_for_rank(states: list[dict[str, Any]] | dict[str, Any], rank: int, world_size: int,
                       where: Path | str = "rng.pt") -> dict[str, Any]:
    """The saved state this rank continues from. With as many states as ranks that is its own, which makes a
    resumed distributed run repeat the uninterrupted one; with another world size, rank r takes state r mod n
    (a sensible continuation, but not the original run's dropout), and says so."""
    if isinstance(states, dict):  # a checkpoint from before per-rank states: one state, rank 0's
        states = [states]
    if not states:
        raise PlmkitError(f"{where}: no RNG state in the checkpoint")
    if len(states) != world_size and rank == 0:
        log.warning("%s holds the RNG states of %d process(es) but this run has %d: rank r continues from state "
                    "r mod %d, so dropout after the resume differs from an uninterrupted run of %d process(es)",
                    where, len(states), world_size, len(states), len(states))
    return states[rank % len(states)]


def save_checkpoint(output_dir: str | Path, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer | dict[str, Any], state: dict[str, Any], keep_last: int = 2,
                    rng_states: list[dict[str, Any]] | None = None, ema: nn.Module | None = None) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last`.

    `model` is a plain module holding the full weights; `optimizer` is an optimizer or its full state_dict (what an
    FSDP run gathers); `rng_states` is every rank's `rng_state()` in rank order (default: this process's only);
    `ema` is the weights' moving average (a `torch.optim.swa_utils.AveragedModel`), when the run keeps one."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is as readable as the rest of the run
    try:
        save_model(model, str(tmp / MODEL), metadata={"format": "pt", "step": str(step)})
        optimizer_state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
        torch.save(optimizer_state, tmp / OPTIMIZER)
        torch.save(rng_states if rng_states is not None else [rng_state()], tmp / RNG)
        (tmp / STATE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n", encoding="utf-8")
        names = list(REQUIRED)
        if ema is not None:
            save_model(ema, str(tmp / EMA), metadata={"format": "pt", "step": str(step)})
            names.append(EMA)
        manifest = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in names}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        if final.exists():  # a re-save of the same step (e.g. after resuming from it): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def verify_checkpoint(path: Path) -> None:
    """Raise PlmkitError naming the first file that is missing, truncated or altered."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlmkitError(f"{path}: incomplete checkpoint ({MANIFEST} missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlmkitError(f"{manifest_path}: corrupt manifest ({e})") from None
    for name in (*REQUIRED, *sorted(set(manifest) - set(REQUIRED))):
        f = path / name
        if name not in manifest:
            raise PlmkitError(f"{manifest_path}: no entry for {name}")
        if not f.is_file():
            raise PlmkitError(f"{f}: missing from checkpoint")
        size = f.stat().st_size
        if size != manifest[name]["bytes"]:
            raise PlmkitError(f"{f}: truncated or altered ({size} bytes, manifest says {manifest[name]['bytes']})")
        if _sha256(f) != manifest[name]["sha256"]:
            raise PlmkitError(f"{f}: contents do not match the manifest's sha256 (corrupt)")


def load_weights(path: Path, model: nn.Module, name: str = MODEL) -> None:
    """Load a checkpoint's model.safetensors (or another weights file of it, e.g. `EMA`) into a plain module; a
    file that does not fit is a PlmkitError."""
    f = path / name
    try:
        missing, unexpected = load_model(model, str(f), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise PlmkitError(f"{f}: cannot be loaded into the model ({str(e).splitlines()[0]})") from None
    if missing or unexpected:
        raise PlmkitError(f"{f}: does not fit the model (missing: {sorted(missing)[:5]}, "
                          f"unexpected: {sorted(unexpected)[:5]})")


def load_optimizer_state(path: Path) -> dict[str, Any]:
    return torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)


def restore_rng(path: Path, rank: int = 0, world_size: int = 1) -> None:
    """Set this rank's RNG state from the checkpoint (see `rng_state_for_rank`)."""
    states = torch.load(path / RNG, map_location="cpu", weights_only=True)
    set_rng_state(rng_state_for_rank(states, rank, world_size, path / RNG))


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE).read_text(encoding="utf-8"))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, *, rank: int = 0,
                    world_size: int = 1, ema: nn.Module | None = None) -> dict[str, Any]:
    """Verify, then load weights (and the moving average into `ema`), optimizer state and this rank's RNG state;
    returns the trainer state."""
    verify_checkpoint(path)
    load_weights(path, model)
    if ema is not None:
        if not (path / EMA).is_file():
            raise PlmkitError(f"{path}: has no {EMA}; the run was saved without train.ema_decay")
        load_weights(path, ema, EMA)
    if optimizer is not None:
        optimizer.load_state_dict(load_optimizer_state(path))
    restore_rng(path, rank, world_size)
    return read_trainer_state(path)


def resume_latest(output_dir: str | Path,
                  load: Callable[[Path], dict[str, Any]]) -> tuple[Checkpoint, dict[str, Any]] | None:
    """Load the newest intact checkpoint with `load(path) -> trainer state` (e.g. `load_checkpoint` with its
    model and optimizer bound); a damaged one (a PlmkitError) is named in a warning and the one before it is used."""
    for ckpt in reversed(list_checkpoints(output_dir)):
        try:
            return ckpt, load(ckpt.path)
        except PlmkitError as e:
            log.warning("skipping checkpoint %s: %s", ckpt.path.name, e)
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
