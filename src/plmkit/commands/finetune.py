"""`plmkit finetune --task sst2 --model DIR [--data-dir DIR] [--output DIR] [--seeds 1,2,3] [section.key=value ...]`.

Fine-tunes the task's head on a pretrained plmkit or Hugging Face BERT directory (T5/BART for translation and
summarization), keeps the best checkpoint by the task's metric and writes it to <output>/model (with the labels in
its config.json). Overrides use the recipe's sections: `train.lr=5e-5 train.batch_size=16 data.epochs=2
data.max_length=256 task.train_articles=38`. Sequence-to-sequence tasks can also start from scratch:
`model.config.hidden_size=256 ... model.tokenizer.vocab_size=8000` (see configs/finetune/).
"""

from __future__ import annotations

import argparse
import json

from plmkit.errors import PlmkitError
from plmkit.training.config import load_recipe
from plmkit.training.finetune import SECTIONS, finetune


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("finetune", help="fine-tune a pretrained model on a task", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", help="task name (sst2, cola, mrpc, stsb, qnli, conll2003, squad, multi30k, "
                        "bbc-summarization, csv, ...)")
    parser.add_argument("--model", help="pretrained model directory (plmkit or Hugging Face BERT, T5, BART)")
    parser.add_argument("--data-dir", help="the task's files (default: $PLMKIT_DATA or ../shared/data, else "
                        "the Hugging Face hub)")
    parser.add_argument("--output", help="run directory (default: runs/<task>)")
    parser.add_argument("--config", metavar="YAML", help="a recipe with task/model/data/train/impl sections")
    parser.add_argument("--seeds", help="comma-separated seeds: one run each, the median is reported")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    parser.set_defaults(func=run)
    return parser


def recipe_from_args(args: argparse.Namespace) -> dict:
    recipe = load_recipe(args.config, args.overrides, sections=SECTIONS)
    if args.task:
        recipe.setdefault("task", {})["name"] = args.task
    if args.model:
        recipe["model"] = args.model
    if args.data_dir:
        recipe.setdefault("data", {})["data_dir"] = args.data_dir
    if args.output:
        recipe.setdefault("train", {})["output_dir"] = args.output
    return recipe


def parse_seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise PlmkitError(f"--seeds: expected comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    result = finetune(recipe_from_args(args), seeds=parse_seeds(args.seeds))
    if len(result.per_seed) > 1:
        for i, metrics in enumerate(result.per_seed):
            print(f"seed run {i + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        median = result.metrics[result.main_metric]
        print(f"median {result.main_metric} over {len(result.per_seed)} seeds: {median:.4f}")
    print(json.dumps({k: round(v, 6) for k, v in result.metrics.items()}))
    print(f"model: {result.model_dir}")
    return 0
