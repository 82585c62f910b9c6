"""Pretraining throughput: plmkit BertForPreTraining vs transformers BertForPreTraining (sdpa), masked-LM + NSP.

BERT-mini (4 layers, hidden 256, 4 heads, intermediate 1024, vocabulary 30,522), sequences of 128 tokens with no
padding, batch 32, fp32. One training step = forward, backward, AdamW step, zero_grad. Both models start from the
same weights (the transformers model is built, saved, and both are loaded from that directory), run in train mode
(dropout on) and see the same batches: [CLS] A [SEP] B [SEP] with 15% of the tokens selected by
`plmkit.objectives.mask_tokens` (80/10/10) and random next-sentence labels. They are timed alternately in one
process (warm-up steps first), and the medians are compared: ratio = plmkit tokens/s / transformers tokens/s.

Both optimizers are torch AdamW(lr 1e-4, betas (0.9, 0.999), eps 1e-6, weight_decay 0.01) with weight decay only
on parameters with p.dim() >= 2. plmkit uses the fused kernel; transformers gets what its Trainer uses by default
with torch >= 2.8, also the fused kernel (`--hf-optimizer default` gives it torch's default implementation instead,
which is slower on CPU). plmkit's own levers: masked-only decoding (the MLM head scores the ~15% masked positions
only; the loss is identical) with the fused loss (`return_logits=False`: the logits are computed transposed in
one reused buffer and the gradients come out of the forward pass, as `plmkit.pretrain` trains), the sparse
gradient of the tied token lookup, the cheaper CPU dropout mask, fused AdamW, optionally `--compile`
(torch.compile of the encoder).

Model-FLOPs utilisation (MFU) = model FLOPs per second / the machine's fp32 matmul rate, where model FLOPs per step
= 6 * N * B * T + 12 * L * B * T^2 * C: N the non-embedding parameters (everything but the token, position and
segment embeddings; the decoder is tied to the token embedding and so not counted), B * T the tokens, and the second
term attention's two (T x T) matmuls per layer, forward and backward. The matmul rate is the median of a few
2048 x 2048 fp32 matmuls. A second figure also counts the masked-only decoder, 6 * V * C * (masked tokens).

    .venv/bin/python benchmarks/pretrain_throughput.py [--steps 5] [--warmup 2] [--compile] [--profile 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch
from timing import matmul_times, profile, step_fn  # noqa: E402  (benchmarks/ is the script directory)
from torch import nn

import plmkit
from plmkit.objectives import mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103  # bert-base-uncased's special ids
FIRST_WORD_ID = 999  # ids below are special, [unused] or single characters in bert-base-uncased
MINI = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)


def make_batches(n: int, batch: int, seq: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """n batches of [CLS] A [SEP] B [SEP] (no padding), 15% masked, random NSP labels."""
    g = torch.Generator().manual_seed(seed)
    cut = seq // 2
    batches = []
    for _ in range(n):
        ids = torch.randint(FIRST_WORD_ID, vocab, (batch, seq), generator=g)
        ids[:, 0], ids[:, cut], ids[:, -1] = CLS, SEP, SEP
        special = (ids == CLS) | (ids == SEP)
        masked, labels = mask_tokens(ids, special, vocab_size=vocab, mask_token_id=MASK,
                                     special_ids=[PAD, UNK, CLS, SEP, MASK], generator=g)
        token_type_ids = torch.zeros_like(ids)
        token_type_ids[:, cut + 1:] = 1
        batches.append({"input_ids": masked, "attention_mask": torch.ones_like(ids), "token_type_ids": token_type_ids,
                        "labels": labels, "next_sentence_label": torch.randint(0, 2, (batch,), generator=g)})
    return batches


def adamw(model: nn.Module, fused: bool | None) -> torch.optim.AdamW:
    """Weight decay exactly for p.dim() >= 2; tied weights appear once (named_parameters de-duplicates)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-6, fused=fused)


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    return 2 * n**3 / statistics.median(matmul_times(n, n, n, repeats))


def model_flops(model: plmkit.BertForPreTraining, batch: int, seq: int) -> float:
    """6 * N * B * T + 12 * L * B * T^2 * C (see the module docstring)."""
    embed = model.encoder.embed
    embedding = sum(m.weight.numel() for m in (embed.token, embed.position, embed.segment) if m is not None)
    n = model.num_parameters - embedding
    cfg = model.config
    return 6 * n * batch * seq + 12 * cfg.num_layers * batch * seq**2 * cfg.hidden_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile plmkit's encoder")
    parser.add_argument("--full-decoding", action="store_true", help="plmkit scores every position, as transformers")
    parser.add_argument("--hf-optimizer", choices=["fused", "default"], default="fused",
                        help="fused: what the transformers Trainer uses (torch >= 2.8); default: torch's default")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after timing, profile this many steps of each model and print the top ops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        transformers.BertForPreTraining(transformers.BertConfig(**MINI)).save_pretrained(tmp)
        theirs = transformers.BertForPreTraining.from_pretrained(tmp, attn_implementation="sdpa")
        ours = plmkit.BertForPreTraining.from_pretrained(tmp)
    batches = make_batches(args.warmup + args.steps + args.profile, args.batch, args.seq, MINI["vocab_size"])

    # Same weights, same math: the losses agree with dropout off and full decoding.
    theirs.eval(), ours.eval()
    with torch.no_grad():
        diff = (theirs(**batches[0]).loss - ours(**batches[0]).loss).abs().item()
    theirs.train(), ours.train()

    if args.compile:
        ours.encoder.compile()  # in place: parameter names and checkpoints are unchanged
    ours_step = step_fn(ours, adamw(ours, fused=True), masked_only=not args.full_decoding,
                        return_logits=args.full_decoding)
    theirs_step = step_fn(theirs, adamw(theirs, fused=True if args.hf_optimizer == "fused" else None))

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; loss difference at init {diff:.1e}")
    t0 = time.perf_counter()
    for batch in batches[:args.warmup]:
        ours_step(batch)
        theirs_step(batch)
    print(f"warm-up ({args.warmup} steps each{', with compilation' if args.compile else ''}): "
          f"{time.perf_counter() - t0:.1f} s")
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
    rate = matmul_flops()
    flops = model_flops(ours, args.batch, args.seq)
    masked = statistics.mean(int((b["labels"] != -100).sum()) for b in batches)
    decoder = 6 * MINI["vocab_size"] * MINI["hidden_size"] * masked
    print(f"{'model':<14} {'step ms':>9} {'tokens/s':>10}")
    print(f"{'plmkit':<14} {ours_s * 1e3:>9.1f} {tokens / ours_s:>10.0f}")
    print(f"{'transformers':<14} {theirs_s * 1e3:>9.1f} {tokens / theirs_s:>10.0f}")
    print(f"ratio plmkit/transformers: {theirs_s / ours_s:.2f}x")
    print(f"fp32 matmul rate {rate / 1e9:.1f} GFLOP/s; plmkit model FLOPs {flops / 1e9:.1f} GFLOP/step -> "
          f"MFU {flops / ours_s / rate:.1%} (with the masked-only decoder, {(flops + decoder) / ours_s / rate:.1%})")

    if args.profile:
        rest = batches[args.warmup + args.steps:]
        print(f"\nplmkit, {args.profile} steps:")
        profile(ours_step, rest, 15)
        print(f"\ntransformers, {args.profile} steps:")
        profile(theirs_step, rest, 15)


if __name__ == "__main__":
    main()
