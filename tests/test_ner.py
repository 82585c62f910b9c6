"""Token classification: readers (CoNLL-2003, CLUENER, generic), sub-word label alignment, decoding to words and
entities, and streaming entity-F1 evaluation."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from torch import nn

from plmkit import BertModel, BertTokenizer, ModelConfig, PlmkitError
from plmkit.evaluation import evaluate
from plmkit.evaluation.metrics import entity_scores
from plmkit.tasks import TokenExample, get_task
from plmkit.tasks.token_classification import entity_spans, fill_missing, tag_list

WORDS = ["wash", "##ing", "##ton", "john", "##son", "visited", "ulm", "in", "may", "the", "city"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's spinning threads
    make each small op ~100x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tokenizer(directory: Path, words: list[str] = WORDS) -> BertTokenizer:
    """A WordPiece vocabulary whose splits we know: "washington" -> wash ##ing ##ton, "johnson" -> john ##son."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars, *[f"##{c}" for c in chars]]
    path = directory / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return BertTokenizer.from_file(path)


@pytest.fixture()
def tok(tmp_path: Path) -> BertTokenizer:
    return make_tokenizer(tmp_path)


def tiny_config(tok: BertTokenizer) -> ModelConfig:
    return ModelConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)


class LookupTagger(nn.Module):
    """A fake token classifier whose logits depend only on the token id, so decoding can be checked exactly."""

    def __init__(self, tok: BertTokenizer, labels: list[str], token_tags: dict[str, str]) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=len(tok), hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8,
                                  id2label=dict(enumerate(labels)))
        table = torch.full((len(tok), len(labels)), -5.0)
        table[:, labels.index("O")] = 5.0
        for token, tag in token_tags.items():
            table[tok.convert_tokens_to_ids(token)] = -5.0
            table[tok.convert_tokens_to_ids(token), labels.index(tag)] = 5.0
        self.table = nn.Parameter(table)

    @property
    def device(self) -> torch.device:
        return self.table.device

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        from plmkit.outputs import TokenClassifierOutput

        return TokenClassifierOutput(logits=self.table[input_ids])


# ---------------------------------------------------------------------------------------------- readers
def test_conll2003_reader_real_file(data_dir: Path) -> None:
    task = get_task("conll2003")
    examples = task.read(data_dir, "train")
    assert len(examples) == 14041  # -DOCSTART- lines and blank lines are not sentences
    assert examples[0].tokens == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert examples[0].tags == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert examples[0].source.endswith("train.txt:3")
    assert all("-DOCSTART-" not in e.tokens for e in examples[:200])
    assert task.label_list(examples[:200]) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG",
                                               "B-PER", "I-PER"]
    assert len(task.read(data_dir, "valid")) == 3250 and len(task.read(data_dir, "test")) == 3453


def test_cluener_reader_real_file(data_dir: Path) -> None:
    examples = get_task("cluener").read(data_dir, "dev")[:200]
    first = examples[0]
    assert "".join(first.tokens).startswith("彭小军认为，国内银行现在走的是台湾的发卡模式")
    assert first.tags[:4] == ["B-name", "I-name", "I-name", "O"]
    assert first.tags[15:17] == ["B-address", "I-address"]
    labels = get_task("cluener").label_list(examples)
    assert labels[0] == "O" and "B-organization" in labels and "I-organization" in labels


