"""Fine-tuning a task from one recipe: task data → features → the task's head on a pretrained encoder → the Trainer
(best checkpoint by the task's metric) → a model directory with the labels in its config.

A recipe has the sections `task` (`name` + the task's options, e.g. SQuAD's `train_articles`), `model` (a model
directory: plmkit or Hugging Face; or, to train from scratch, `{config: {...}, tokenizer: {vocab_size: ...}}`: a
tokenizer trained on the task's training texts and a fresh model of that config — sequence-to-sequence tasks),
`data` (`FinetuneData`), `train` (`TrainConfig`; `epochs` here turns into `max_steps`, and `eval_every: epoch`
into the steps of one epoch) and `impl`. The command line builds the same mapping from flags:

    plmkit finetune --task sst2 --model DIR [--data-dir DIR] [--output DIR] [--seeds 1,2,3] train.lr=3e-5 ...
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from plmkit.errors import PlmkitError
from plmkit.training.config import ImplConfig, TrainConfig, dataclass_from_dict
from plmkit.training.objectives import RDropObjective, Seq2SeqObjective, SupervisedObjective
from plmkit.training.trainer import Trainer

log = logging.getLogger(__name__)

SECTIONS = ("task", "model", "data", "train", "impl")
RDROP_KINDS = ("sequence-classification", "token-classification")  # the heads with logits to compare
# Defaults that differ from TrainConfig's (which are pretraining's): BERT's fine-tuning recipe.
TRAIN_DEFAULTS = {"lr": 3e-5, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01, "adam_eps": 1e-8,
                  "log_every": 50, "keep_last": 1, "max_steps": 1}


@dataclass
class FinetuneData:
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    max_length: int | None = None  # default: 384 for question answering, 128 otherwise
    doc_stride: int | None = None
    max_target_length: int | None = None  # sequence to sequence: the target's (default: max_length)
    epochs: float = 3.0
    eval_batch_size: int = 64
    group_by_length: bool = True
    max_train_examples: int | None = None


@dataclass
class FinetuneResult:
    metrics: dict[str, float]
    model_dir: Path
    main_metric: str
    per_seed: list[dict[str, float]] = field(default_factory=list)


def default_max_length(task: Any, config: Any = None) -> int:
    """384 tokens for question answering (question + a window of the context), 512 for a sequence-to-sequence source,
    128 otherwise; never more than the model (`config`, when known) has learned positions for."""
    length = {"question-answering": 384, "text2text": 512}.get(task.kind, 128)
    if config is not None and config.position_embedding == "learned":
        length = min(length, config.max_position_embeddings)
    return length


def _features(task: Any, examples: list, tokenizer: Any, label2id: dict | None, data: FinetuneData,
              config: Any = None) -> list[dict]:
    options: dict[str, Any] = {}
    if data.doc_stride is not None:
        options["doc_stride"] = data.doc_stride
    if data.max_target_length is not None:
        options["max_target_length"] = data.max_target_length
    max_length = data.max_length or default_max_length(task, config)
    return task.featurize(examples, tokenizer, label2id, max_length=max_length, **options)


def finetune(recipe: dict[str, Any], seeds: list[int] | None = None) -> FinetuneResult:
    """Fine-tune and evaluate; with several seeds, one run per seed and the median of the task's main metric
    (the reported model is the run whose main metric is that median, or the nearest to it)."""
    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.evaluation import evaluate
    from plmkit.interop import resolve_model_dir
    from plmkit.tasks import get_task

    unknown = sorted(set(recipe) - set(SECTIONS))
    if unknown:
        raise PlmkitError(f"recipe: unknown section(s) {', '.join(unknown)}; known sections: {', '.join(SECTIONS)}")
    task_section = dict(recipe.get("task") or {})
    if "name" not in task_section:
        raise PlmkitError("task: give the task's name (--task), e.g. sst2")
    task = get_task(task_section.pop("name"), **task_section)
    model_section = recipe.get("model")
    model_path = model_section.get("path") if isinstance(model_section, dict) else model_section
    scratch = model_section if isinstance(model_section, dict) and not model_path else None
    if not model_path and not (scratch and "config" in scratch):
        raise PlmkitError("model: give the pretrained model directory (--model), or model.config (and "
                          "model.tokenizer) to train from scratch")
    if scratch and not hasattr(task, "scratch_config"):
        raise PlmkitError(f"task {task.name!r}: training from scratch (model.config) is for sequence-to-sequence "
                          "tasks; give a pretrained model directory (--model)")
    model_dir = resolve_model_dir(model_path) if model_path else None
    data = dataclass_from_dict(FinetuneData, recipe.get("data"), "data")
    impl = dataclass_from_dict(ImplConfig, recipe.get("impl"), "impl")
    train_section = {**TRAIN_DEFAULTS, **(recipe.get("train") or {})}
    train_section.setdefault("output_dir", f"runs/{task.name}")
    if "best_metric" not in train_section:
        train_section["best_metric"] = task.main_metric

    rdrop_alpha = train_section.get("rdrop_alpha", 0.0)
    if rdrop_alpha and task.kind not in RDROP_KINDS:
        raise PlmkitError(f"train.rdrop_alpha is for {' and '.join(RDROP_KINDS)} tasks, not {task.kind}")

    train_examples = task.read(data.data_dir, data.train_split)
    if data.max_train_examples:
        train_examples = train_examples[:data.max_train_examples]
    scratch_config = None
    if scratch:
        unknown = sorted(set(scratch) - {"config", "tokenizer"})
        if unknown:
            raise PlmkitError(f"model: unknown key(s) {', '.join(unknown)}; from scratch it takes config and tokenizer")
        tokenizer = task.train_tokenizer(train_examples, **(scratch.get("tokenizer") or {}))
        scratch_config = task.scratch_config(tokenizer, **scratch["config"])
        log.info("from scratch: a %d-token tokenizer trained on the %d training examples", len(tokenizer),
                 len(train_examples))
    else:
        tokenizer = load_tokenizer(model_dir)
        task.configure(model_dir)  # settings of the model that the features follow (e.g. case marks)
    eval_examples = task.read(data.data_dir, data.eval_split)
    labels = task.label_list(train_examples)
    label2id = {label: i for i, label in enumerate(labels)} if labels else None
    train_features = _features(task, train_examples, tokenizer, label2id, data, scratch_config)
    eval_features = _features(task, eval_examples, tokenizer, label2id, data, scratch_config)
    if not train_features:
        raise PlmkitError(f"task {task.name!r}: the {data.train_split} split has no examples")
    steps_per_epoch = math.ceil(len(train_features) / train_section["batch_size"])
    if "max_steps" not in (recipe.get("train") or {}):
        train_section["max_steps"] = max(1, round(data.epochs * steps_per_epoch))
    if train_section.get("eval_every") == "epoch":  # as transformers' eval_strategy="epoch"
        train_section["eval_every"] = steps_per_epoch
    log.info("task %s: %d training features (%d examples), %d evaluation examples; %d steps", task.name,
             len(train_features), len(train_examples), len(eval_examples), train_section["max_steps"])
    label_key = "start_positions" if task.kind == "question-answering" else "labels"
    label_smoothing = train_section.get("label_smoothing", 0.0)
    if label_smoothing and task.kind != "text2text":
        raise PlmkitError(f"train.label_smoothing is for sequence-to-sequence tasks, not {task.kind}")
    if task.kind == "text2text":
        objective = Seq2SeqObjective(label_smoothing)
    elif rdrop_alpha:
        objective = RDropObjective(rdrop_alpha, label_key)
    else:
        objective = SupervisedObjective(label_key)
    lengths = [len(f["input_ids"]) for f in train_features] if data.group_by_length else None
    output_root = Path(train_section["output_dir"])
    seeds = seeds or [train_section.get("seed", 0)]

    runs = []
    for seed in seeds:
        run_dir = output_root if len(seeds) == 1 else output_root / f"seed-{seed}"
        config = dataclass_from_dict(TrainConfig, {**train_section, "seed": seed, "output_dir": str(run_dir)},
                                     "train")
        torch.manual_seed(seed)
        model = task.build_model(scratch_config or model_dir, labels)
        pad_id = model.config.pad_token_id

        def evaluator(m: Any) -> dict[str, float]:
            return evaluate(m, task, eval_examples, eval_features, batch_size=data.eval_batch_size)

        trainer = Trainer(model, config, train_data=train_features,
                          collate=lambda ex, seeds, pad_id=pad_id: task.collate(ex, pad_token_id=pad_id),
                          objective=objective, evaluator=evaluator,
                          save_model=lambda m, d: m.save_pretrained(d, tokenizer=tokenizer), impl=impl,
                          lengths=lengths)
        trainer.fit()
        best_dir = run_dir / "best"
        metrics = evaluate(task.build_model(best_dir, labels), task, eval_examples, eval_features,
                           batch_size=data.eval_batch_size)
        log.info("seed %d: %s", seed, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        runs.append((metrics, best_dir))

    key = task.main_metric
    median = statistics.median(m[key] for m, _ in runs)
    chosen_metrics, chosen_dir = min(runs, key=lambda r: abs(r[0][key] - median))
    final_dir = output_root / "model"
    if final_dir.exists():
        shutil.rmtree(final_dir)
    shutil.copytree(chosen_dir, final_dir)
    summary = dict(chosen_metrics)
    summary[key] = median
    return FinetuneResult(summary, final_dir, key, [m for m, _ in runs])
