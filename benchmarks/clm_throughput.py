"""Causal-LM training throughput: plmkit CausalLM vs transformers GPT2LMHeadModel (sdpa), GPT-2 style.

4 layers, hidden 256, 4 heads, intermediate 1024, GPT-2's vocabulary (50,257), learned positions, tied output
matrix; sequences of 256 tokens with no padding, batch 8, fp32, dropout 0 (as GPT-style pretraining runs today;
`--dropout 0.1` is GPT-2's original). One training step = forward, backward, AdamW step, zero_grad. Both models start
from the same weights (the transformers model is built, saved, and both are loaded from that directory) and see the
same batches; every position is a target (labels = input_ids, shifted inside each model), so both score the full
vocabulary at every position. They are timed alternately in one process after warm-up steps, and the medians are
compared: ratio = plmkit tokens/s / transformers tokens/s.

Both optimizers are torch AdamW(lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) with weight decay only on
parameters with p.dim() >= 2, fused kernel (what the transformers Trainer uses with torch >= 2.8). plmkit's levers:
the causal loss computed chunk by chunk together with the output matmul (`return_logits=False`: the (B*T, V) logits,
their log-softmax and their gradient are never held; the gradients come out of the forward pass), SDPA with
`is_causal` and no mask, no dropout modules at p = 0, tanh-GELU as one kernel (transformers' "gelu_new" is a chain of
elementwise ops).

    .venv/bin/python benchmarks/clm_throughput.py [--steps 5] [--warmup 2] [--batch 8] [--seq 256] [--profile 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
from timing import profile, step_fn  # noqa: E402  (benchmarks/ is the script directory)
from torch import nn

from plmkit.models.decoder import CausalLM

GPT2_SMALLISH = dict(vocab_size=50257, n_embd=256, n_layer=4, n_head=4, n_inner=1024, n_positions=1024)


def make_batches(n: int, batch: int, seq: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        out.append({"input_ids": ids, "labels": ids})
    return out


def adamw(model: nn.Module) -> torch.optim.AdamW:
    """Weight decay exactly for p.dim() >= 2; tied weights appear once (parameters() de-duplicates)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, fused=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.0, help="resid/embd/attn dropout of both models")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full-logits", action="store_true", help="plmkit materialises the logits, as transformers")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after timing, profile this many steps of each model and print the top ops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(**GPT2_SMALLISH, resid_pdrop=args.dropout, embd_pdrop=args.dropout,
                                     attn_pdrop=args.dropout)
    with tempfile.TemporaryDirectory() as tmp:
        transformers.GPT2LMHeadModel(config).save_pretrained(tmp)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="sdpa")
        ours = CausalLM.from_pretrained(tmp)
    batches = make_batches(args.warmup + args.steps + args.profile, args.batch, args.seq, config.vocab_size)

    theirs.eval(), ours.eval()  # same weights, same math: the losses agree
    with torch.no_grad():
        diff = (theirs(**batches[0]).loss - ours(**batches[0], return_logits=args.full_logits).loss).abs().item()
    theirs.train(), ours.train()
    ours_step = step_fn(ours, adamw(ours), return_logits=args.full_logits)
    theirs_step = step_fn(theirs, adamw(theirs))

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; loss difference at init {diff:.1e}")
    t0 = time.perf_counter()
    for batch in batches[:args.warmup]:
        ours_step(batch)
        theirs_step(batch)
    print(f"warm-up ({args.warmup} steps each): {time.perf_counter() - t0:.1f} s")
    ours_t, theirs_t = [], []
    for i, batch in enumerate(batches[args.warmup:args.warmup + args.steps]):
        if i % 2:  # alternate who goes first, so neither always runs on a cache the other warmed
            theirs_t.append(theirs_step(batch))
            ours_t.append(ours_step(batch))
        else:
            ours_t.append(ours_step(batch))
            theirs_t.append(theirs_step(batch))

    tokens = args.batch * args.seq
    ours_s, theirs_s = statistics.median(ours_t), statistics.median(theirs_t)
    print(f"{'model':<14} {'step ms':>9} {'tokens/s':>10}   (median of {args.steps}; all steps ms)")
    print(f"{'plmkit':<14} {ours_s * 1e3:>9.1f} {tokens / ours_s:>10.0f}   {[round(t * 1e3) for t in ours_t]}")
    print(f"{'transformers':<14} {theirs_s * 1e3:>9.1f} {tokens / theirs_s:>10.0f}   "
          f"{[round(t * 1e3) for t in theirs_t]}")
    print(f"ratio plmkit/transformers: {theirs_s / ours_s:.2f}x")

    if args.profile:
        rest = batches[args.warmup + args.steps:]
        print(f"\nplmkit, {args.profile} steps:")
        profile(ours_step, rest, 15)
        print(f"\ntransformers, {args.profile} steps:")
        profile(theirs_step, rest, 15)


if __name__ == "__main__":
    main()
