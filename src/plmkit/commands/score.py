"""`plmkit score`: log-probability and perplexity of texts under a causal LM, or the perplexity of a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from plmkit.errors import PlmkitError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("score", help="log-probabilities and perplexity under a causal LM",
                                   description=__doc__)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score, one result each")
    parser.add_argument("--model", required=True, metavar="DIR|FILE.gguf",
                        help="a Hugging Face GPT-2/Llama directory (with its tokenizer) or a llama.cpp .gguf file")
    parser.add_argument("--file", type=Path, metavar="F", help="the perplexity of this UTF-8 file (sliding window)")
    parser.add_argument("--per-token", action="store_true", help="also print each token's log-probability")
    parser.add_argument("--no-prefix", dest="add_prefix", action="store_false",
                        help="do not put the bos (else eos) token before a text; its first token is then unscored")
    parser.add_argument("--max-length", type=int, metavar="N", help="--file window, default: the model's context "
                        "(at most 1024)")
    parser.add_argument("--stride", type=int, metavar="N", help="--file window step, default: half the window")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from plmkit.generation import perplexity, score
    from plmkit.models.decoder import load_causal_lm

    if not args.texts and args.file is None:
        raise PlmkitError("nothing to score: give TEXT arguments or --file F")
    model, tokenizer = load_causal_lm(args.model)
    if tokenizer is None:
        raise PlmkitError(f"{args.model}: no tokenizer files next to the model")
    for result in score(model, tokenizer, args.texts, add_prefix=args.add_prefix):
        print(f"text: {result.text}")
        print(f"  tokens {result.num_tokens}  log-prob {result.total_logprob:.4f}  "
              f"perplexity {result.perplexity:.3f}")
        if args.per_token:
            for token, logprob in zip(result.tokens, result.token_logprobs, strict=True):
                print(f"    {logprob:9.4f}  {token!r}")
    if args.file is not None:
        result = perplexity(model, tokenizer, args.file, max_length=args.max_length, stride=args.stride,
                            add_prefix=args.add_prefix)
        print(f"file: {args.file}")
        print(f"  tokens {result.num_tokens}  nll/token {result.nll:.4f}  perplexity {result.perplexity:.3f}")
    return 0
