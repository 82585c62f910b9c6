"""`plmkit evaluate --task sst2 --model DIR [--data-dir DIR] [--split validation]`: the task's metrics, as JSON."""

from __future__ import annotations

import argparse
import json

from plmkit.training.config import apply_override
from plmkit.training.finetune import default_max_length


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help="evaluate a model on a task's split", description=__doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", required=True, help="a fine-tuned model directory")
    parser.add_argument("--data-dir")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("options", nargs="*", metavar="task.key=value",
                        help="task options, e.g. task.train_articles=38")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.evaluation import evaluate
    from plmkit.interop import resolve_model_dir
    from plmkit.tasks import get_task

    options: dict = {}
    for item in args.options:
        apply_override(options, item)
    task = get_task(args.task, **options.get("task", {}))
    model_dir = resolve_model_dir(args.model)
    model = task.build_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    examples = task.read(args.data_dir, args.split)
    label2id = {label: i for i, label in enumerate(model.config.labels)}  # the model's labels, as trained
    max_length = args.max_length or default_max_length(task, model.config)
    features = task.featurize(examples, tokenizer, label2id, max_length=max_length)
    metrics = evaluate(model, task, examples, features, batch_size=args.batch_size)
    print(json.dumps({"task": task.name, "split": args.split, "examples": len(examples),
                      **{k: round(v, 6) for k, v in metrics.items()}}))
    return 0
