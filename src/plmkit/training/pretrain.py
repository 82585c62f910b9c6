"""A pretraining run from one recipe: tokenizer → prepared corpus → BERT (MLM [+ NSP]) → Hugging Face directory.

A recipe (`configs/pretrain/*.yaml`) has five sections:

    model      a model config file (`configs/models/bert-mini.yaml`) or the fields inline; `vocab_size` follows
               the tokenizer
    tokenizer  `path:` an existing tokenizer directory, or `vocab_size:` (+ `lowercase`, `min_frequency`) to
               train WordPiece on the training text first
    data       `inputs:` raw text (files, folders, globs, .gz, JSONL) prepared into <output_dir>/data, or
               `prepared:` a `plmkit prepare` directory; `max_seq_length`, `nsp`, `short_seq_prob`,
               `mlm_probability`, `whole_word`, `doc_boundary`, `encoding_errors`, `validation_fraction`, `workers`,
               `eval_batch_size`
    train      `TrainConfig` (steps, minutes, batch, lr, schedule, checkpoints, evaluation)
    impl       `ImplConfig` (device, precision, compile, threads, progress bar, TensorBoard)

Paths may use `$PLMKIT_DATA` (default `../shared/data`). The run ends with `<output_dir>/model`: config.json,
model.safetensors and the tokenizer, which `transformers`' `BertForPreTraining.from_pretrained` loads.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.training.config import ImplConfig, TrainConfig, dataclass_from_dict, load_recipe
from plmkit.training.data import Collate, iter_eval_batches
from plmkit.training.distributed import DistInfo, all_reduce_sum
from plmkit.training.objectives import PretrainingObjective
from plmkit.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

SECTIONS = ("model", "tokenizer", "data", "train", "impl")
@dataclass
class DataConfig:
    inputs: list[str] = field(default_factory=list)
    prepared: str | None = None
    doc_boundary: str = "blank_line"
    text_field: str = "text"
    encoding_errors: str = "strict"
    validation_fraction: float = 0.01
    workers: int | None = None
    max_seq_length: int = 128
    nsp: bool = True
    short_seq_prob: float = 0.1
    mlm_probability: float = 0.15
    whole_word: bool = False
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if not self.inputs and not self.prepared:
            raise PlmkitError("data: give `inputs` (raw text to prepare) or `prepared` (a `plmkit prepare` directory)")
        if not 8 <= self.max_seq_length:
            raise PlmkitError(f"data.max_seq_length must be at least 8, got {self.max_seq_length}")


@dataclass
class TokenizerConfig:
    path: str | None = None
    vocab_size: int = 30522
    lowercase: bool = True
    min_frequency: int = 2


def expand_path(value: str) -> str:
    """`$PLMKIT_DATA/...` → the data folder ($PLMKIT_DATA, default ../shared/data); other variables and ~ too."""
    from plmkit.tasks.base import default_data_dir

    root = str(default_data_dir())
    value = value.replace("${PLMKIT_DATA}", root).replace("$PLMKIT_DATA", root)
    return os.path.expanduser(os.path.expandvars(value))


def model_config_from(section: Any) -> ModelConfig:
    if isinstance(section, str):
        return ModelConfig.from_file(expand_path(section))
    if isinstance(section, dict):
        if "file" in section:
            rest = {k: v for k, v in section.items() if k != "file"}
            return ModelConfig.from_file(expand_path(section["file"])).replace(**rest)
        return ModelConfig.from_dict(section, source="model")
    raise PlmkitError("model: give a model config file or the model fields")


def mlm_evaluator(dataset: Any, collate: Collate, batch_size: int, max_batches: int | None,
                  dist: DistInfo) -> Callable[[nn.Module], dict[str, float]]:
    """Held-out masked-LM loss, perplexity and accuracy (and NSP accuracy): running sums, never all logits.
    The masks are fixed per example, so every evaluation scores the same positions."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        sums = torch.zeros(5, dtype=torch.float64)  # mlm loss sum, masked tokens, correct, nsp correct, pairs
        for batch in iter_eval_batches(dataset, collate, batch_size, max_batches=max_batches, rank=dist.rank,
                                       world_size=dist.world_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch, masked_only=True)
            targets = batch["labels"][batch["labels"] != -100]
            if len(targets):
                sums[0] += float(out.mlm_loss) * len(targets)
                sums[1] += len(targets)
                sums[2] += int((out.prediction_logits.argmax(-1) == targets).sum())
            if "next_sentence_label" in batch:
                sums[3] += int((out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum())
                sums[4] += len(batch["next_sentence_label"])
        sums = all_reduce_sum(sums, dist)
        if sums[1] == 0:
            raise PlmkitError("the validation split has no masked tokens to evaluate; give it more text")
        mlm_loss = float(sums[0] / sums[1])
        metrics = {"mlm_loss": mlm_loss, "perplexity": math.exp(min(mlm_loss, 50.0)),
                   "mlm_accuracy": float(sums[2] / sums[1])}
        if sums[4]:
            metrics["nsp_accuracy"] = float(sums[3] / sums[4])
        return metrics

    return evaluate


def build_tokenizer(cfg: TokenizerConfig, data: DataConfig, output_dir: Path, main: bool) -> Path:
    """The tokenizer directory: the given one, or WordPiece trained on the training text (once; reused on resume)."""
    if cfg.path:
        path = Path(expand_path(cfg.path))
        if not path.is_dir():
            raise PlmkitError(f"tokenizer.path: directory not found: {path}")
        return path
    path = output_dir / "tokenizer"
    if (path / "tokenizer.json").is_file():
        return path
    if not data.inputs:
        raise PlmkitError("tokenizer: give `path`, or train one from data.inputs (data.prepared alone has no text)")
    if main:
        from plmkit.data.corpus import DocumentReader, expand_inputs
        from plmkit.data.tokenizer_train import train_wordpiece

        reader = DocumentReader(expand_inputs([expand_path(p) for p in data.inputs]), doc_boundary=data.doc_boundary,
                                text_field=data.text_field, encoding_errors=data.encoding_errors)
        log.info("training a WordPiece tokenizer (vocab %d) on %s", cfg.vocab_size, ", ".join(data.inputs))
        tokenizer = train_wordpiece(None, cfg.vocab_size, texts=iter(reader), lowercase=cfg.lowercase,
                                    min_frequency=cfg.min_frequency)
        tokenizer.save_pretrained(path)
    return path


def build_corpus(data: DataConfig, tokenizer_dir: Path, output_dir: Path, seed: int, main: bool,
                 progress: bool) -> Path:
    if data.prepared:
        return Path(expand_path(data.prepared))
    path = output_dir / "data"
    if (path / "meta.json").is_file():
        return path
    if main:
        from plmkit.data.prepare import prepare_corpus

        prepare_corpus([expand_path(p) for p in data.inputs], path, tokenizer_dir,
                                 doc_boundary=data.doc_boundary, text_field=data.text_field,
                                 encoding_errors=data.encoding_errors,
                                 split_sentences=data.nsp, num_workers=data.workers,
                                 validation_fraction=data.validation_fraction, seed=seed, progress=progress)
    return path


def pretrain(recipe: dict[str, Any], resume: bool = False) -> tuple[TrainResult, Path]:
    """Run a pretraining recipe (a mapping with the sections above); returns the result and the model directory."""
    unknown = sorted(set(recipe) - set(SECTIONS))
    if unknown:
        raise PlmkitError(f"recipe: unknown section(s) {', '.join(unknown)}; known sections: {', '.join(SECTIONS)}")
    train_cfg = dataclass_from_dict(TrainConfig, recipe.get("train"), "train")
    impl = dataclass_from_dict(ImplConfig, recipe.get("impl"), "impl")
    data = dataclass_from_dict(DataConfig, recipe.get("data"), "data")
    tok_cfg = dataclass_from_dict(TokenizerConfig, recipe.get("tokenizer"), "tokenizer")
    model_cfg = model_config_from(recipe.get("model", "configs/models/bert-mini.yaml"))
    output_dir = Path(train_cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    from plmkit.data.pretraining import PretrainingCollator, PretrainingDataset
    from plmkit.data.shards import PreparedCorpus
    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.models.bert import BertForPreTraining
    from plmkit.training.distributed import barrier, init_distributed

    dist = init_distributed("cuda" if impl.device == "cuda" or (impl.device == "auto" and torch.cuda.is_available())
                            else "cpu")
    tokenizer_dir = build_tokenizer(tok_cfg, data, output_dir, dist.is_main)
    barrier(dist)
    corpus_dir = build_corpus(data, tokenizer_dir, output_dir, train_cfg.seed, dist.is_main, impl.progress)
    barrier(dist)
    tokenizer = load_tokenizer(tokenizer_dir)
    corpus = PreparedCorpus(corpus_dir)
    corpus.check_tokenizer(tokenizer_dir)
    if data.max_seq_length > model_cfg.max_position_embeddings:
        raise PlmkitError(f"data.max_seq_length {data.max_seq_length} exceeds the model's max_position_embeddings "
                          f"{model_cfg.max_position_embeddings}")
    model_cfg = model_cfg.replace(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    datasets = {split: PretrainingDataset(corpus, split, max_seq_length=data.max_seq_length, nsp=data.nsp,
                                          short_seq_prob=data.short_seq_prob, seed=train_cfg.seed)
                for split in ("train", "validation")}
    collate = PretrainingCollator(tokenizer, mlm_probability=data.mlm_probability, whole_word=data.whole_word)
    log.info("pretraining %s: %d training and %d validation sequences of up to %d tokens", output_dir,
             len(datasets["train"]), len(datasets["validation"]), data.max_seq_length)

    torch.manual_seed(train_cfg.seed)
    model = BertForPreTraining(model_cfg)
    model.init_weights()
    evaluator = mlm_evaluator(datasets["validation"], collate, data.eval_batch_size, train_cfg.eval_max_batches,
                              dist) if len(datasets["validation"]) else None
    trainer = Trainer(model, train_cfg, train_data=datasets["train"], collate=collate,
                      objective=PretrainingObjective(), evaluator=evaluator, impl=impl)
    result = trainer.fit(resume=resume)
    model_dir = output_dir / "model"
    if dist.is_main:
        trainer.model.save_pretrained(model_dir, tokenizer=tokenizer)
        log.info("saved %s (%s parameters) after %d steps", model_dir, f"{model.num_parameters:,}", result.step)
    return result, model_dir


def pretrain_from_file(path: str | Path | None, overrides: list[str] = (), resume: bool = False):
    return pretrain(load_recipe(path, overrides, sections=SECTIONS), resume=resume)
