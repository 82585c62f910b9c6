"""`plmkit prepare`: tokenize raw text into a sharded pretraining corpus (token-id memmaps + sentence index)."""

from __future__ import annotations

import argparse

from plmkit.data.prepare import DEFAULT_SHARD_TOKENS, prepare_corpus


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `prepare` verb on the CLI's subparsers."""
    parser = subparsers.add_parser("prepare", help="tokenize a text corpus into shards for pretraining",
                                   description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="text files (plain or .gz), folders, glob patterns, or JSONL (.jsonl, .jsonl.gz)")
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write the prepared corpus to")
    parser.add_argument("--doc-boundary", choices=["blank_line", "line"], default="blank_line",
                        help="documents are blocks between blank lines, or single lines (default: blank_line)")
    parser.add_argument("--text-field", default="text", metavar="NAME", help="JSONL text field (default: text)")
    parser.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                        help="invalid UTF-8: stop with an error naming the line (strict, default) or read it with "
                             "U+FFFD (replace)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="tokenizing processes (default: the CPU count)")
    parser.add_argument("--validation-fraction", type=float, default=0.01, metavar="F",
                        help="share of documents for the validation split (default: 0.01)")
    parser.add_argument("--validation-docs", type=int, default=None, metavar="N",
                        help="exactly N validation documents instead of a fraction")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, metavar="N",
                        help=f"tokens per shard, at most (default: {DEFAULT_SHARD_TOKENS})")
    parser.add_argument("--no-sentences", dest="split_sentences", action="store_false",
                        help="do not split documents into sentences (enough for packed segments, not for NSP)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Prepare the corpus and print a one-line summary; returns the exit status."""
    summary = prepare_corpus(args.inputs, args.output, args.tokenizer, doc_boundary=args.doc_boundary,
                             text_field=args.text_field, encoding_errors=args.encoding_errors,
                             split_sentences=args.split_sentences,
                             num_workers=args.workers, shard_tokens=args.shard_tokens,
                             validation_fraction=args.validation_fraction, validation_docs=args.validation_docs,
                             seed=args.seed, progress=not args.quiet)
    print(summary)
    return 0
