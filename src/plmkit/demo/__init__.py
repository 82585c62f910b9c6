"""The main job end to end, offline, in a few minutes on 2 CPU cores: `plmkit demo` / `make demo`.

1. train a WordPiece tokenizer on unlabelled text;
2. pretrain a small BERT (masked LM) on it for a couple of minutes, and show it filling masks;
3. fine-tune it on a labelled task, evaluate, save, and predict a few examples;
4. sentence embeddings and semantic search with a real pretrained BERT (all-MiniLM-L6-v2, offline);
5. a results table.

With no data folder the text is the Python language reference that ships with Python (`pydoc_data.topics`) and the
task is `reference_task` (which part of the reference a paragraph is from). With `data_dir` (`make demo
DATA=../shared/data`) the same pipeline runs on real data: the Gutenberg books for pretraining and SST-2 sentiment
(a sample of its training set; the full dev set) for fine-tuning.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from plmkit.demo import reference_task
from plmkit.demo.search_corpus import CORPUS, QUERIES

log = logging.getLogger(__name__)

# Model for the from-scratch stages: bert-tiny's shape (2 layers, hidden 128), the size a couple of CPU minutes train.
TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 512, "max_position_embeddings": 128}
FILL_MASK = {
    None: ["the [MASK] statement is used to leave a loop.", "an exception is raised with the [MASK] statement.",
           "a list is a mutable [MASK] of items."],
    "data": ["she was a young [MASK] of great beauty.", "he walked into the [MASK] and closed the door.",
             "i shall [MASK] you tomorrow."],
}
PREDICT = {
    None: ["The else clause of a loop runs when the loop ends normally, not by break.",
           "Comparisons can be chained: x < y <= z is equivalent to x < y and y <= z.",
           "Every object has an identity, a type and a value."],
    "data": ["a gorgeous, witty and moving film", "a tedious mess with no redeeming qualities",
             "the acting is fine but the script is flat"],
}


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(data_dir: str | Path | None = None, workdir: str | Path | None = None, pretrain_minutes: float = 2.0,
             finetune_minutes: float = 1.5, search_model: str | Path | None = None, progress: bool = True) -> dict:
    """Run every stage; returns the results table as a dict (also printed)."""
    from plmkit.data.tokenizer_train import train_wordpiece
    from plmkit.interop.hub import offline_model_dir, resolve_model_dir
    from plmkit.pipelines import pipeline
    from plmkit.similarity import SentenceEncoder, semantic_search
    from plmkit.training.finetune import finetune
    from plmkit.training.pretrain import pretrain

    work = Path(workdir or tempfile.mkdtemp(prefix="plmkit-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    key = "data" if data_dir else None
    results: dict[str, Any] = {}
    impl = {"progress": progress, "tensorboard": False}

    t = _stage("1. tokenizer: WordPiece trained on unlabelled text")
    if data_dir:
        inputs = [str(Path(data_dir) / "raw_text_en" / "gutenberg_nltk" / "*.txt")]
        what = "14 Gutenberg books"
    else:
        inputs = [str(reference_task.write_corpus(work / "python-reference.txt"))]
        what = "the Python language reference (pydoc_data.topics)"
    from plmkit.data.corpus import DocumentReader, expand_inputs

    reader = DocumentReader(expand_inputs(inputs), encoding_errors="replace")
    tokenizer = train_wordpiece(None, 8000, texts=iter(reader), min_frequency=2)
    tokenizer.save_pretrained(work / "tokenizer")
    print(f"{what}: {reader.total_bytes / 1e6:.1f} MB -> vocabulary of {len(tokenizer)} "
          f"({time.perf_counter() - t:.1f}s); e.g. {tokenizer.tokenize('Exceptions are raised by the interpreter.')}")
    results["tokenizer vocabulary"] = len(tokenizer)

    t = _stage(f"2. pretraining a small BERT (masked LM) for {pretrain_minutes:g} minutes")
    recipe = {
        "model": {**TINY, "vocab_size": len(tokenizer)},
        "tokenizer": {"path": str(work / "tokenizer")},
        "data": {"inputs": inputs, "nsp": False, "max_seq_length": 128, "validation_fraction": 0.03,
                 "encoding_errors": "replace", "eval_batch_size": 64},
        "train": {"output_dir": str(work / "pretrain"), "batch_size": 32, "max_steps": 100_000,
                  "max_minutes": pretrain_minutes, "schedule_by_time": True, "lr": 2e-3, "warmup_steps": 50,
                  "adam_beta2": 0.98, "log_every": 20, "eval_max_batches": 10, "save_every_minutes": 0},
        "impl": impl,
    }
    result, pretrained = pretrain(recipe)
    print(f"{result.step} steps in {time.perf_counter() - t:.0f}s; held-out masked-LM accuracy "
          f"{result.eval_metrics['mlm_accuracy']:.3f}, perplexity {result.eval_metrics['perplexity']:.1f}")
    results["pretraining steps"] = result.step
    results["held-out MLM accuracy"] = round(result.eval_metrics["mlm_accuracy"], 3)
    results["held-out MLM perplexity"] = round(result.eval_metrics["perplexity"], 1)
    fill = pipeline("fill-mask", model=pretrained, top_k=3)
    for text in FILL_MASK[key]:
        guesses = ", ".join(f"{g['token_str']} ({g['score']:.2f})" for g in fill(text))
        print(f"  {text}  ->  {guesses}")

    t = _stage("3. fine-tuning it on a labelled task, evaluating, predicting")
    if data_dir:
        task, task_data = {"name": "sst2"}, {"data_dir": str(data_dir), "max_train_examples": 8000, "epochs": 2}
        print("SST-2 sentiment: 8,000 training sentences, the 872 of the dev set")
    else:
        task_dir, n_train, n_dev = reference_task.write_task(work / "reference-task")
        task = {"name": "tsv", "text_column": "sentence"}
        task_data = {"data_dir": str(task_dir), "epochs": 5}
        print(f"which part of the Python reference is a paragraph from (statement / expression / data model): "
              f"{n_train} training and {n_dev} dev paragraphs, dev topics unseen in training")
    tuned = finetune({"task": task, "model": str(pretrained), "data": {**task_data, "max_length": 128},
                      "train": {"output_dir": str(work / "finetune"), "lr": 1e-3, "batch_size": 32,
                                "max_minutes": finetune_minutes, "schedule_by_time": True, "warmup_ratio": 0.06,
                                "eval_every": 50, "log_every": 20},
                      "impl": impl})
    print(f"dev {tuned.main_metric}: {tuned.metrics[tuned.main_metric]:.3f} ({time.perf_counter() - t:.0f}s); "
          f"saved to {tuned.model_dir}")
    results[f"fine-tuned dev {tuned.main_metric}"] = round(tuned.metrics[tuned.main_metric], 3)
    classify = pipeline("text-classification", model=tuned.model_dir)
    for text, prediction in zip(PREDICT[key], classify(PREDICT[key]), strict=True):
        print(f"  {prediction['label']:<11} {prediction['score']:.2f}  {text}")

    t = _stage("4. sentence embeddings and semantic search with a pretrained BERT (all-MiniLM-L6-v2, offline)")
    model_dir = resolve_model_dir(search_model) if search_model else offline_model_dir()
    encoder = SentenceEncoder.from_pretrained(model_dir)
    corpus = [s for sentences in CORPUS.values() for s in sentences]
    topics = [name for name, sentences in CORPUS.items() for _ in sentences]
    hits = semantic_search(encoder.encode(list(QUERIES)), encoder.encode(corpus), 3)
    right = 0
    for (query, topic), row in zip(QUERIES.items(), hits, strict=True):
        found = [topics[i] for i, _ in row]
        right += sum(f == topic for f in found)
        best, score = corpus[row[0][0]], row[0][1]
        print(f"  {query:<52} -> {score:.2f} {best}")
    results["semantic search precision@3"] = f"{right}/{3 * len(QUERIES)}"
    print(f"({time.perf_counter() - t:.1f}s)")

    print("\n== results")
    width = max(len(k) for k in results)
    for name, value in results.items():
        print(f"  {name:<{width}}  {value}")
    print(f"  {'files':<{width}}  {work}")
    return results
