"""`plmkit generate`: continue prompts with a causal LM, or generate from sources with an encoder-decoder (T5, BART,
a plmkit translation or summarization model): greedy, sampling or beam search."""

from __future__ import annotations

import argparse

from plmkit.errors import PlmkitError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("generate", help="generate text with a causal LM or an encoder-decoder",
                                   description=__doc__)
    parser.add_argument("--model", required=True, metavar="DIR|FILE.gguf",
                        help="a GPT-2/Llama/T5/BART directory (with its tokenizer) or a llama.cpp .gguf file")
    parser.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                        help="a prompt (repeat for a batch)")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the model's "
                        "chat template (instruct models)")
    parser.add_argument("--system", metavar="TEXT", help="with --chat: a system message")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="default: 64")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, metavar="T")
    parser.add_argument("--top-k", type=int, metavar="K")
    parser.add_argument("--top-p", type=float, metavar="P")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search with N beams")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, metavar="X")
    parser.add_argument("--stop", action="append", metavar="TEXT", help="stop a continuation at this text (repeat)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for --do-sample (default: 0)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from plmkit.generation import apply_chat_template, generate
    from plmkit.models.decoder import load_causal_lm
    from plmkit.pipelines import is_seq2seq_dir

    if Path(args.model).is_dir() and is_seq2seq_dir(Path(args.model)):
        return _run_seq2seq(args)
    model, tokenizer = load_causal_lm(args.model)
    if tokenizer is None:
        raise PlmkitError(f"{args.model}: no tokenizer files next to the model")
    prompts = args.prompt
    if args.chat:
        system = [{"role": "system", "content": args.system}] if args.system else []
        prompts = [apply_chat_template(tokenizer, [*system, {"role": "user", "content": p}]) for p in prompts]
    out = generate(model, prompts=prompts, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens,
                   do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   num_beams=args.num_beams, repetition_penalty=args.repetition_penalty, stop_strings=args.stop,
                   generator=torch.Generator().manual_seed(args.seed))
    # The prompts are left-padded to one width: what follows it is generated.
    width = max(len(tokenizer.encode(p)) for p in prompts)
    for i, (prompt, row) in enumerate(zip(args.prompt, out[:, width:].tolist(), strict=True)):
        if len(prompts) > 1:
            print(f"=== {i + 1}: {prompt}")
        print(tokenizer.decode(row, skip_special_tokens=True))
    return 0


def _run_seq2seq(args: argparse.Namespace) -> int:
    """Each --prompt is a source; print what the encoder-decoder generates from it."""
    import torch

    from plmkit.data.tokenizer import load_tokenizer
    from plmkit.models.encoder_decoder import Seq2SeqLM

    if args.chat:
        raise PlmkitError("--chat is for causal instruct models, not encoder-decoders")
    model = Seq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    out = model.generate(prompts=args.prompt, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens,
                         do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         num_beams=args.num_beams, repetition_penalty=args.repetition_penalty, stop_strings=args.stop,
                         generator=torch.Generator().manual_seed(args.seed))
    for i, (prompt, row) in enumerate(zip(args.prompt, out[:, 1:].tolist(), strict=True)):
        if len(args.prompt) > 1:
            print(f"=== {i + 1}: {prompt}")
        print(tokenizer.decode(row, skip_special_tokens=True).strip())
    return 0
