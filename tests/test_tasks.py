"""Sentence (pair) classification and regression tasks: the registry, readers on the real files and on the official
GLUE layouts, the hub fallback, bad input, featurize/collate/head, streaming evaluation, prediction, and the
zero-shot STS-B evaluation of all-MiniLM-L6-v2."""

from __future__ import annotations

import inspect
import json
import string
from pathlib import Path

import pytest
import torch

from plmkit import BertModel, BertTokenizer, ModelConfig, PlmkitError, get_task
from plmkit.evaluation import evaluate
from plmkit.evaluation.metrics import accuracy, f1_binary
from plmkit.tasks import TextExample, list_tasks

CHARS = list(string.ascii_lowercase + string.digits + string.punctuation)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's spinning threads
    make each small op ~100x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def tok(tmp_path: Path) -> BertTokenizer:
    """Any ASCII text tokenizes: single characters and ##characters are in the vocabulary."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", *CHARS, *[f"##{c}" for c in CHARS]]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizer.from_file(tmp_path / "vocab.txt")


def tiny_config(tok: BertTokenizer) -> ModelConfig:
    return ModelConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)


def label2id(labels: list[str]) -> dict[str, int]:
    return {label: i for i, label in enumerate(labels)}


# ---------------------------------------------------------------------------------------------- registry
def test_registry_names_and_errors() -> None:
    assert {"sst2", "cola", "mrpc", "stsb", "qnli", "rte", "wnli", "mnli", "qqp", "conll2003", "squad",
            "chnsenticorp", "cluener", "csv", "tsv", "jsonl", "conll", "jsonl-tokens"} <= set(list_tasks())
    with pytest.raises(PlmkitError, match=r"unknown task 'sst3'; choose from: .*cola.*sst2.*stsb"):
        get_task("sst3")
    with pytest.raises(PlmkitError, match="task 'csv': bad option"):
        get_task("csv", text_colum="x")
    main = {name: get_task(name).main_metric for name in ("sst2", "cola", "mrpc", "stsb", "qnli", "conll2003", "squad")}
    assert main == {"sst2": "accuracy", "cola": "mcc", "mrpc": "f1", "stsb": "spearman", "qnli": "accuracy",
                    "conll2003": "f1", "squad": "f1"}
    assert get_task("stsb").metrics == ("spearman", "pearson")


# ---------------------------------------------------------------------------------------------- real files
@pytest.mark.parametrize("name, split, first, labels", [
    ("sst2", "train", ("hide new secretions from the parental units ", None, "0"), ["0", "1"]),
    ("cola", "train", ("Our friends won't buy this analysis, let alone the next one we propose.", None, "1"),
     ["0", "1"]),
    ("mrpc", "train", None, ["0", "1"]),
    ("stsb", "train", ("A plane is taking off.", "An air plane is taking off.", 5.0), ["score"]),
    ("qnli", "dev", None, ["entailment", "not_entailment"]),
    ("chnsenticorp", "train", None, ["0", "1"]),
])
def test_real_readers(data_dir: Path, name: str, split: str, first: tuple | None, labels: list[str]) -> None:
    task = get_task(name)
    examples = task.read(data_dir, split)[:200]
    assert len(examples) == 200
    if first is not None:
        assert (examples[0].text, examples[0].text_pair, examples[0].label) == first
    assert task.label_list(examples) == labels
    assert all(e.text for e in examples) and all((e.text_pair is not None) == (task.text_pair_column is not None)
                                                 for e in examples)


def test_mrpc_header_with_bom_and_qnli_dev_only(data_dir: Path) -> None:
    mrpc = get_task("mrpc").read(data_dir, "dev")
    assert len(mrpc) == 408 and mrpc[0].label == "1" and mrpc[0].text.startswith("He said the foodservice pie")
    assert len(get_task("qnli").read(data_dir, "validation")) == 5463
    with pytest.raises(PlmkitError, match=r"task 'qnli': no train file; looked for .*QNLI/train.tsv"):
        get_task("qnli").read(data_dir, "train")
    assert len(get_task("sst2").read(data_dir / "glue" / "SST-2", "dev")) == 872  # the task's own folder works too


def test_glue_layouts_not_in_the_data_folder(tmp_path: Path) -> None:
    glue = tmp_path / "glue"
    for folder, name, text in [
        ("RTE", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA man sleeps.\tA man rests.\tentailment\n"),
        ("WNLI", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tThe cup fell.\tIt fell.\t1\n"),
        ("QQP", "train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tHow?\tWhy?\t0\n"),
        ("MNLI", "dev_matched.tsv", "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
         "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
         "0\t1\t1n\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe cat sat.\tA cat sat.\tentailment\tentailment\t"
         "neutral\tentailment\tentailment\tentailment\n"),
        ("MNLI", "dev_mismatched.tsv", "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
         "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
         "0\t1\t1n\tletters\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tDear all.\tNobody.\tcontradiction\tcontradiction\n"),
    ]:
        (glue / folder).mkdir(parents=True, exist_ok=True)
        (glue / folder / name).write_text(text, encoding="utf-8")
    rte = get_task("rte").read(tmp_path, "train")[0]
    assert (rte.text, rte.text_pair, rte.label) == ("A man sleeps.", "A man rests.", "entailment")
    assert get_task("wnli").read(tmp_path, "validation")[0].label == "1"
    qqp = get_task("qqp").read(tmp_path, "train")[0]
    assert (qqp.text, qqp.text_pair, qqp.label) == ("How?", "Why?", "0")
    mnli = get_task("mnli")
    matched = mnli.read(tmp_path, "validation")[0]  # "validation" is the matched dev set
    assert (matched.text, matched.text_pair, matched.label) == ("The cat sat.", "A cat sat.", "entailment")
    assert mnli.read(tmp_path, "dev_mismatched")[0].label == "contradiction"
    with pytest.raises(PlmkitError, match=r"task 'mnli' has no split 'dev_x'; choose from: train, validation_matched"):
        mnli.read(tmp_path, "dev_x")


def test_generic_files_with_column_flags(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text('review,stars,extra\n"Great, really great",pos,1\nbad,neg,2\n')
    examples = get_task("csv", text_column="review", label_column="stars").read(tmp_path, "train")
    assert [(e.text, e.label) for e in examples] == [("Great, really great", "pos"), ("bad", "neg")]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"a": "x", "b": "y", "sim": 4.5}, {"a": "p", "b": "q", "sim": 1}]) + "\n")
    reg = get_task("jsonl", text_column="a", text_pair_column="b", label_column="sim", regression=True)
    assert [(e.text, e.text_pair, e.label) for e in reg.read(tmp_path, "dev")] == [("x", "y", 4.5), ("p", "q", 1.0)]
    assert reg.metrics == ("spearman", "pearson") and reg.label_list([]) == ["score"]
    (tmp_path / "test.tsv").write_text("text\nunlabelled row\n")  # no label column: a test split
    assert get_task("tsv").read(tmp_path, "test")[0].label is None
    bbc = tmp_path / "bbc.jsonl"
    bbc.write_text(json.dumps({"id": 1, "category": "tech", "title": "t", "article": "Chips.", "summary": "s"}) + "\n")
    (article,) = get_task("jsonl", text_column="article", label_column="category").read(bbc)
    assert (article.text, article.label) == ("Chips.", "tech")


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_names_file_and_line(tmp_path: Path, tok: BertTokenizer) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood movie\t1\nbad movie\n")
    with pytest.raises(PlmkitError, match=r"train.tsv:3: missing column 'label' \(the row has 1 of 2\)"):
        get_task("sst2").read(path)
    path.write_text("")
    with pytest.raises(PlmkitError, match=r"train.tsv: empty file"):
        get_task("sst2").read(path)
    path.write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff movie\t0\n")
    with pytest.raises(PlmkitError, match=r"train.tsv:3: not valid UTF-8"):
        get_task("sst2").read(path)
    path.write_text("sentence1\tsentence2\tscore\na\tb\thigh\n")
    with pytest.raises(PlmkitError, match=r"train.tsv:2: label 'high' is not a number"):
        get_task("stsb").read(path)
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(PlmkitError, match=r"train.jsonl:2: not valid JSON"):
        get_task("jsonl").read(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"label": "y"}\n')
    with pytest.raises(PlmkitError, match=r"train.jsonl:2: missing key 'text'"):
        get_task("jsonl").read(tmp_path)
    path.write_text("sentence\tlabel\ngood movie\t1\nbad movie\t2\n")
    examples = get_task("sst2").read(path)
    with pytest.raises(PlmkitError, match=r"train.tsv:3: unknown label '2'; the model's labels are: 0, 1"):
        get_task("sst2").featurize(examples, tok, {"0": 0, "1": 1})


# ---------------------------------------------------------------------------------------------- hub
def test_hub_fallback_offline_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setenv("PLMKIT_DATA", str(tmp_path / "no-data"))
    with pytest.raises(PlmkitError) as err:
        get_task("sst2").read(None, "train")
    message = str(err.value)
    assert "\n" not in message and "nyu-mll/glue (sst2)" in message and "pass --data-dir" in message
    with pytest.raises(PlmkitError, match="no hub copy to download; pass --data-dir"):
        get_task("chnsenticorp").read(None, "train")


def test_default_data_dir_from_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLMKIT_DATA", str(data_dir))
    assert len(get_task("sst2").read(split="dev")) == 872


def test_hub_rows_become_examples() -> None:
    datasets = pytest.importorskip("datasets")
    sst2 = datasets.Dataset.from_dict({"sentence": ["fine", "awful"], "label": [1, 0], "idx": [0, 1]})
    assert [(e.text, e.label) for e in get_task("sst2").from_hf_dataset(sst2)] == [("fine", "1"), ("awful", "0")]
    qnli = datasets.Dataset.from_dict({"question": ["q?"] * 3, "sentence": ["s."] * 3, "label": [0, 1, -1],
                                       "idx": [0, 1, 2]})
    assert [e.label for e in get_task("qnli").from_hf_dataset(qnli, "test")] == ["entailment", "not_entailment", None]
    stsb = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [3.8], "idx": [0]})
    (pair,) = get_task("stsb").from_hf_dataset(stsb)
    assert (pair.text, pair.text_pair, pair.label) == ("a", "b", pytest.approx(3.8))


# ---------------------------------------------------------------------------------------------- features and heads
def test_featurize_collate_are_the_model_forward_kwargs(tok: BertTokenizer) -> None:
    task = get_task("mrpc")
    examples = [TextExample("good movie", "bad movie", "1"), TextExample("good", "good good good movie", "0")]
    features = task.featurize(examples, tok, {"0": 0, "1": 1}, max_length=128)
    assert features[0]["labels"] == 1 and features[0]["token_type_ids"].count(1) > 0
    assert all(isinstance(v, (list, int)) for f in features for v in f.values())
    batch = task.collate(features)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"][0].sum() == len(features[0]["input_ids"])  # dynamic padding to the longest
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    model = task.build_model(tiny_config(tok), ["0", "1"])
    assert set(batch) <= set(inspect.signature(model.forward).parameters)
    assert model(**batch).loss is not None
    short = task.featurize(examples, tok, {"0": 0, "1": 1}, max_length=8)
    assert max(len(f["input_ids"]) for f in short) == 8


def test_regression_head_and_checkpoint_directory(tok: BertTokenizer, tmp_path: Path) -> None:
    task = get_task("stsb")
    features = task.featurize([TextExample("good", "bad", 1.5), TextExample("bad", "bad", 4.0)], tok)
    batch = task.collate(features)
    assert batch["labels"].dtype == torch.float and batch["labels"].tolist() == [1.5, 4.0]
    model = task.build_model(tiny_config(tok), task.label_list([]))
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert model(**batch).logits.shape == (2, 1)
    BertModel(tiny_config(tok)).save_pretrained(tmp_path / "encoder", tokenizer=tok)
    classifier = get_task("sst2").build_model(tmp_path / "encoder", ["neg", "pos"])
    assert type(classifier).__name__ == "BertForSequenceClassification"
    assert classifier.config.id2label == {0: "neg", 1: "pos"}


def test_evaluate_streams_in_batches_and_restores_mode(tok: BertTokenizer) -> None:
    task = get_task("mrpc")
    texts = ["good movie", "bad movie", "good", "bad", "movie good bad", "a b c", "x y", "good good"]
    examples = [TextExample(a, b, str((i * 7) % 3 % 2)) for i, (a, b) in
                enumerate((a, b) for a in texts for b in texts[:4])]
    features = task.featurize(examples, tok, {"0": 0, "1": 1})
    torch.manual_seed(1)
    model = task.build_model(tiny_config(tok), ["0", "1"])
    model.train()
    results = [evaluate(model, task, examples, features, batch_size=size) for size in (1, 5, 64)]
    assert model.training
    model.eval()
    with torch.inference_mode():
        batch = task.collate(features)
        preds = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1).tolist()
    golds = [f["labels"] for f in features]
    for metrics in results:
        assert metrics["accuracy"] == pytest.approx(accuracy(preds, golds))
        assert metrics["f1"] == pytest.approx(f1_binary(preds, golds))
        assert metrics["loss"] == pytest.approx(results[0]["loss"], rel=1e-4)


def test_predict_gives_label_names(tok: BertTokenizer) -> None:
    task = get_task("sst2")
    model = task.build_model(tiny_config(tok), ["negative", "positive"])
    results = task.predict(model, tok, ["good movie", TextExample("bad movie")])
    assert [r["label"] in ("negative", "positive") for r in results] == [True, True]
    top = task.predict(model, tok, ["good"], top_k=2)[0]
    assert [r["label"] for r in top] in (["negative", "positive"], ["positive", "negative"])
    assert sum(r["score"] for r in top) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- zero-shot STS-B
def test_stsb_zero_shot_minilm(minilm_dir: Path, data_dir: Path) -> None:
    """Cosine of mean-pooled all-MiniLM-L6-v2 embeddings vs the gold scores. On the full dev set this gives
    Spearman 0.867 (the model's published ~0.87); every 15th pair keeps the test fast."""
    from plmkit.similarity import SentenceEncoder

    task = get_task("stsb")
    sample = task.read(data_dir, "dev")[::15]
    scores = task.zero_shot_evaluate(SentenceEncoder.from_pretrained(minilm_dir), sample)
    assert 0.84 < scores["spearman"] < 0.95 and 0.84 < scores["pearson"] < 0.95
    with pytest.raises(PlmkitError, match="zero-shot similarity needs sentence pairs"):
        get_task("sst2").zero_shot_evaluate(None, [])
