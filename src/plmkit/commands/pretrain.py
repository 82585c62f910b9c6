"""`plmkit pretrain --config RECIPE [--resume] [section.key=value ...]`: pretrain a language model from a recipe.

The recipe's model decides the objective: a BERT encoder is pretrained with masked LM (+ next-sentence prediction),
a decoder (`model.style: gpt2` or `llama`, i.e. `causal: true`) with causal LM on packed chunks of the text, an
encoder-decoder (`model.style: t5` or `bart`, i.e. `is_encoder_decoder: true`) with T5 span corruption. Recipes:
configs/pretrain/bert-mini.yaml, gpt-mini.yaml, t5-mini.yaml; bert-continue.yaml with model.from_pretrained=DIR
continues pretraining an existing model on your text. The sections are described in `plmkit.training.pretrain`.
The result, <train.output_dir>/model, is a Hugging Face model directory.

Under `torchrun --nproc_per_node N -m plmkit pretrain ...` it trains data-parallel; see `plmkit.training.distributed`.
"""

from __future__ import annotations

import argparse

from plmkit.training.pretrain import pretrain_from_file


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("pretrain", help="pretrain a BERT (masked LM), GPT/Llama (causal LM) or T5 (span "
                                   "corruption)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="YAML",
                        help="recipe, e.g. configs/pretrain/bert-mini.yaml, gpt-mini.yaml or t5-mini.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in train.output_dir from its newest intact checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="change recipe values, e.g. train.max_steps=200 train.lr=5e-4")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    result, model_dir = pretrain_from_file(args.config, args.overrides, resume=args.resume)
    line = f"pretrained {result.step} steps ({result.stopped_by}, {result.elapsed_s / 60:.1f} min)"
    if result.eval_metrics:
        line += "; held-out " + ", ".join(f"{k} {v:.4g}" for k, v in result.eval_metrics.items())
    print(line)
    print(f"model: {model_dir}")
    return 0
