"""What every fine-tuning task shares: finding its files, the hub fallback, labels, collate and its model head.

A task is one object that knows its data (`read`), how to turn examples into model inputs (`featurize`, `collate`),
which head it needs (`build_model`), how to score it (`scorer`, used by `plmkit.evaluation.evaluate`) and how to
give human-readable predictions (`predict`). The trainer knows none of this; it calls the task.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Keys a feature may hold that are model inputs; anything else in a feature is bookkeeping for decoding.
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation", "eval": "validation"}


def default_data_dir() -> Path:
    """$PLMKIT_DATA, else ../shared/data relative to the current directory."""
    return Path(os.environ.get("PLMKIT_DATA") or Path.cwd() / ".." / "shared" / "data")


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when every label is an integer ("2" before "10")."""
    distinct = set(labels)
    if all(label.lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def as_id2label(id2label: dict[int, str] | Sequence[str] | None) -> dict[int, str] | None:
    """Accept `{0: "neg", 1: "pos"}` or `["neg", "pos"]`."""
    if id2label is None:
        return None
    if isinstance(id2label, dict):
        return {int(k): str(v) for k, v in id2label.items()}
    return dict(enumerate(id2label))


def label_id(label2id: dict[str, int], label: str, where: str) -> int:
    """The id of a gold label, or an error naming the label and where it came from."""
    try:
        return label2id[label]
    except KeyError:
        known = ", ".join(label2id) or "none"
        raise PlmkitError(f"{where}: unknown label {label!r}; the model's labels are: {known}") from None


def pad_rows(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """Lists of ids -> a (len(rows), length) long tensor, each row padded on the right with `value` (length:
    the longest row's by default)."""
    length = max(len(r) for r in rows) if length is None else length
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


class Scorer(Protocol):
    """Accumulates what a metric needs, batch by batch (`plmkit.evaluation.evaluate` drives it)."""

    def update(self, features: list[dict[str, Any]], outputs: Any) -> None: ...

    def compute(self) -> dict[str, float]: ...


def load_hub_split(task: str, path: str, name: str | None, split: str, revision: str | None = None) -> Any:
    """One split of a Hugging Face hub dataset through `datasets`, or one clear line saying to pass --data-dir."""
    what = f"{path}" + (f" ({name})" if name else "")
    try:
        import datasets
    except ImportError:
        raise PlmkitError(f"task {task!r}: no local data and the `datasets` package is not installed to download "
                          f"{what}; pass --data-dir with the task's files") from None
    logger.info("task %s: loading %s split %s from the Hugging Face hub", task, what, split)
    try:
        return datasets.load_dataset(path, name, split=split, revision=revision)
    except Exception as err:  # offline, unknown split, hub errors: all mean "use local files"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PlmkitError(f"task {task!r}: cannot download {what} split {split!r} from the Hugging Face hub "
                          f"({reason}); pass --data-dir with the task's files") from None


class Task:
    """Base of the task kinds. Subclasses set the class attributes and implement the abstract methods."""

    kind: ClassVar[str] = ""  # "sequence-classification" | "token-classification" | "question-answering"
    model_class: ClassVar[type] = type(None)

    def __init__(self, name: str, *, folder: str = "", files: dict[str, Sequence[str]] | None = None,
                 metrics: Sequence[str] = (), main_metric: str = "", hub: tuple[str, str | None] | None = None,
                 hub_splits: dict[str, str] | None = None, hub_revision: str | None = None,
                 aliases: dict[str, str] | None = None) -> None:
        self.name = name
        self.aliases = aliases or {}  # task-specific split names, e.g. MNLI's "validation" -> "validation_matched"
        self.folder = folder  # the task's folder under a data root, e.g. "glue/SST-2"
        self.files = {split: tuple(names) for split, names in (files or {}).items()}
        self.metrics = tuple(metrics)
        self.main_metric = main_metric or (self.metrics[0] if self.metrics else "")
        self.greater_is_better = True
        self.hub, self.hub_revision = hub, hub_revision
        self.hub_splits = hub_splits or {split: split for split in self.files}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ------------------------------------------------------------------ reading
    def split_name(self, split: str) -> str:
        known = split in self.files or split in self.aliases
        canonical = split if known else SPLIT_ALIASES.get(split, split)
        canonical = self.aliases.get(canonical, canonical)
        if canonical not in self.files:
            raise PlmkitError(f"task {self.name!r} has no split {split!r}; choose from: {', '.join(self.files)}")
        return canonical

    def candidates(self, data_dir: Path, split: str) -> list[Path]:
        """Where the file of `split` may be under `data_dir`: in the task's folder of a data root, or directly."""
        return [directory / name for directory in dict.fromkeys([data_dir / self.folder, data_dir])
                for name in self.files[split]]

    def find_file(self, data_dir: str | Path, split: str) -> Path:
        """The file of `split` under `data_dir` (a data root or the task's own folder), or `data_dir` itself when
        it is a file."""
        data_dir = Path(data_dir)
        if data_dir.is_file():
            return data_dir
        tried = self.candidates(data_dir, self.split_name(split))
        for path in tried:
            if path.is_file():
                return path
        raise PlmkitError(f"task {self.name!r}: no {self.split_name(split)} file; looked for "
                          f"{', '.join(map(str, tried))}")

    def read(self, data_dir: str | Path | None = None, split: str = "train") -> list[Any]:
        """The examples of one split: from `data_dir` (a data root, the task's folder or one file); with no
        `data_dir`, from the default data folder ($PLMKIT_DATA or ../shared/data), else from the Hugging Face hub."""
        split = self.split_name(split)
        if data_dir is not None:
            return self.read_file(self.find_file(data_dir, split), split)
        root = default_data_dir()
        found = next((path for path in self.candidates(root, split) if path.is_file()), None)
        if found is not None:
            return self.read_file(found, split)
        if self.hub is None:
            raise PlmkitError(f"task {self.name!r}: no {split} file in the default data folder {root} and no hub "
                              "copy to download; pass --data-dir with the task's files")
        dataset = load_hub_split(self.name, self.hub[0], self.hub[1], self.hub_splits.get(split, split),
                                 self.hub_revision)
        return self.from_hf_dataset(dataset, split)

    def read_file(self, path: Path, split: str) -> list[Any]:
        raise NotImplementedError

    def from_hf_dataset(self, dataset: Any, split: str = "train") -> list[Any]:
        """Examples from a `datasets.Dataset` with the hub copy's columns."""
        raise PlmkitError(f"task {self.name!r} has no Hugging Face hub copy")

    # ------------------------------------------------------------------ labels and features
    def label_list(self, examples: Sequence[Any]) -> list[str]:
        """The label names the model predicts, in a stable order (stored as config.id2label)."""
        return []

    def featurize(self, examples: Sequence[Any], tokenizer: Any, label2id: dict[str, int] | None = None,
                  max_length: int = 128, **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def collate(self, features: Sequence[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
        """Pad a list of features to the longest one: the model's forward keyword arguments as (B, T) tensors
        (labels: (B,) for sequences, (B, T) padded with -100 for tokens; start/end_positions: (B,))."""
        if not features:
            raise PlmkitError("cannot collate an empty list of features")
        length = max(len(f["input_ids"]) for f in features)
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        for key in INPUT_KEYS:
            if key in features[0]:
                batch[key] = pad_rows([f[key] for f in features], pads[key], length)
        batch.update(self._collate_labels(features, length))
        return batch

    def _collate_labels(self, features: Sequence[dict[str, Any]], length: int) -> dict[str, torch.Tensor]:
        return {}

    @staticmethod
    def _labelled(features: Sequence[dict[str, Any]], key: str) -> bool:
        """Whether the batch carries `key` (labels, start_positions); a batch where only some features do is an
        error, as it would silently train on part of it."""
        count = sum(key in f for f in features)
        if 0 < count < len(features):
            raise PlmkitError(f"cannot collate a batch where only {count} of {len(features)} features have {key}")
        return count > 0

    # ------------------------------------------------------------------ model
    def configure(self, config: ModelConfig | str | Path) -> None:
        """Take task settings that a model's config (or the config of a model directory) carries: token
        classification's `case_token_types`. Most tasks have none."""

    def model_config(self, config: ModelConfig, id2label: dict[int, str] | None) -> ModelConfig:
        """The config with this task's head settings (labels, problem type)."""
        return config

    def build_model(self, config_or_dir: ModelConfig | str | Path,
                    id2label: dict[int, str] | Sequence[str] | None = None) -> Any:
        """This task's head class on a fresh encoder (from a `ModelConfig`) or on a checkpoint directory."""
        id2label = as_id2label(id2label)
        if isinstance(config_or_dir, ModelConfig):
            return self.model_class(self.model_config(config_or_dir, id2label))
        from plmkit.interop import resolve_model_dir
        from plmkit.interop.checkpoint import read_config

        model_dir = resolve_model_dir(config_or_dir)
        config = self.model_config(read_config(model_dir), id2label)
        return self.model_class.from_pretrained(model_dir, config=config)

    def forward(self, model: Any, batch: dict[str, torch.Tensor]) -> Any:
        """What evaluation runs on a collated batch; its result goes to the scorer (generation tasks generate)."""
        return model(**batch)

    def scorer(self, model: Any, examples: Sequence[Any]) -> Scorer:
        raise NotImplementedError

    def predict(self, model: Any, tokenizer: Any, inputs: Sequence[Any], **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError


def model_labels(model: Any) -> list[str]:
    """The label names of a model, by id (its config's id2label, or LABEL_i)."""
    return list(model.config.labels)
