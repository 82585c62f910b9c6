"""`plmkit tokenizer train`: train a WordPiece or byte-level BPE tokenizer and save it as a directory."""

from __future__ import annotations

import argparse

from plmkit.data.tokenizer_train import train_bytelevel_bpe, train_wordpiece


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `tokenizer` verb (sub-verb `train`) on the CLI's subparsers."""
    parser = subparsers.add_parser("tokenizer", help="train tokenizers", description=__doc__)
    verbs = parser.add_subparsers(dest="tokenizer_command", metavar="{train}", required=True)
    train = verbs.add_parser("train", help="train a tokenizer on text files (plain or .gz)")
    train.add_argument("--files", nargs="+", required=True, metavar="F", help="UTF-8 text files, one text a line")
    train.add_argument("--vocab-size", type=int, required=True, metavar="N")
    train.add_argument("--out", required=True, metavar="DIR", help="directory to save the tokenizer to")
    train.add_argument("--kind", choices=["wordpiece", "bpe"], default="wordpiece",
                       help="wordpiece (BERT) or bpe (GPT-2 byte-level); default: wordpiece")
    train.add_argument("--min-frequency", type=int, default=2, metavar="N", help="default: 2")
    train.add_argument("--no-lowercase", dest="lowercase", action="store_false",
                       help="keep case (wordpiece only; BPE never lowercases)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train, save, and print a one-line summary; returns the exit status."""
    if args.kind == "bpe":
        tokenizer = train_bytelevel_bpe(args.files, args.vocab_size, min_frequency=args.min_frequency)
    else:
        tokenizer = train_wordpiece(args.files, args.vocab_size, lowercase=args.lowercase,
                                    min_frequency=args.min_frequency)
    tokenizer.save_pretrained(args.out)
    print(f"trained {args.kind} tokenizer: vocab size {len(tokenizer)}, saved to {args.out}")
    return 0
