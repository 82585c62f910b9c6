"""`plmkit demo`: the main job end to end, offline — train a tokenizer, pretrain a small BERT, fill masks, fine-tune,
evaluate, predict, and semantic search with a pretrained BERT (see `plmkit.demo`)."""

from __future__ import annotations

import argparse

from plmkit.demo import run_demo


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="run the main job end to end, offline", description=__doc__)
    parser.add_argument("--data", metavar="DIR", help="a data folder (e.g. ../shared/data): pretrain on its "
                        "Gutenberg books and fine-tune on SST-2 instead of the text that ships with Python")
    parser.add_argument("--workdir", metavar="DIR", help="where to write the runs (default: a new temporary folder)")
    parser.add_argument("--pretrain-minutes", type=float, default=2.0, metavar="M")
    parser.add_argument("--finetune-minutes", type=float, default=1.5, metavar="M")
    parser.add_argument("--search-model", metavar="DIR",
                        help="sentence-embedding BERT (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    run_demo(args.data, args.workdir, pretrain_minutes=args.pretrain_minutes, finetune_minutes=args.finetune_minutes,
             search_model=args.search_model, progress=args.progress)
    return 0
