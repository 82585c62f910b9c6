"""The lead-3 baseline of BBC news summarization: the first three sentences of each article as its summary, scored
with the ROUGE that `plmkit evaluate --task bbc-summarization` reports (rouge-score F1 x 100, with stemming).

    .venv/bin/python benchmarks/summarization_lead3.py [--split test] [--sentences 3]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    from plmkit.tasks import get_task
    from plmkit.tasks.text2text import lead_sentences, text2text_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="default: $PLMKIT_DATA or ../shared/data")
    args = parser.parse_args()
    task = get_task("bbc-summarization")
    examples = task.read(args.data_dir, args.split)
    hypotheses = [lead_sentences(ex.source, args.sentences) for ex in examples]
    metrics = text2text_metrics(hypotheses, [ex.target for ex in examples], task.metrics)
    print(json.dumps({"baseline": f"lead-{args.sentences}", "split": args.split, "examples": len(examples),
                      **{k: round(v, 2) for k, v in metrics.items()}}))


if __name__ == "__main__":
    main()
