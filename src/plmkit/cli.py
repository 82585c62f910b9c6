"""The `plmkit` command line: one argparse parser, one subcommand per module in `plmkit.commands`."""

from __future__ import annotations

import argparse
import logging
import sys

from plmkit.commands import (
    demo,
    evaluate,
    finetune,
    generate,
    info,
    predict,
    prepare,
    pretrain,
    score,
    search,
    tokenizer,
)
from plmkit.errors import PlmkitError

# Every verb by name; each module has `add_parser(subparsers)` and sets `func` to its `run(args) -> int`.
COMMANDS = {"info": info, "tokenizer": tokenizer, "prepare": prepare, "pretrain": pretrain, "finetune": finetune,
            "evaluate": evaluate, "predict": predict, "score": score, "generate": generate, "search": search,
            "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plmkit", description="Build, pretrain, fine-tune, evaluate and use "
                                     "Transformer language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except PlmkitError as e:
        # Bad input is the user's to fix: one line, no stack of internal frames.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
