"""Fine-tuning quality: plmkit fine-tunes the offline all-MiniLM-L6-v2 on the real tasks and reports the metric
people report, next to the bar each must reach.

    .venv/bin/python benchmarks/finetune_quality.py [--tasks stsb,mrpc,cola,sst2,conll2003,squad] [--seeds 1]

Every run is `plmkit.training.finetune.finetune` (what `plmkit finetune` calls) on the full training set with the
settings below, evaluated on the dev set (CoNLL-2003: test set as well). STS-B is also scored zero-shot (cosine
of mean-pooled embeddings, no training). SQuAD: the shared data has only the v1.1 dev file (48 articles), so it is
split by article: the first 38 train, the last 10 evaluate. (The side-by-side SQuAD run with `transformers` on
the same split is not written yet.) Results go to stdout, one line per task, and with --json to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# task -> (recipe overrides, bar on the main metric or None, scale of the metric for the table)
TASKS = {
    "stsb": ({"data": {"epochs": 4}, "train": {"lr": 5e-5, "batch_size": 16}}, ("spearman", 0.86)),
    "mrpc": ({"data": {"epochs": 5}, "train": {"lr": 5e-5, "batch_size": 16}}, ("f1", 0.87)),
    "cola": ({"data": {"epochs": 5}, "train": {"lr": 5e-5, "batch_size": 32}}, ("mcc", 0.35)),
    "sst2": ({"data": {"epochs": 2}, "train": {"lr": 5e-5, "batch_size": 32}}, ("accuracy", 0.90)),
    "conll2003": ({"data": {"epochs": 3}, "train": {"lr": 5e-5, "batch_size": 32}}, ("f1", 0.87)),
    "squad": ({"task": {"train_articles": 38}, "data": {"epochs": 2, "max_length": 384, "doc_stride": 128},
               "train": {"lr": 5e-5, "batch_size": 32}}, ("f1", None)),
}


def data_root() -> Path:
    return Path(os.environ.get("PLMKIT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def run_task(name: str, model_dir: Path, out: Path, seeds: list[int]) -> dict:
    from plmkit.training.finetune import finetune

    overrides, _ = TASKS[name]
    recipe = {"task": {"name": name, **overrides.get("task", {})}, "model": str(model_dir),
              "data": {"data_dir": str(data_root()), **overrides.get("data", {})},
              "train": {"output_dir": str(out / name), "eval_every": 0, "log_every": 100, "warmup_ratio": 0.1,
                        **overrides.get("train", {})},
              "impl": {"progress": False, "tensorboard": False}}
    t0 = time.perf_counter()
    result = finetune(recipe, seeds=seeds)
    metrics = dict(result.metrics)
    if name == "conll2003":
        metrics.update({f"test_{k}": v for k, v in evaluate_split(name, result.model_dir, "test").items()})
    metrics["minutes"] = (time.perf_counter() - t0) / 60
    return metrics


def evaluate_split(name: str, model_dir: Path, split: str) -> dict:
    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.evaluation import evaluate
    from plmkit.tasks import get_task

    task = get_task(name)
    model = task.build_model(model_dir)
    examples = task.read(data_root(), split)
    label2id = {label: i for i, label in enumerate(model.config.labels)}
    features = task.featurize(examples, load_tokenizer(model_dir), label2id, max_length=128)
    return evaluate(model, task, examples, features)


def zero_shot_stsb(model_dir: Path) -> dict:
    from plmkit.similarity import SentenceEncoder
    from plmkit.tasks import get_task

    task = get_task("stsb")
    return task.zero_shot_evaluate(SentenceEncoder.from_pretrained(model_dir), task.read(data_root(), "validation"))


def main() -> None:
    from plmkit.interop.hub import offline_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0", help="comma-separated; the median is reported")
    parser.add_argument("--out", default="/tmp/plmkit-finetune-quality")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    model_dir = offline_model_dir()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.tasks.split(","):
        metrics = run_task(name, model_dir, Path(args.out), seeds)
        key, bar = TASKS[name][1]
        value = metrics[key]
        verdict = "" if bar is None else ("meets" if value >= bar else "BELOW") + f" bar {bar}"
        rows.append({"task": name, **metrics, "main": key, "bar": bar})
        print(f"{name:<10} {key} {value:.4f} {verdict}  ({metrics['minutes']:.1f} min)  "
              + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k not in (key, "minutes")), flush=True)
        if name == "stsb":
            zs = zero_shot_stsb(model_dir)
            rows.append({"task": "stsb-zero-shot", **zs})
            print(f"stsb zero-shot (cosine of mean-pooled embeddings): spearman {zs['spearman']:.4f}, "
                  f"pearson {zs['pearson']:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
