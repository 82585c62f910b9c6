"""`plmkit search`: rank the lines of a file by meaning against one or more queries (sentence embeddings)."""

from __future__ import annotations

import argparse
from pathlib import Path

from plmkit.data.text import iter_lines
from plmkit.errors import PlmkitError
from plmkit.interop import resolve_model_dir
from plmkit.similarity import SentenceEncoder


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("search", help="semantic search over the lines of a text file",
                                   description=__doc__)
    parser.add_argument("queries", nargs="+", metavar="QUERY")
    parser.add_argument("--model", required=True, metavar="DIR", help="a BERT sentence-embedding model directory")
    parser.add_argument("--corpus", required=True, metavar="FILE", help="UTF-8 text, one sentence a line")
    parser.add_argument("--top-k", type=int, default=3, metavar="K")
    parser.set_defaults(func=run)
    return parser


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 (or .gz) file, stripped."""
    if not path.is_file():
        raise PlmkitError(f"{path}: no such file")
    lines = [line.strip() for batch in iter_lines([path]) for line in batch]
    if not lines:
        raise PlmkitError(f"{path}: empty file")
    return lines


def run(args: argparse.Namespace) -> int:
    corpus = read_lines(Path(args.corpus))
    encoder = SentenceEncoder.from_pretrained(resolve_model_dir(args.model))
    for query, hits in zip(args.queries, encoder.search(args.queries, corpus, args.top_k), strict=True):
        print(f"query: {query}")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank}. {hit.score:.3f}  {hit.text}")
    return 0
