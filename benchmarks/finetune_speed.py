"""Fine-tuning speed: plmkit's Trainer vs the `transformers` Trainer, SST-2, same checkpoint and settings.

Both fine-tune the offline all-MiniLM-L6-v2 (BertForSequenceClassification, a fresh 2-way head) for one epoch on
the same SST-2 training sentences (all 67,349 by default, or the first --max-train-examples), batch 32, AdamW
lr 3e-5, weight decay 0.01, warm-up 10% then linear decay, max length 128, length-grouped batches, seed 0, fp32 on
the CPU; then each is evaluated on the 872 dev sentences. Each runs in its own subprocess (so each one's peak
memory is its own), one after the other in this one command; the table gives training wall-clock (the epoch
only, not loading or evaluation), dev accuracy and peak resident memory, and the speed ratio
transformers' time / plmkit's time (> 1: plmkit is faster). The bar: ≥ 1.5x at equal accuracy (± 0.5 points).

Last, it prints each side's compute floor: the FLOPs of the step's matmuls (projections, feed-forward, attention
scores; forward and backward), counted from the tokenized batches each side runs (plmkit: real tokens only, and the
last layer queries [CLS] alone; transformers: batches padded to their longest sentence, every position through every
layer), divided by this machine's fp32 matmul peak for the matmuls each side runs, measured after both runs on the
same shapes (each shape's fastest of 30 runs): torch's own (MKL on x86) for transformers, and for plmkit the backend
its Trainer picks here (`impl.cpu_matmul=auto`: oneDNN on a CPU not Intel's with AVX-512, where MKL runs AVX2
kernels; see `plmkit.layers.linear`). A side cannot train faster than its floor, so transformers' measured time /
plmkit's floor is the highest ratio this comparison can show on this machine without changing the arithmetic.

With --seeds 0,1,2 the comparison runs once per seed (the order of the two sides alternating from seed to seed,
so that a host slowing over the run weighs on both alike) and prints each seed's row, then the medians: each side's
median time and median dev accuracy, the ratio of the median times and the difference of the median accuracies.
One seed's accuracy on the 872 dev sentences moves by about half a point between runs of the same recipe (dropout
draws), as much as the bar allows, so the medians are the comparison to judge "equal accuracy" by.

With --random-batches both sides draw plain shuffled batches instead (`transformers`' default sampler; plmkit's
`data.group_by_length=false`): transformers pads each batch to its longest sentence, plmkit runs real tokens only.

    .venv/bin/python benchmarks/finetune_speed.py [--max-train-examples N] [--threads N] [--random-batches]
        [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"lr": 3e-5, "batch_size": 32, "weight_decay": 0.01, "warmup_ratio": 0.1, "max_length": 128, "seed": 0}


def data_dir() -> Path:
    root = Path(os.environ.get("PLMKIT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    return root / "glue" / "SST-2"


def read_sst2(split: str, limit: int | None) -> tuple[list[str], list[int]]:
    lines = (data_dir() / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.rsplit("\t", 1) for line in lines if line.strip()]
    rows = rows[:limit] if limit else rows
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def run_plmkit(model_dir: Path, limit: int | None, out: Path, grouped: bool) -> dict:
    from plmkit.training.finetune import finetune

    n = len(read_sst2("train", limit)[0])
    steps = -(-n // SETTINGS["batch_size"])
    recipe = {"task": {"name": "sst2"}, "model": str(model_dir),
              "data": {"data_dir": str(data_dir()), "max_length": SETTINGS["max_length"], "epochs": 1,
                       "max_train_examples": limit, "group_by_length": grouped},
              "train": {"output_dir": str(out), "lr": SETTINGS["lr"], "batch_size": SETTINGS["batch_size"],
                        "weight_decay": SETTINGS["weight_decay"], "warmup_ratio": SETTINGS["warmup_ratio"],
                        "adam_eps": 1e-8, "clip_grad_norm": 1.0, "max_steps": steps, "log_every": 100,
                        "eval_every": 0, "seed": SETTINGS["seed"]},
              "impl": {"progress": False, "tensorboard": False}}
    from plmkit.training.tracking import read_metrics

    result = finetune(recipe)
    # The last training record is written before the evaluation that follows the last step: the epoch alone.
    train_s = read_metrics(out / "metrics.jsonl", "train")[-1]["elapsed_s"]
    return {"train_s": train_s, "accuracy": result.metrics["accuracy"], "steps": steps}


def run_transformers(model_dir: Path, limit: int | None, out: Path, grouped: bool) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts, labels = read_sst2("train", limit)
    dev_texts, dev_labels = read_sst2("dev", None)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, texts, labels):
            enc = tokenizer(texts, truncation=True, max_length=SETTINGS["max_length"])
            self.rows = [{**{k: enc[k][i] for k in enc}, "labels": labels[i]} for i in range(len(texts))]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    train, dev = Rows(texts, labels), Rows(dev_texts, dev_labels)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=SETTINGS["batch_size"],
                             per_device_eval_batch_size=64, learning_rate=SETTINGS["lr"], num_train_epochs=1,
                             weight_decay=SETTINGS["weight_decay"],
                             # transformers 5 has no warmup_ratio: the same count plmkit derives from the ratio
                             warmup_steps=round(SETTINGS["warmup_ratio"] * -(-len(train) // SETTINGS["batch_size"])),
                             optim="adamw_torch_fused", adam_epsilon=1e-8, max_grad_norm=1.0,
                             lr_scheduler_type="linear", seed=SETTINGS["seed"],
                             train_sampling_strategy="group_by_length" if grouped else "random",
                             save_strategy="no", eval_strategy="no", report_to=[], logging_steps=100,
                             disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    # Dev accuracy in a plain loop, in file order: `trainer.predict` under transformers 5 with length-grouped
    # sampling returned the predictions in another order than the dataset's (chance accuracy on a trained model).
    collate, predictions = DataCollatorWithPadding(tokenizer), []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(dev), 64):
            batch = collate([{k: v for k, v in dev[i].items() if k != "labels"}
                             for i in range(start, min(start + 64, len(dev)))])
            predictions.append(model(**batch).logits.argmax(-1).numpy())
    accuracy = float((np.concatenate(predictions) == np.array(dev_labels)).mean())
    return {"train_s": train_s, "accuracy": accuracy, "steps": trainer.state.global_step}


def matmul_peak_gflops(tokens: int, hidden: int, intermediate: int, repeats: int = 30, backend: str = "aten") -> float:
    """This machine's fp32 matmul rate on the step's main shapes (forward and both backward products) by `backend`
    (torch's own dispatch, or oneDNN): the median over the shapes of each one's fastest of `repeats` runs (the
    fastest, so that a neighbour's load on a shared machine cannot raise the floor)."""
    from timing import matmul_times  # benchmarks/ is the script directory (imports torch: only after the workers)

    rates = []
    shapes = ((tokens, hidden, intermediate), (tokens, intermediate, hidden), (tokens, hidden, 3 * hidden),
              (intermediate, tokens, hidden), (hidden, tokens, intermediate))  # (rows, inner, columns)
    for rows, inner, cols in shapes:
        times = matmul_times(rows, inner, cols, repeats, warmup=3, backend=backend)
        rates.append(2 * rows * inner * cols / min(times) / 1e9)
    return sorted(rates)[len(rates) // 2]


def epoch_matmul_flops(lengths: list[int], batches: list[list[int]], config: dict) -> tuple[float, float]:
    """Training FLOPs (forward + backward = 3x forward, 2 per multiply-add) of the encoder's matmuls over the epoch:
    (plmkit: real tokens, last layer's queries [CLS] only; transformers: padded batches, full last layer)."""
    C, inner, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    H = config["num_attention_heads"]
    per_token = 4 * C * C + 2 * C * inner  # Q, K, V, output projection; feed-forward in and out
    plmkit = padded = 0.0
    for batch in batches:
        n = [lengths[i] for i in batch]
        tokens, longest = sum(n), max(n)
        attention = sum(2 * t * t * C for t in n)  # q·kᵀ and probs·v per layer
        # last layer, one query per sentence and no keys or values: Q, q·W_k, W_v of the weighted sum, output
        # projection and feed-forward once a sentence; each head's scores and weighted sum over its tokens
        plmkit += (L - 1) * (per_token * tokens + attention) + per_token * len(n) + sum(2 * t * H * C for t in n)
        padded += L * (per_token * longest * len(n) + 2 * longest * longest * C * len(n))
    return 6 * plmkit, 6 * padded


def compute_floor(model_dir: Path, limit: int | None, threads: int | None, grouped: bool) -> dict:
    """Each side's epoch at this machine's matmul peak, from the batches plmkit draws (grouped: the same mega-batch
    sort as transformers' LengthGroupedSampler; plain shuffling otherwise. The random order differs from
    transformers', the padding is alike)."""
    import torch
    from transformers import AutoTokenizer

    from plmkit.layers.linear import cpu_matmul_backend
    from plmkit.training.data import ExampleStream

    if threads:
        torch.set_num_threads(threads)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    texts, _ = read_sst2("train", limit)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=SETTINGS["max_length"])["input_ids"]]
    stream = ExampleStream(lengths, lambda examples, seeds: examples, batch_size=SETTINGS["batch_size"],
                           seed=SETTINGS["seed"], lengths=lengths if grouped else None)
    order = stream.order(0).tolist()
    batches = [order[i:i + SETTINGS["batch_size"]] for i in range(0, len(order), SETTINGS["batch_size"])]
    plmkit, padded = epoch_matmul_flops(lengths, batches, config)
    shape = (sum(lengths) // len(batches), config["hidden_size"], config["intermediate_size"])
    # each side at the rate of the matmuls it runs: transformers' nn.Linear takes torch's dispatch, plmkit's Trainer
    # the backend impl.cpu_matmul=auto picks here (`plmkit.layers.linear`)
    backend = cpu_matmul_backend("auto")
    peaks = {"aten": matmul_peak_gflops(*shape)}
    if backend != "aten":
        peaks[backend] = matmul_peak_gflops(*shape, backend=backend)
    return {"peaks": peaks, "plmkit_backend": backend, "plmkit_floor_s": plmkit / peaks[backend] / 1e9,
            "transformers_floor_s": padded / peaks["aten"] / 1e9, "steps": len(batches)}


def worker(which: str, limit: int | None, threads: int | None, out: Path, grouped: bool, seed: int) -> None:
    import torch

    from plmkit.interop.hub import offline_model_dir

    SETTINGS["seed"] = seed
    if threads:
        torch.set_num_threads(threads)
    result = (run_plmkit if which == "plmkit" else run_transformers)(offline_model_dir(), limit, out, grouped)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def run_pair(args: argparse.Namespace, seed: int, first: str) -> dict:
    """Both sides at one seed, each in its own subprocess, `first` first."""
    results = {}
    for which in (first, "transformers" if first == "plmkit" else "plmkit"):
        cmd = [sys.executable, __file__, "--worker", which, "--out", args.out, "--seeds", str(seed)]
        if args.max_train_examples:
            cmd += ["--max-train-examples", str(args.max_train_examples)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.random_batches:
            cmd += ["--random-batches"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode or line is None:
            sys.exit(f"{which} run (seed {seed}) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        results[which] = json.loads(line[len("RESULT "):])
    return {which: results[which] for which in ("plmkit", "transformers")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train-examples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--random-batches", action="store_true",
                        help="plain shuffled batches on both sides (transformers' default) instead of length-grouped")
    parser.add_argument("--seeds", default=str(SETTINGS["seed"]),
                        help="comma-separated seeds; with several, each seed runs both sides and the medians compare")
    parser.add_argument("--worker", choices=["plmkit", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default="/tmp/plmkit-finetune-speed", help="scratch directory")
    args = parser.parse_args()
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    if not seeds:
        sys.exit("--seeds: give at least one seed")
    if args.worker:
        out = Path(args.out) / f"{args.worker}-seed{seeds[0]}"
        shutil.rmtree(out, ignore_errors=True)  # this script's own scratch: a fresh run each time
        worker(args.worker, args.max_train_examples, args.threads, out, grouped=not args.random_batches,
               seed=seeds[0])
        return
    if not data_dir().is_dir():
        sys.exit(f"SST-2 not found at {data_dir()} (set PLMKIT_DATA)")
    runs = {seed: run_pair(args, seed, "plmkit" if i % 2 == 0 else "transformers") for i, seed in enumerate(seeds)}
    n = len(read_sst2("train", args.max_train_examples)[0])  # what was read (PLMKIT_DATA may hold a subset)
    batches = "plain shuffled batches" if args.random_batches else "length-grouped batches"
    print(f"SST-2, {n} training sentences, 1 epoch, {batches}, all-MiniLM-L6-v2, fp32 CPU")
    print(f"{'trainer':<14} {'seed':>4} {'steps':>6} {'train s':>9} {'dev acc':>8} {'peak RSS MB':>12}")
    for seed, results in runs.items():
        for which, r in results.items():
            print(f"{which:<14} {seed:>4} {r['steps']:>6} {r['train_s']:>9.1f} {100 * r['accuracy']:>8.2f} "
                  f"{r['peak_rss_mb']:>12.0f}")
    if len(seeds) > 1:
        for seed, r in runs.items():
            print(f"seed {seed}: speed ratio {r['transformers']['train_s'] / r['plmkit']['train_s']:.2f}x, "
                  f"accuracy difference {100 * (r['plmkit']['accuracy'] - r['transformers']['accuracy']):+.2f} points")
    median = {which: {key: statistics.median(runs[seed][which][key] for seed in seeds)
                      for key in ("train_s", "accuracy", "steps")} for which in ("plmkit", "transformers")}
    label = f"medians over {len(seeds)} seeds: " if len(seeds) > 1 else ""
    ratio = median["transformers"]["train_s"] / median["plmkit"]["train_s"]
    gap = 100 * (median["plmkit"]["accuracy"] - median["transformers"]["accuracy"])
    if len(seeds) > 1:
        for which in median:
            print(f"{label}{which} {median[which]['train_s']:.1f} s, dev acc {100 * median[which]['accuracy']:.2f}")
    print(f"{label}speed ratio transformers/plmkit: {ratio:.2f}x; "
          f"accuracy difference plmkit - transformers: {gap:+.2f} points")
    from plmkit.interop.hub import offline_model_dir

    SETTINGS["seed"] = seeds[0]
    floor = compute_floor(offline_model_dir(), args.max_train_examples, args.threads, not args.random_batches)
    per_step = {which: 1000 * median[which]["train_s"] / median[which]["steps"] for which in median}
    peaks = ", ".join(f"{'torch (MKL)' if k == 'aten' else k} {v:.0f}" for k, v in floor["peaks"].items())
    print(f"this machine's measured fp32 matmul peak, GFLOP/s: {peaks}; plmkit's Trainer runs "
          f"{'torch' if floor['plmkit_backend'] == 'aten' else floor['plmkit_backend']}, transformers torch")
    print(f"compute floor at those peaks: plmkit {floor['plmkit_floor_s']:.1f} s, "
          f"transformers {floor['transformers_floor_s']:.1f} s")
    for which in median:
        spent = median[which]["train_s"] - floor[f"{which}_floor_s"]
        print(f"  {which}: {per_step[which]:.0f} ms a step, of which {1000 * spent / floor['steps']:.0f} ms "
              f"outside the matmuls ({100 * spent / median[which]['train_s']:.0f}%)")
    print(f"highest ratio attainable without changing the arithmetic (transformers' time / plmkit's floor): "
          f"{median['transformers']['train_s'] / floor['plmkit_floor_s']:.2f}x")


if __name__ == "__main__":
    main()
