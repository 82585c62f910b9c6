"""`plmkit predict --model DIR --input FILE|- [--output FILE]`: predictions of a fine-tuned model, as JSONL.

The model's head picks the pipeline: sequence classification (each input a text, or JSON {"text", "text_pair"}),
token classification (a text; entities with their words and spans), question answering (JSON {"question",
"context"}), masked LM (a text with [MASK]: fill-mask), encoder-decoder (a text, or JSON {"text"}: the generated
text; `--num-beams`, `--max-new-tokens`), a bare encoder such as a sentence-embedding model or a bi-encoder
fine-tuned with `stsb-bi`/`similarity` (JSON {"text", "text_pair"}: {"score": the cosine of their mean-pooled
embeddings}). One JSON object per input line, in order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plmkit.errors import PlmkitError

PIPELINE_BY_ARCHITECTURE = {
    "BertForSequenceClassification": "text-classification",
    "BertForTokenClassification": "token-classification",
    "BertForQuestionAnswering": "question-answering",
    "BertForMaskedLM": "fill-mask",
    "BertForPreTraining": "fill-mask",
    "BertModel": "sentence-similarity",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("predict", help="predict with a fine-tuned model (JSONL out)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True, help="a text file (one input per line; JSON lines allowed) or -")
    parser.add_argument("--output", help="write JSONL here instead of stdout")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=None, help="encoder-decoders: beam width (default greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="encoder-decoders: generated tokens at most")
    parser.set_defaults(func=run)
    return parser


def read_inputs(source: str) -> Iterator[tuple[str, int, Any]]:
    """(where, line number, input) for each non-empty line; a JSON object line is parsed, anything else is text."""
    if source == "-":
        handle, name = sys.stdin, "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            raise PlmkitError(f"input file not found: {path}")
        handle, name = open(path, "rb"), str(path)
    try:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            except UnicodeDecodeError as e:
                raise PlmkitError(f"{name}:{number}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    yield name, number, json.loads(line)
                except json.JSONDecodeError as e:
                    raise PlmkitError(f"{name}:{number}: invalid JSON ({e.msg})") from None
            else:
                yield name, number, line
    finally:
        if handle is not sys.stdin:
            handle.close()


def _prepare(task: str, item: Any, where: str) -> Any:
    """The pipeline input for one line: a text, a (text, text_pair) pair, or a question/context mapping."""
    if task == "question-answering":
        if not isinstance(item, dict) or not {"question", "context"} <= set(item):
            raise PlmkitError(f"{where}: question answering needs a JSON object with 'question' and 'context'")
        return item
    if isinstance(item, dict):
        if "text" not in item:
            raise PlmkitError(f"{where}: a JSON input needs a 'text' field")
        if item.get("text_pair") is not None:
            if task not in ("text-classification", "sentence-similarity"):
                raise PlmkitError(f"{where}: text pairs need a sequence-classification model")
            return (item["text"], item["text_pair"])
        item = item["text"]
    if task == "sentence-similarity":
        raise PlmkitError(f"{where}: a bare encoder (sentence embeddings) scores sentence pairs: give a JSON line "
                          "with 'text' and 'text_pair', or use `plmkit search` for one text against many")
    return item


def _predict(pipe: Any, task: str, inputs: list[Any]) -> list[Any]:
    if task == "question-answering":
        return [pipe(question=x["question"], context=x["context"]) for x in inputs]
    if task == "sentence-similarity":  # the cosine of each pair's mean-pooled, normalised embeddings
        import torch

        first, second = (torch.stack(pipe.embed([pair[i] for pair in inputs], "mean", True)) for i in (0, 1))
        return [{"score": float(s)} for s in (first * second).sum(-1)]
    paired = [isinstance(x, tuple) for x in inputs]
    if any(paired) and not all(paired):  # a pipeline call takes texts or pairs, not both
        return [_predict(pipe, task, [x])[0] for x in inputs]
    return pipe(inputs)


def run(args: argparse.Namespace) -> int:
    from plmkit import pipeline
    from plmkit.interop import detect_architecture, resolve_model_dir
    from plmkit.pipelines import is_seq2seq_dir

    model_dir = resolve_model_dir(args.model)
    options: dict[str, Any] = {}
    if is_seq2seq_dir(model_dir):
        task = "text2text-generation"
        options = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens))
                   if v is not None}
    else:
        architecture = detect_architecture(model_dir)
        task = PIPELINE_BY_ARCHITECTURE.get(architecture)
        if task is None:
            raise PlmkitError(f"{model_dir} holds a {architecture}, which has no prediction head; fine-tune it first")
    pipe = pipeline(task, model=model_dir, **options)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    count = 0

    def flush(chunk: list[tuple[Any, Any]]) -> None:
        for (item, _), result in zip(chunk, _predict(pipe, task, [x for _, x in chunk]), strict=True):
            out.write(json.dumps({"input": item, "prediction": result}, ensure_ascii=False) + "\n")

    try:
        chunk: list[tuple[Any, Any]] = []
        for name, number, item in read_inputs(args.input):
            chunk.append((item, _prepare(task, item, f"{name}:{number}")))
            count += 1
            if len(chunk) == args.batch_size:
                flush(chunk)
                chunk = []
        if chunk:
            flush(chunk)
    finally:
        if out is not sys.stdout:
            out.close()
    if count == 0:
        raise PlmkitError(f"{args.input}: no inputs (the file is empty)")
    return 0
