"""Text and a labelled task that ship with Python, so the demo needs no download.

`pydoc_data.topics` holds the Python language reference as 79 topics (~465k characters): the pretraining corpus.
The labelled task is about that text: which part of the reference does a paragraph come from — a statement, an
expression, or the data model and built-in types? Topics are assigned to the three parts by name; paragraphs of
topics that fit none (the debugger, the execution model, naming) are left out. Dev examples come from topics
that the training set never sees, so the score says something about the text, not about memorised topics.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

STATEMENT = ("assert", "assignment", "async", "augassign", "break", "class", "compound", "continue", "del", "for",
             "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while", "with")
EXPRESSION = ("atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise", "booleans",
              "calls", "comparisons", "conversions", "exprlists", "floating", "imaginary", "in", "integers", "lambda",
              "operator-summary", "power", "shifting", "slicings", "subscriptions", "unary", "yield")
DATA_MODEL = ("attribute-access", "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object",
              "bltin-type-objects", "callable-types", "context-managers", "customization", "dict", "id-classes",
              "numbers", "numeric-types", "objects", "sequence-types", "specialattrs", "specialnames",
              "string-methods", "truth", "types", "typesfunctions", "typesmapping", "typesmethods", "typesmodules",
              "typesseq", "typesseq-mutable")
LABELS = {**{t: "statement" for t in STATEMENT}, **{t: "expression" for t in EXPRESSION},
          **{t: "data-model" for t in DATA_MODEL}}


def topics() -> dict[str, str]:
    from pydoc_data.topics import topics as reference

    return dict(reference)


def paragraphs(text: str, min_words: int = 8) -> list[str]:
    """Prose paragraphs of a topic, white space collapsed; code samples and grammar rules (mostly symbols) dropped."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        flat = " ".join(block.split())
        words = flat.split()
        if len(words) >= min_words and sum(w.isalpha() for w in words) >= 0.5 * len(words):
            out.append(flat)
    return out


def write_corpus(path: Path) -> Path:
    """The reference as a text file: one topic per document (blank-line separated blocks, one paragraph a line)."""
    docs = ["\n".join(paragraphs(text, min_words=1)) for _, text in sorted(topics().items())]
    path.write_text("\n\n".join(d for d in docs if d) + "\n", encoding="utf-8")
    return path


def write_task(directory: Path, dev_fraction: float = 0.25, seed: int = 0) -> tuple[Path, int, int]:
    """train.tsv / dev.tsv with `sentence` and `label` columns; dev topics are held out from training."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for name in sorted(LABELS):
        by_label.setdefault(LABELS[name], []).append(name)
    dev_topics = set()
    for names in by_label.values():
        dev_topics.update(rng.sample(names, max(1, round(dev_fraction * len(names)))))
    rows: dict[str, list[str]] = {"train": [], "dev": []}
    for name, text in sorted(topics().items()):
        if name not in LABELS:
            continue
        for paragraph in paragraphs(text):
            clean = paragraph.replace("\t", " ")
            rows["dev" if name in dev_topics else "train"].append(f"{clean}\t{LABELS[name]}")
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        rng.shuffle(lines)
        (directory / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return directory, len(rows["train"]), len(rows["dev"])