def test_cluener_nested_and_bad_spans(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    nested = {"text": "《招商银行报告》",
              "label": {"book": {"《招商银行报告》": [[0, 7]]}, "company": {"招商银行": [[1, 4]]}}}
    path.write_text(json.dumps(nested, ensure_ascii=False) + "\n", encoding="utf-8")
    (example,) = get_task("cluener").read(path, "validation")
    assert example.tags == ["B-book"] + ["I-book"] * 7  # BIO keeps the longer, outer entity
    path.write_text(json.dumps({"text": "北京", "label": {"address": {"上海": [[0, 1]]}}}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    with pytest.raises(PlmkitError, match=r"dev.json:1: span \[0, 1\] of address '上海' does not match"):
        get_task("cluener").read(path, "validation")


def test_generic_conll_and_jsonl_readers(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("John B-PER x\nSmith I-PER x\n\n-DOCSTART- O x\n\nUlm B-LOC x\n")
    examples = get_task("conll", tag_column=1).read(tmp_path, "train")
    assert [(e.tokens, e.tags) for e in examples] == [(["John", "Smith"], ["B-PER", "I-PER"]), (["Ulm"], ["B-LOC"])]
    (tmp_path / "dev.jsonl").write_text(json.dumps({"words": ["a", "b"], "ner": ["O", "B-X"]}) + "\n")
    (example,) = get_task("jsonl-tokens", tokens_key="words", tags_key="ner").read(tmp_path, "dev")
    assert example.tags == ["O", "B-X"]
    (tmp_path / "dev.jsonl").write_text(json.dumps({"words": ["a", "b"], "ner": ["O"]}) + "\n")
    with pytest.raises(PlmkitError, match=r"dev.jsonl:1: 2 tokens but 1 tags"):
        get_task("jsonl-tokens", tokens_key="words", tags_key="ner").read(tmp_path, "dev")
    (tmp_path / "test.txt").write_text("John\n")
    with pytest.raises(PlmkitError, match=r"test.txt:1: missing column"):
        get_task("conll", tag_column=1).read(tmp_path, "test")


def test_conll2003_from_hub_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))
    features = datasets.Features({"id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": tags})
    ds = datasets.Dataset.from_dict({"id": ["0"], "tokens": [["John", "Smith", "ran"]], "ner_tags": [[1, 2, 0]]},
                                    features=features)
    (example,) = get_task("conll2003").from_hf_dataset(ds, "train")
    assert example.tokens == ["John", "Smith", "ran"] and example.tags == ["B-PER", "I-PER", "O"]
    plain = datasets.Dataset.from_dict({"tokens": [["Ulm"]], "ner_tags": [[5]]})  # ints without names: hub order
    assert get_task("conll2003").from_hf_dataset(plain)[0].tags == ["B-LOC"]


# ---------------------------------------------------------------------------------------------- alignment
def test_first_subtoken_carries_the_word_label(tok: BertTokenizer) -> None:
    task = get_task("conll")
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    example = TokenExample(["Johnson", "visited", "Washington", "in", "May"], ["B-PER", "O", "B-LOC", "O", "O"])
    (feature,) = task.featurize([example], tok, {label: i for i, label in enumerate(labels)})
    tokens = tok.convert_ids_to_tokens(feature["input_ids"])
    assert tokens == ["[CLS]", "john", "##son", "visited", "wash", "##ing", "##ton", "in", "may", "[SEP]"]
    assert feature["labels"] == [-100, 3, -100, 0, 1, -100, -100, 0, 0, -100]
    assert feature["word_ids"] == [None, 0, 0, 1, 2, 2, 2, 3, 4, None]


def test_long_sentence_is_truncated_and_unseen_words_count_as_o(tok: BertTokenizer) -> None:
    task = get_task("conll")
    labels = ["O", "B-LOC", "I-LOC"]
    example = TokenExample(["washington"] * 10, ["B-LOC"] * 10)
    (feature,) = task.featurize([example], tok, {label: i for i, label in enumerate(labels)}, max_length=8)
    assert len(feature["input_ids"]) == len(feature["labels"]) == 8
    assert feature["labels"] == [-100, 1, -100, -100, 1, -100, -100, -100]  # 2 words fit, the 3rd is cut mid-word
    model = LookupTagger(tok, labels, {"wash": "B-LOC"})
    metrics = evaluate(model, task, [example], [feature])
    assert metrics["recall"] == pytest.approx(0.2)  # 10 gold entities, only the 2 seen words are found
    assert metrics["precision"] == 1.0


def test_unknown_tag_names_the_tag_and_sentence(tok: BertTokenizer, tmp_path: Path) -> None:
    (tmp_path / "dev.txt").write_text("Ulm B-LOC\n\nJohn B-PER\n")
    task = get_task("conll")
    examples = task.read(tmp_path, "dev")
    with pytest.raises(PlmkitError, match=r"dev.txt:3: unknown label 'B-PER'; the model's labels are: O, B-LOC"):
        task.featurize(examples, tok, {"O": 0, "B-LOC": 1, "I-LOC": 2})


# ---------------------------------------------------------------------------------------------- decoding
def test_tag_helpers() -> None:
    assert tag_list(["O", "B-PER", "B-LOC", "I-LOC"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "B-LOC", "I-PER"]) == [
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("LOC", 5, 6), ("PER", 6, 7)]
    assert fill_missing(["B-X", None, "I-X", None, "O", None]) == ["B-X", "I-X", "I-X", "O", "O", "O"]


def test_predict_maps_entities_back_to_words_and_characters(tok: BertTokenizer) -> None:
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    model = LookupTagger(tok, labels, {"john": "B-PER", "##son": "I-PER", "wash": "B-LOC", "city": "I-LOC",
                                       "##ing": "O"})
    task = get_task("conll")
    text = "Johnson visited Washington  city, in May."
    (result,) = task.predict(model, tok, [text])
    assert result["words"] == ["Johnson", "visited", "Washington", "city", ",", "in", "May", "."]
    assert result["tags"] == ["B-PER", "O", "B-LOC", "I-LOC", "O", "O", "O", "O"]  # the first sub-token decides
    per, loc = result["entities"]
    assert (per["type"], per["text"], per["start"], per["end"]) == ("PER", "Johnson", 0, 1)
    assert (loc["type"], loc["text"], loc["start"], loc["end"]) == ("LOC", "Washington  city", 2, 4)
    assert text[loc["char_start"]:loc["char_end"]] == "Washington  city"
    assert 0.9 < loc["score"] <= 1.0
    (words,) = task.predict(model, tok, [["Johnson", "visited", "Washington", "city"]])
    assert [e["text"] for e in words["entities"]] == ["Johnson", "Washington city"]


def test_evaluate_streams_and_matches_direct_scoring(tok: BertTokenizer) -> None:
    task = get_task("conll")
    sentences = [["john", "visited", "ulm"], ["washington", "in", "may"], ["the", "city"], ["johnson"]] * 5
    gold = [["B-PER", "O", "B-LOC"], ["B-LOC", "O", "O"], ["O", "O"], ["B-PER"]] * 5
    examples = [TokenExample(s, t, str(i)) for i, (s, t) in enumerate(zip(sentences, gold, strict=True))]
    labels = task.label_list(examples)
    features = task.featurize(examples, tok, {label: i for i, label in enumerate(labels)})
    torch.manual_seed(0)
    model = task.build_model(tiny_config(tok), labels)
    assert type(model).__name__ == "BertForTokenClassification" and model.config.labels == labels
    model.train()
    by_batch = {size: evaluate(model, task, examples, features, batch_size=size) for size in (1, 3, 64)}
    assert model.training  # evaluate restores the mode it found
    model.eval()
    with torch.inference_mode():
        batch = task.collate(features)
        ids = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
    predicted = []
    for feature, row in zip(features, ids.tolist(), strict=True):
        tags = {}
        for position, word in enumerate(feature["word_ids"]):
            if word is not None and word not in tags:
                tags[word] = labels[row[position]]
        predicted.append([tags[w] for w in range(len(tags))])
    expected = entity_scores(gold, predicted)
    for metrics in by_batch.values():
        for name in ("f1", "precision", "recall", "accuracy"):
            assert metrics[name] == pytest.approx(expected[name])
    assert all("loss" in metrics for metrics in by_batch.values())


def test_character_level_prediction_for_chinese(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path, WORDS + ["北", "京", "是", "首", "都"])
    labels = ["O", "B-LOC", "I-LOC"]
    model = LookupTagger(tok, labels, {"北": "B-LOC", "京": "I-LOC"})
    (result,) = get_task("cluener").predict(model, tok, ["北 京是首都"])
    assert result["words"] == ["北", "京", "是", "首", "都"]  # one word per character; the space is not a word
    (entity,) = result["entities"]
    assert (entity["type"], entity["text"], entity["char_start"], entity["char_end"]) == ("LOC", "北 京", 0, 3)
    (words,) = get_task("cluener").predict(model, tok, [["北", "京", "是"]])
    assert words["entities"][0]["text"] == "北京"  # character-level words join with no space
    (tmp_path / "test.json").write_text('{"id": 0, "text": "北京"}\n', encoding="utf-8")
    (unlabelled,) = get_task("cluener").read(tmp_path, "test")
    assert unlabelled.tokens == ["北", "京"] and unlabelled.tags is None


# ---------------------------------------------------------------------------------------------- case marks
def test_case_token_types_mark_every_sub_token_of_a_capitalised_word(tok: BertTokenizer) -> None:
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    label2id = {label: i for i, label in enumerate(labels)}
    example = TokenExample(["Johnson", "visited", "WASHINGTON", "in", "may"], ["B-PER", "O", "B-LOC", "O", "O"])
    (marked,) = get_task("conll", case_token_types=True).featurize([example], tok, label2id)
    (plain,) = get_task("conll").featurize([example], tok, label2id)
    assert tok.convert_ids_to_tokens(marked["input_ids"]) == [
        "[CLS]", "john", "##son", "visited", "wash", "##ing", "##ton", "in", "may", "[SEP]"]
    assert marked["token_type_ids"] == [0, 1, 1, 0, 1, 1, 1, 0, 0, 0]
    assert plain["token_type_ids"] == [0] * 10
    assert {k: v for k, v in marked.items() if k != "token_type_ids"} == {
        k: v for k, v in plain.items() if k != "token_type_ids"}
    with pytest.raises(PlmkitError, match="case_token_types must be true or false"):
        get_task("conll", case_token_types="yes")


def test_case_token_types_travel_in_the_config_to_prediction(tok: BertTokenizer, tmp_path: Path) -> None:
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    torch.manual_seed(0)
    model = get_task("conll", case_token_types=True).build_model(tiny_config(tok), labels)
    assert model.config.case_token_types
    model.save_pretrained(tmp_path / "marked", tokenizer=tok)
    assert json.loads((tmp_path / "marked" / "config.json").read_text())["case_token_types"] is True
    get_task("conll").build_model(tiny_config(tok), labels).save_pretrained(tmp_path / "plain", tokenizer=tok)
    assert "case_token_types" not in json.loads((tmp_path / "plain" / "config.json").read_text())

    task = get_task("conll")  # not told: the model's config decides
    loaded = task.build_model(tmp_path / "marked")
    assert loaded.config.case_token_types and task.case_marks
    seen = []
    loaded.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["token_type_ids"]),
                                     with_kwargs=True)
    get_task("conll").predict(loaded, tok, ["Johnson visited Washington", "the city"])
    assert seen[0].tolist() == [[0, 1, 1, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0]]
    off = get_task("conll", case_token_types=False)  # an explicit setting wins over the config
    off.configure(loaded.config)
    assert not off.case_marks

    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "marked")
    assert hf.config.case_token_types is True


