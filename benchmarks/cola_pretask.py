"""CoLA from all-MiniLM-L6-v2 through an intermediate task of synthetic unacceptable sentences.

    .venv/bin/python benchmarks/cola_pretask.py [--seeds 0,1,2] [--out /tmp/plmkit-cola-pretask]

The checkpoint was trained for sentence embeddings, and fine-tuned on CoLA alone it reaches MCC 0.29-0.34 (the
`transformers` Trainer: 0.314; RESULTS.md). Here it first learns to tell sentences from corrupted copies of
themselves, then fine-tunes on CoLA with `finetune_quality.py`'s CoLA recipe, unchanged:

1. Data (`plmkit.objectives.acceptability`): the Brown corpus's sentences of 4-20 words (NLTK's tagged brown.zip
   in the shared data; quote marks dropped) with one corruption each, and CoLA's acceptable *training* sentences
   (tagged by Brown's most frequent tag per word) with up to two each; 1,000 groups held out as dev. CoLA's dev set
   is not used.
2. Intermediate task: `finetune` on that TSV as a generic classification task (1 epoch, batch 32, lr 5e-5, 10%
   warm-up, evaluated every 800 steps; the best model by accuracy is kept, head included: label 1 is acceptable,
   as in CoLA).
3. CoLA: `finetune_quality.py`'s recipe from the intermediate model, for each seed; the median MCC is reported.

Stage 2 is skipped when its model is already in --out (delete it to redo). About 25 min for stage 2 and 10 min a
seed for stage 3 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_quality import TASKS, data_root, result_line, run_task  # noqa: E402

MIN_WORDS, MAX_WORDS, DEV_GROUPS = 4, 20, 1000
PRETASK = {"data": {"epochs": 1}, "train": {"lr": 5e-5, "batch_size": 32, "warmup_ratio": 0.1, "eval_every": 800}}


def brown_sentences(corpus: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    """The corpus's sentences of MIN_WORDS-MAX_WORDS words that end a sentence, quote marks dropped, no brackets."""
    kept = []
    for sentence in corpus:
        sentence = [(w, t) for w, t in sentence if w not in ("``", "''")]
        words = sum(t[:1].isalpha() for _, t in sentence)
        if (MIN_WORDS <= words <= MAX_WORDS and sentence[-1][0] in (".", "?", "!")
                and not any(w in ("(", ")") for w, _ in sentence)):
            kept.append(sentence)
    return kept


def build_data(out: Path, seed: int = 0) -> dict:
    """train.tsv and validation.tsv (`sentence`, `label`) under `out`; returns counts."""
    from plmkit.data.tagged import read_tagged
    from plmkit.objectives.acceptability import acceptability_pairs, tag_text, unigram_tagger, verb_forms
    from plmkit.tasks import get_task

    rng = random.Random(seed)
    corpus = list(read_tagged(data_root() / "nltk_corpora" / "brown.zip"))  # read once: tagger and sentences
    tagger = unigram_tagger(corpus)
    brown = brown_sentences(corpus)
    verbs = verb_forms(brown[:5000])
    cola = [tag_text(e.text, tagger) for e in get_task("cola").read(data_root(), "train") if e.label == "1"]
    groups = acceptability_pairs(brown, rng, verbs) + acceptability_pairs(cola, rng, verbs, negatives=2)
    rng.shuffle(groups)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("validation", groups[:DEV_GROUPS]), ("train", groups[DEV_GROUPS:])):
        with open(out / f"{name}.tsv", "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{text}\t{label}\n" for group in part for text, label in group)
    return {"brown_sentences": len(brown), "cola_acceptable": len(cola),
            "train_rows": sum(map(len, groups[DEV_GROUPS:])), "dev_rows": sum(map(len, groups[:DEV_GROUPS]))}


def pretask(model_dir: Path, data_dir: Path, out: Path) -> Path:
    """Stage 2: the intermediate model's directory (the best by dev accuracy)."""
    from plmkit.training.finetune import finetune

    recipe = {"task": {"name": "tsv", "text_column": "sentence", "label_column": "label"}, "model": str(model_dir),
              "data": {"data_dir": str(data_dir), **PRETASK["data"]},
              "train": {"output_dir": str(out), "log_every": 100, **PRETASK["train"]},
              "impl": {"progress": False, "tensorboard": False}}
    result = finetune(recipe)
    print(f"intermediate task: accuracy {result.metrics['accuracy']:.4f} on its dev rows", flush=True)
    return result.model_dir


def main() -> None:
    from plmkit.interop.hub import offline_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="CoLA seeds, comma-separated; the median is reported")
    parser.add_argument("--out", default="/tmp/plmkit-cola-pretask")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    stage = out / "pretask"
    intermediate = stage / "model"  # written when stage 2 has finished (best/ exists from its first evaluation on)
    if not (intermediate / "config.json").exists():
        counts = build_data(out / "data")
        print("synthetic acceptability data: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
        intermediate = pretask(offline_model_dir(), out / "data", stage)
    print(f"intermediate model: {intermediate} ({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
    metrics = run_task("cola", intermediate, out, seeds)
    key, bar = TASKS["cola"][1]
    print(result_line("cola", "plmkit", metrics, key, bar), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"task": "cola-pretask", **metrics, "main": key, "bar": bar},
                                              indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
