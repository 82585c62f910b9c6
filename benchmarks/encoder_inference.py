"""Encoder inference speed: plmkit BertModel vs transformers BertModel (sdpa) on all-MiniLM-L6-v2.

Same weights, same padded inputs, one process; the two are timed in alternation so that machine noise hits
both alike, and the median of the repeats is compared. The ratio is transformers' time / plmkit's time
(> 1.0: plmkit is faster).

    .venv/bin/python benchmarks/encoder_inference.py [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import plmkit
from plmkit.interop.hub import offline_model_dir

FALLBACK_SENTENCES = [
    "A man is playing a guitar on the stage.", "The new movie is awesome, I loved every minute of it.",
    "Stocks fell sharply on Monday after the report.", "她今天去北京看望了她的父母。",
    "Crème brûlée is a French dessert 🍮.",
    "It was a dark and stormy night; the rain fell in torrents, except at occasional intervals.",
]


def sentences(n: int) -> list[str]:
    data = Path(os.environ.get("PLMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    sst2 = data / "glue" / "SST-2" / "dev.tsv"
    if sst2.is_file():
        lines = [line.split("\t")[0] for line in sst2.read_text(encoding="utf-8").splitlines()[1:]]
    else:
        lines = FALLBACK_SENTENCES
    return [lines[i % len(lines)] for i in range(n)]


def time_once(model, inputs) -> float:
    t0 = time.perf_counter()
    model(**inputs)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--padded", action="store_true",
                        help="turn plmkit's unpadding off (encoder.unpad = False), to see what it buys")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    try:
        path = offline_model_dir()
    except plmkit.PlmkitError as e:
        sys.exit(str(e))
    tok = plmkit.BertTokenizer.from_pretrained(path)
    ours = plmkit.BertModel.from_pretrained(path).eval()
    ours.encoder.unpad = not args.padded
    theirs = transformers.BertModel.from_pretrained(path, attn_implementation="sdpa").eval()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, plmkit unpad={ours.encoder.unpad}")
    print(f"{'batch':>5} {'tokens':>7} {'plmkit ms':>10} {'hf ms':>10} {'ratio hf/plmkit':>16}")
    for batch in args.batches:
        inputs = dict(tok(sentences(batch), padding=True, truncation=True, max_length=128, return_tensors="pt"))
        ours_t, theirs_t = [], []
        with torch.inference_mode():
            a = ours(**inputs).last_hidden_state
            b = theirs(**inputs).last_hidden_state
            real = inputs["attention_mask"].bool()  # padded positions are zeros in plmkit (unpadded path)
            diff = (a[real] - b[real]).abs().max().item()
            for i in range(args.warmup + args.repeats):
                # alternate the order so neither always runs on a warmer cache
                pair = (time_once(ours, inputs), time_once(theirs, inputs)) if i % 2 == 0 else \
                    tuple(reversed((time_once(theirs, inputs), time_once(ours, inputs))))
                if i >= args.warmup:
                    ours_t.append(pair[0])
                    theirs_t.append(pair[1])
        mo, mt = statistics.median(ours_t), statistics.median(theirs_t)
        print(f"{batch:>5} {inputs['input_ids'].numel():>7} {mo * 1e3:>10.2f} {mt * 1e3:>10.2f} {mt / mo:>16.3f}"
              f"   (max |diff| {diff:.1e})")


if __name__ == "__main__":
    main()
