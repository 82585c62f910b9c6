"""Memory of `plmkit prepare`: peak RSS growth stays bounded while the corpus grows past a memory cap.

Writes a corpus several times bigger than `--cap-mb` (paragraphs of the UTF-8 Gutenberg books of
`$PLMKIT_DATA/raw_text_en` in a fresh random order per pass, or random words where the data is absent), then runs
`prepare_corpus` in a subprocess for a quarter of the corpus and for all of it. Peak RSS is
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` in this process after each subprocess has been waited for: the largest
peak of any process below it (the prepare process or one of its tokenizing workers), not their sum. Growth = that
peak minus the peak of a baseline subprocess that only imports plmkit and loads the tokenizer. The prepare
subprocess also reports its own peak and its workers' (largest) peak. Verdict: PASS when the growth for the whole
corpus is under the cap, and does not grow with the corpus by more than 25% (plus 10 MB) from a quarter of it.

Tokenizer: the offline all-MiniLM-L6-v2 (BERT uncased WordPiece, 30,522) when installed, else a WordPiece trained
on a 2 MB sample of the corpus.

    .venv/bin/python benchmarks/prepare_memory.py [--corpus-mb 150] [--cap-mb 50] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = """
import resource, sys
import plmkit, plmkit.data.prepare
from plmkit.data.tokenizer import load_tokenizer
load_tokenizer(sys.argv[1])
"""
PREPARE = """
import json, resource, sys
from plmkit.data.prepare import prepare_corpus
summary = prepare_corpus(sys.argv[1], sys.argv[2], sys.argv[3], num_workers=int(sys.argv[4]), progress=False)
print(json.dumps({"tokens": sum(s["tokens"] for s in summary.splits.values()),
                  "shards": sum(s["shards"] for s in summary.splits.values()), "seconds": summary.seconds,
                  "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def paragraphs() -> list[str]:
    data = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data")) / "raw_text_en" / "gutenberg_nltk"
    found = []
    for path in sorted(data.glob("*.txt")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # one of the books has a Latin-1 byte
        found += [p.strip() for p in text.split("\n\n") if p.strip()]
    if found:
        return found
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    return [" ".join(s.capitalize() + "." for s in (" ".join(rng.choices(words, k=rng.randint(4, 20)))
                                                    for _ in range(rng.randint(1, 8)))) for _ in range(20000)]


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Paragraphs (blank-line separated), reshuffled each pass, until `megabytes`; returns the bytes written."""
    paras, rng, written, target = paragraphs(), random.Random(seed), 0, int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(paras)
            for p in paras:
                block = p + "\n\n"
                f.write(block)
                written += len(block.encode("utf-8"))
                if written >= target:
                    break
    return written


def tokenizer_dir(work: Path, sample: Path) -> Path:
    try:
        from plmkit.interop.hub import offline_model_dir

        return offline_model_dir()
    except Exception:
        from plmkit.data.tokenizer_train import train_wordpiece

        small = work / "sample.txt"
        with open(sample, encoding="utf-8") as f:
            small.write_text(f.read(2_000_000), encoding="utf-8")
        train_wordpiece([small], 8000).save_pretrained(work / "tok")
        return work / "tok"


def peak_children_kb() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux


def run(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-mb", type=float, default=150.0)
    parser.add_argument("--cap-mb", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="prepare_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        sizes = {"quarter": args.corpus_mb / 4, "full": args.corpus_mb}
        corpora = {name: work / f"{name}.txt" for name in sizes}
        written = {name: write_corpus(corpora[name], mb) for name, mb in sizes.items()}
        tok = tokenizer_dir(work, corpora["quarter"])
        print(f"corpora written in {time.perf_counter() - t0:.0f} s; tokenizer {tok}", file=sys.stderr)

        run(BASELINE, str(tok))
        baseline_kb = peak_children_kb()
        results = {}
        for name in ("quarter", "full"):  # growing order: the running maximum is this run's peak
            report = json.loads(run(PREPARE, str(corpora[name]), str(work / f"out-{name}"), str(tok),
                                    str(args.workers)))
            report["peak_kb"] = peak_children_kb()
            results[name] = report
            shutil.rmtree(work / f"out-{name}", ignore_errors=True)
            print(f"{name}: {json.dumps(report)}", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    mb = 1024.0  # ru_maxrss kB -> MB (MiB)
    growth = {name: (r["peak_kb"] - baseline_kb) / mb for name, r in results.items()}
    full = results["full"]
    bounded = growth["full"] <= 1.25 * growth["quarter"] + 10
    verdict = "PASS" if growth["full"] < args.cap_mb and bounded else "FAIL"
    print(f"prepare_memory: {verdict}: corpus {written['full'] / 1e6:.0f} MB ({full['tokens'] / 1e6:.1f}M tokens, "
          f"{full['shards']} shards, {args.workers} workers, {full['seconds']:.0f} s, "
          f"{written['full'] / 1e6 / full['seconds']:.2f} MB/s): peak RSS growth {growth['full']:.1f} MB over a "
          f"baseline of {baseline_kb / mb:.0f} MB (main process {(full['self_kb'] - baseline_kb) / mb:+.1f} MB, "
          f"largest worker {(full['workers_kb'] - baseline_kb) / mb:+.1f} MB) vs {growth['quarter']:.1f} MB for "
          f"a quarter of the corpus; cap {args.cap_mb:.0f} MB = {args.cap_mb / (written['full'] / 1e6):.0%} of the "
          f"corpus; growth = {growth['full'] / (written['full'] / 1e6):.1%} of the corpus")


if __name__ == "__main__":
    main()
