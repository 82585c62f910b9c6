"""Training settings as typed data: `TrainConfig` (what changes results) and `ImplConfig` (what changes only speed),
plus recipe files and `section.key=value` overrides from the command line.

A recipe is one YAML mapping with sections (`model`, `data`, `train`, `impl`, ...). Overrides address a key by its
dotted path and are parsed as YAML scalars, so `train.max_steps=100`, `train.lr=5e-4`, `impl.compile=true` and
`data.inputs=[a.txt,b.txt]` all do what they say. Unknown sections and keys are errors that name them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plmkit.errors import PlmkitError
from plmkit.layers.linear import BACKENDS as CPU_MATMULS

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """The optimisation itself. `batch_size` is the global batch per optimizer step (all ranks, all accumulation
    micro-batches together); `micro_batch_size` is what one rank runs in one forward (default: all of its share)."""

    output_dir: str = "runs/run"
    seed: int = 0
    batch_size: int = 32
    micro_batch_size: int | None = None
    max_steps: int = 1000
    max_minutes: float | None = None
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    # With max_minutes: decay by the larger of step progress and time progress, so a run cut by the clock
    # still ends with the learning rate near its minimum (as cramming's budgeted schedules). Off by default:
    # a time-driven schedule is not reproducible bit for bit.
    schedule_by_time: bool = False
    min_lr_ratio: float = 0.0
    clip_grad_norm: float | None = 1.0
    log_every: int = 10
    eval_every: int = 0
    eval_max_batches: int | None = None
    save_every_steps: int = 0
    save_every_minutes: float = 0.0
    keep_last: int = 2
    best_metric: str | None = None
    best_mode: str = "max"
    label_smoothing: float = 0.0  # of the sequence-to-sequence loss (transformers' label_smoothing_factor)
    # > 0: keep an exponential moving average of the weights, updated after every optimizer step
    # (avg = decay * avg + (1 - decay) * weights, as timm's ModelEmaV2 and torch.optim.swa_utils' EMA); evaluation,
    # the best checkpoint and the model left after training are the average. Off by default, as in transformers.
    ema_decay: float = 0.0
    # < 1: layer-wise learning-rate decay (ELECTRA, DeBERTa): the head trains at lr, the top layer at lr * decay,
    # the one below at lr * decay ** 2, ..., the embeddings at the lowest rate (see optim.param_groups). 1 = off.
    layer_lr_decay: float = 1.0
    # > 0: R-Drop for fine-tuning classification, regression and token classification (see
    # objectives.RDropObjective): each batch runs twice with different dropout, and this weight times the gap between
    # the two predictions joins the loss. 0 = off.
    rdrop_alpha: float = 0.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise PlmkitError(f"train.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise PlmkitError(f"train.micro_batch_size must be positive, got {self.micro_batch_size}")
        if self.schedule not in SCHEDULES:
            raise PlmkitError(f"train.schedule: unknown schedule {self.schedule!r}; "
                              f"choose from: {', '.join(SCHEDULES)}")
        if self.best_mode not in ("max", "min"):
            raise PlmkitError(f"train.best_mode must be 'max' or 'min', got {self.best_mode!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise PlmkitError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise PlmkitError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise PlmkitError(f"train.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.rdrop_alpha < 0:
            raise PlmkitError(f"train.rdrop_alpha must be >= 0, got {self.rdrop_alpha}")
        if self.keep_last < 1:
            raise PlmkitError(f"train.keep_last must be >= 1, got {self.keep_last}")
        if self.schedule_by_time and not self.max_minutes:
            raise PlmkitError("train.schedule_by_time needs train.max_minutes")
        if self.lr <= 0:
            raise PlmkitError(f"train.lr must be positive, got {self.lr}")

    @property
    def warmup(self) -> int:
        """Warm-up steps: `warmup_steps`, or `warmup_ratio` of `max_steps` when that is set."""
        return self.warmup_steps or round(self.warmup_ratio * self.max_steps)


@dataclass
class ImplConfig:
    """Settings that change speed, not results (as cramming's `impl`): where and how the same maths runs."""

    device: str = "auto"  # auto = cuda when available, else cpu
    precision: str = "fp32"  # bf16 = autocast to bfloat16 (GPU); fp32 everywhere by default
    compile: bool = False
    # Under torchrun: shard weights, gradients and AdamW state over the ranks with FSDP2 instead of replicating
    # them with DDP, for a model too big for one device (see training.distributed). No effect in one process.
    fsdp: bool = False
    num_threads: int | None = None
    # CPU training's fp32 matmuls (see layers.linear): auto = oneDNN where MKL would leave AVX-512 unused (a CPU not
    # Intel's), else torch's own (MKL); onednn or aten to choose. The same maths, rounded differently.
    cpu_matmul: str = "auto"
    # CPU: give freed heap memory back to the OS every N steps (glibc malloc_trim; see training.memory); 0 = never
    release_memory_every: int = 100
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PlmkitError(f"impl.precision: unknown {self.precision!r}; choose from: {', '.join(PRECISIONS)}")
        if self.cpu_matmul not in CPU_MATMULS:
            raise PlmkitError(f"impl.cpu_matmul: unknown {self.cpu_matmul!r}; choose from: {', '.join(CPU_MATMULS)}")


def dataclass_from_dict(cls: type, d: dict[str, Any] | None, section: str) -> Any:
    """Build dataclass `cls` from a mapping; an unknown key is an error that names it and lists the known ones."""
    d = dict(d or {})
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise PlmkitError(f"{section}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
    for f in dataclasses.fields(cls):
        # YAML 1.1 reads `5e-4` (no dot) as a string; a float field takes it as the number it means.
        if f.name in d and isinstance(d[f.name], str) and "float" in str(f.type):
            try:
                d[f.name] = float(d[f.name])
            except ValueError:
                raise PlmkitError(f"{section}.{f.name}: expected a number, got {d[f.name]!r}") from None
    return cls(**d)


def load_recipe(path: str | Path | None, overrides: list[str] = (), sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML recipe and apply `a.b=value` overrides. `sections` (when given) are the allowed top-level keys."""
    recipe: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PlmkitError(f"{path}: recipe file not found")
        try:
            recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise PlmkitError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(recipe, dict):
            raise PlmkitError(f"{path}: a recipe must be a YAML mapping of sections")
    for item in overrides:
        apply_override(recipe, item)
    if sections:
        unknown = sorted(set(recipe) - set(sections))
        if unknown:
            raise PlmkitError(f"{path or 'recipe'}: unknown section(s) {', '.join(unknown)}; "
                              f"known sections: {', '.join(sections)}")
    return recipe


def apply_override(recipe: dict[str, Any], item: str) -> None:
    """`train.max_steps=100` sets recipe['train']['max_steps'] = 100 (the value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise PlmkitError(f"override {item!r}: expected section.key=value, e.g. train.max_steps=100")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:
            value = float(value)  # `5e-4`: YAML 1.1 has no float without a dot, users mean the number
        except ValueError:
            pass
    node = recipe
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str):  # a section given as a file (`model: configs/models/x.yaml`) + field changes
            child = node[part] = {"file": child}
        if not isinstance(child, dict):
            raise PlmkitError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value