def test_case_token_types_need_two_token_types(tok: BertTokenizer) -> None:
    config = ModelConfig(vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=4, intermediate_size=37,
                         type_vocab_size=1)
    with pytest.raises(PlmkitError, match="needs a segment embedding of 2 types.*type_vocab_size=1"):
        get_task("conll", case_token_types=True).build_model(config, ["O", "B-X", "I-X"])


def test_finetune_with_case_token_types_keeps_them_through_evaluate_and_predict(tok: BertTokenizer, tmp_path: Path,
                                                                               capsys) -> None:
    from plmkit.cli import main

    rows = ["Johnson B-PER\nvisited O\nUlm B-LOC\n", "the O\ncity O\nin O\nMay O\n", "Washington B-LOC\n"] * 4
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.txt", "dev.txt"):
        (data / name).write_text("\n".join(rows), encoding="utf-8")
    torch.manual_seed(0)
    BertModel(tiny_config(tok)).save_pretrained(tmp_path / "base", tokenizer=tok)  # a pretrained encoder
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "conll", "--model", str(tmp_path / "base"), "--data-dir", str(data),
                 "--output", str(out), "task.case_token_types=true", "train.max_steps=2", "train.batch_size=4",
                 "impl.progress=false", "impl.tensorboard=false"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["case_token_types"] is True
    capsys.readouterr()
    assert main(["evaluate", "--task", "conll", "--model", str(out / "model"), "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["examples"] == 12
    inputs = tmp_path / "in.txt"
    inputs.write_text("Johnson visited Ulm\n", encoding="utf-8")
    assert main(["predict", "--model", str(out / "model"), "--input", str(inputs)]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert isinstance(json.loads(line)["prediction"], list)  # entities; the marks themselves: the test above
