"""Fine-tuning tasks by name: each is one object with a reader, featurize + collate, a head, a metric and a predictor.

    task = plmkit.tasks.get_task("sst2")
    train = task.read(data_dir, "train")                     # examples (dataclasses)
    labels = task.label_list(train)                           # stored as config.id2label
    features = task.featurize(train, tokenizer, {l: i for i, l in enumerate(labels)}, max_length=128)
    batch = task.collate(features[:32])                       # the model's forward kwargs, labels included
    model = task.build_model(model_dir_or_config, labels)
    plmkit.evaluation.evaluate(model, task, examples, features)   # {"accuracy": ...}

Options of a task (columns of a generic file, SQuAD's article split) are keyword arguments of `get_task`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plmkit.errors import PlmkitError
from plmkit.tasks.base import Task, default_data_dir
from plmkit.tasks.classification import ClassificationTask, TextExample
from plmkit.tasks.question_answering import Answer, QAExample, SquadTask
from plmkit.tasks.similarity import SentenceSimilarityTask
from plmkit.tasks.text2text import Text2TextExample, Text2TextTask
from plmkit.tasks.token_classification import CONLL2003_HUB_TAGS, TokenClassificationTask, TokenExample

GLUE_HUB = "nyu-mll/glue"
_TSV = {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": ("test.tsv",)}
_NLI = ("entailment", "not_entailment")


def _glue(name: str, folder: str, **options: Any) -> Callable[..., Task]:
    """A GLUE task: its folder under glue/, its TSV columns and its hub copy (nyu-mll/glue, config `name`)."""
    options = {"folder": f"glue/{folder}", "files": _TSV, "hub": (GLUE_HUB, name), **options}
    return lambda **overrides: ClassificationTask(name, **{**options, **overrides})


def _generic_files(suffix: str) -> dict[str, tuple[str, ...]]:
    return {"train": (f"train.{suffix}",), "validation": (f"dev.{suffix}", f"validation.{suffix}", f"valid.{suffix}"),
            "test": (f"test.{suffix}",)}


def _generic(name: str, suffix: str, fmt: str, kind: type) -> Callable[..., Task]:
    return lambda **options: kind(name, format=fmt, files=_generic_files(suffix), **options)


def _similarity(**options: Any) -> Task:
    fmt = options.pop("format", "tsv")
    return SentenceSimilarityTask("similarity", format=fmt, files=_generic_files(fmt), **options)


def _ted(source: str, target: str) -> Callable[..., Task]:
    columns = {"en": 0, "zh": 1}
    files = {"train": ("parallel_corpus_en_zh.txt",), "validation": ("parallel_corpus_en_zh.txt",),
             "test": ("news-commentary-v13-en-zh_sampled.txt",)}
    return lambda **options: Text2TextTask(
        f"ted-{source}-{target}", folder="translation_en_zh", format="tsv", header=False, files=files,
        source_column=columns[source], target_column=columns[target], source_lang=source, target_lang=target,
        holdout_every=20, holdout={"validation": 19}, output_key="translation_text", **options)


def _multi30k(**options: Any) -> Task:
    options = {"source_lang": "en", "target_lang": "de", "output_key": "translation_text", "max_new_tokens": 100,
               **options}
    src = options["source_lang"]
    stems = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
    files = {split: (f"{stem}.{src}.gz", f"{stem}.{src}") for split, stem in stems.items()}
    return Text2TextTask("multi30k", folder="multi30k", files=files, **options)


# Summaries: ROUGE; no repeated trigram when generating (what BART's CNN/DailyMail checkpoints ship with).
_SUMMARY = {"metrics": ("rouge1", "rouge2", "rougeL"), "output_key": "summary_text", "max_new_tokens": 128,
            "no_repeat_ngram_size": 3}


# name -> factory(**options). GLUE column layouts are those of the official GLUE TSV files.
TASKS: dict[str, Callable[..., Task]] = {
    "cola": _glue("cola", "CoLA", text_column=3, label_column=1, header=False, metrics=("mcc", "accuracy"),
                  files={"train": ("train.tsv",), "validation": ("dev.tsv",)}, hub_columns=("sentence", None, "label")),
    "sst2": _glue("sst2", "SST-2", text_column="sentence", hub_columns=("sentence", None, "label")),
    "mrpc": _glue("mrpc", "MRPC", text_column="#1 String", text_pair_column="#2 String", label_column="Quality",
                  metrics=("f1", "accuracy"), hub_columns=("sentence1", "sentence2", "label")),
    "stsb": _glue("stsb", "STS-B", text_column="sentence1", text_pair_column="sentence2", label_column="score",
                  regression=True, metrics=("spearman", "pearson"), hub_columns=("sentence1", "sentence2", "label")),
    # STS-B as a bi-encoder: each sentence embedded alone, the cosine trained towards score / 5 (sentence-transformers)
    "stsb-bi": lambda **options: SentenceSimilarityTask("stsb-bi", **{
        "folder": "glue/STS-B", "files": _TSV, "hub": (GLUE_HUB, "stsb"), "text_column": "sentence1",
        "text_pair_column": "sentence2", "label_column": "score", "max_score": 5.0,
        "hub_columns": ("sentence1", "sentence2", "label"), **options}),
    "qnli": _glue("qnli", "QNLI", text_column="question", text_pair_column="sentence", hub_labels=_NLI,
                  hub_columns=("question", "sentence", "label"), positive_label="entailment"),
    "rte": _glue("rte", "RTE", text_column="sentence1", text_pair_column="sentence2", hub_labels=_NLI,
                 hub_columns=("sentence1", "sentence2", "label"), positive_label="entailment"),
    "wnli": _glue("wnli", "WNLI", text_column="sentence1", text_pair_column="sentence2",
                  hub_columns=("sentence1", "sentence2", "label")),
    "mnli": _glue("mnli", "MNLI", text_column="sentence1", text_pair_column="sentence2", label_column="gold_label",
                  hub_labels=("entailment", "neutral", "contradiction"), hub_columns=("premise", "hypothesis", "label"),
                  files={"train": ("train.tsv",), "validation_matched": ("dev_matched.tsv",),
                         "validation_mismatched": ("dev_mismatched.tsv",), "test_matched": ("test_matched.tsv",),
                         "test_mismatched": ("test_mismatched.tsv",)},
                  aliases={"validation": "validation_matched", "dev_matched": "validation_matched",
                           "dev_mismatched": "validation_mismatched", "test": "test_matched"}),
    "qqp": _glue("qqp", "QQP", text_column="question1", text_pair_column="question2", label_column="is_duplicate",
                 metrics=("accuracy", "f1"), hub_columns=("question1", "question2", "label")),
    "chnsenticorp": lambda **options: ClassificationTask(
        "chnsenticorp", folder="chinese_cls/chnsenticorp", files=_TSV, text_column="text_a", **options),
    "conll2003": lambda **options: TokenClassificationTask(
        "conll2003", folder="conll2003", format="conll",
        files={"train": ("train.txt",), "validation": ("valid.txt", "dev.txt"), "test": ("test.txt",)},
        hub=("eriktks/conll2003", None), hub_revision="refs/convert/parquet", hub_tags=CONLL2003_HUB_TAGS, **options),
    "cluener": lambda **options: TokenClassificationTask(
        "cluener", folder="chinese_ner_cluener", format="cluener",
        files={"train": ("train.json",), "validation": ("dev.json",), "test": ("test.json",)}, **options),
    "squad": lambda **options: SquadTask("squad", folder="squad_v1.1", hub=("rajpurkar/squad", None), **options),
    # Sequence to sequence. Multi30k: aligned gzip files, one a language (source_lang/target_lang flip it).
    "multi30k": lambda **options: _multi30k(**options),
    # TED talks en-zh: one TSV "english<TAB>chinese"; every 20th pair is held out for validation; the News
    # Commentary sample is the test set.
    "ted-en-zh": _ted("en", "zh"),
    "ted-zh-en": _ted("zh", "en"),
    # BBC news: article -> extractive summary, one JSONL file; rows 8 and 9 of every 10 are validation and test.
    "bbc-summarization": lambda **options: Text2TextTask(
        "bbc-summarization", folder="summarization_bbc", format="jsonl", source_column="article",
        target_column="summary", files=dict.fromkeys(("train", "validation", "test"), ("bbc_news_summary.jsonl",)),
        holdout_every=10, holdout={"validation": 8, "test": 9}, **{**_SUMMARY, "max_new_tokens": 256, **options}),
    "translation": lambda **options: Text2TextTask("translation", output_key="translation_text", **options),
    "summarization": lambda **options: Text2TextTask(
        "summarization", **{"format": "jsonl", **_SUMMARY, "source_column": "text", "target_column": "summary",
                            **options}),
    # Any file: options name the columns (text_column=, text_pair_column=, label_column=, regression=True, ...).
    "csv": _generic("csv", "csv", "csv", ClassificationTask),
    "tsv": _generic("tsv", "tsv", "tsv", ClassificationTask),
    "jsonl": _generic("jsonl", "jsonl", "jsonl", ClassificationTask),
    # Any file of scored sentence pairs, fine-tuned as a bi-encoder (format=tsv|csv|jsonl, max_score=, columns)
    "similarity": _similarity,
    "conll": _generic("conll", "txt", "conll", TokenClassificationTask),
    "jsonl-tokens": _generic("jsonl-tokens", "jsonl", "jsonl", TokenClassificationTask),
}


def get_task(name: str, **options: Any) -> Task:
    """The task registered as `name`, built with `options` (e.g. `get_task("csv", text_column="review")`)."""
    if name not in TASKS:
        raise PlmkitError(f"unknown task {name!r}; choose from: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](**options)
    except TypeError as err:
        raise PlmkitError(f"task {name!r}: bad option: {err}") from None


def list_tasks() -> list[str]:
    return sorted(TASKS)


__all__ = ["TASKS", "Answer", "ClassificationTask", "QAExample", "SentenceSimilarityTask", "SquadTask", "Task",
           "Text2TextExample", "Text2TextTask", "TextExample", "TokenClassificationTask", "TokenExample",
           "default_data_dir", "get_task", "list_tasks"]
