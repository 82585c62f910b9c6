"""Extractive QA: the SQuAD reader and its article split, sliding windows with answer positions, n-best span
decoding over windows, and SQuAD EM/F1 through the streaming evaluator."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from plmkit import BertTokenizer, ModelConfig, PlmkitError
from plmkit.evaluation import evaluate
from plmkit.outputs import QuestionAnsweringOutput
from plmkit.tasks import Answer, QAExample, get_task
from plmkit.tasks.question_answering import SpanCollector, answer_positions

WORDS = [f"x{i}" for i in range(60)] + ["what", "where"]
CONTEXT = " ".join(f"x{i}" for i in range(40))  # one token per word


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
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *[f"##{c}" for c in chars]]
    (tmp_path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    return BertTokenizer.from_file(tmp_path / "vocab.txt")


def example(answer_words: str, qid: str = "q") -> QAExample:
    start = CONTEXT.index(answer_words)
    return QAExample("what where", CONTEXT, [Answer(answer_words, start)], qid)


def window_words(tok: BertTokenizer, feature: dict, start: int, end: int) -> str:
    return " ".join(tok.convert_ids_to_tokens(feature["input_ids"][start:end + 1]))


class SpanOracle(nn.Module):
    """A fake QA model: the start logit is high on one token id and the end logit on another."""

    def __init__(self, tok: BertTokenizer, start_token: str, end_token: str) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=len(tok), hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8)
        self.start_id, self.end_id = tok.convert_tokens_to_ids(start_token), tok.convert_tokens_to_ids(end_token)
        self.dummy = nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.dummy.device

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None, end_positions=None):
        start = (input_ids == self.start_id).float() * 10
        end = (input_ids == self.end_id).float() * 10
        return QuestionAnsweringOutput(start_logits=start, end_logits=end)


# ---------------------------------------------------------------------------------------------- reading
def test_squad_reader_and_article_split(data_dir: Path) -> None:
    examples = get_task("squad").read(data_dir, "validation")
    assert len(examples) == 10570
    first = examples[0]
    assert first.question == "When did the 1973 oil crisis begin?" and first.answers[0].text == "October 1973"
    assert first.title == "1973_oil_crisis"
    split = get_task("squad", train_articles=38)
    train, dev = split.read(data_dir, "train"), split.read(data_dir, "validation")
    assert (len(train), len(dev)) == (7836, 2734)
    assert len({e.title for e in train}) == 38 and len({e.title for e in dev}) == 10
    assert not {e.title for e in train} & {e.title for e in dev}
    with pytest.raises(PlmkitError, match="no train file; .*split it by article: train_articles=38"):
        get_task("squad").read(data_dir, "train")  # the shared folder has only the dev set


def test_squad_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "dev-v1.1.json"
    bad = {"data": [{"title": "t", "paragraphs": [{"context": "abc def", "qas": [
        {"id": "1", "question": "q?", "answers": [{"text": "def", "answer_start": 0}]}]}]}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(PlmkitError, match=r"qas\[0\] \(id 1\): answer 'def' is not at answer_start 0"):
        get_task("squad").read(tmp_path, "validation")
    del bad["data"][0]["paragraphs"][0]["qas"][0]["question"]
    path.write_text(json.dumps(bad))
    with pytest.raises(PlmkitError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing key 'question'"):
        get_task("squad").read(tmp_path, "validation")
    with pytest.raises(PlmkitError, match="leaves no article"):
        get_task("squad", train_articles=1).read(path, "train")
    path.write_text('{"data": [}')
    with pytest.raises(PlmkitError, match=r"dev-v1.1.json:1: not valid JSON"):
        get_task("squad").read(tmp_path, "validation")


def test_squad_from_hub_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"id": ["a", "b", "c"], "title": ["T1", "T1", "T2"], "context": ["abc def"] * 3,
            "question": ["q1", "q2", "q3"], "answers": [{"text": ["def"], "answer_start": [4]}] * 3}
    ds = datasets.Dataset.from_dict(rows)
    examples = get_task("squad").from_hf_dataset(ds, "validation")
    assert [e.id for e in examples] == ["a", "b", "c"] and examples[0].answers == [Answer("def", 4)]
    split = get_task("squad", train_articles=1)
    assert [e.id for e in split.from_hf_dataset(ds, "train")] == ["a", "b"]
    assert [e.id for e in split.from_hf_dataset(ds, "validation")] == ["c"]


# ---------------------------------------------------------------------------------------------- windows
def test_windows_overlap_by_doc_stride(tok: BertTokenizer) -> None:
    task = get_task("squad")
    features = task.featurize([example("x13 x14")], tok, max_length=16, doc_stride=4)
    assert len(features) > 3 and all(len(f["input_ids"]) <= 16 for f in features)
    contexts = [[t for t, o in zip(tok.convert_ids_to_tokens(f["input_ids"]), f["offset_mapping"], strict=True)
                 if o[0] >= 0] for f in features]
    assert contexts[0][:2] == ["x0", "x1"] and contexts[0][-4:] == contexts[1][:4]  # 4 shared tokens
    assert all(tok.convert_ids_to_tokens(f["input_ids"][:4]) == ["[CLS]", "what", "where", "[SEP]"] for f in features)
    assert features[0]["offset_mapping"][:4].tolist() == [[-1, -1]] * 4  # question and specials are not context


def test_answer_only_in_second_window(tok: BertTokenizer) -> None:
    features = get_task("squad").featurize([example("x13 x14")], tok, max_length=16, doc_stride=4)
    positions = [(f["start_positions"], f["end_positions"]) for f in features]
    assert positions[0] == (0, 0)  # not in the first window: both at [CLS]
    start, end = positions[1]
    assert window_words(tok, features[1], start, end) == "x13 x14"


def test_answer_straddling_the_window_cut(tok: BertTokenizer) -> None:
    features = get_task("squad").featurize([example("x9 x10 x11 x12")], tok, max_length=16, doc_stride=4)
    first_context = [t for t, o in zip(tok.convert_ids_to_tokens(features[0]["input_ids"]),
                                       features[0]["offset_mapping"], strict=True) if o[0] >= 0]
    assert "x9" in first_context and "x12" not in first_context  # the cut goes through the answer
    assert (features[0]["start_positions"], features[0]["end_positions"]) == (0, 0)
    assert window_words(tok, features[1], features[1]["start_positions"], features[1]["end_positions"]) == \
        "x9 x10 x11 x12"
    # Decoding: window 1 can only offer the cut span "x9 x10"; window 2 has the whole answer with a higher score.
    collector = SpanCollector(n_best=5, max_answer_length=30)
    for feature, (s_tok, e_tok, score) in zip(features[:2], [("x9", "x10", 3.0), ("x9", "x12", 4.0)], strict=True):
        tokens = tok.convert_ids_to_tokens(feature["input_ids"])
        start_logits, end_logits = np.zeros(len(tokens)), np.zeros(len(tokens))
        start_logits[tokens.index(s_tok)], end_logits[tokens.index(e_tok)] = score, score
        collector.add(0, start_logits, end_logits, feature["offset_mapping"])
    _, start, end, _ = collector.best(0)[0]
    assert CONTEXT[start:end] == "x9 x10 x11 x12"


def test_answer_positions_unit() -> None:
    offsets = np.array([[-1, -1], [0, 3], [4, 9], [10, 12], [-1, -1]])
    assert answer_positions(offsets, 4, 12) == (2, 3)
    assert answer_positions(offsets, 5, 9) == (2, 2)  # inside a token: that token
    assert answer_positions(offsets, 10, 20) == (0, 0)  # runs past the window


def test_span_decoding_rules() -> None:
    offsets = np.array([[-1, -1], [-1, -1], [0, 2], [3, 5], [6, 8], [9, 11], [-1, -1]])  # 2 question-ish tokens
    start = np.array([0.0, 50.0, -20.0, 5.0, 0.0, 0.0, 0.0])  # the highest start logit is on a question token
    end = np.array([0.0, 50.0, 9.0, 0.0, 1.0, 4.0, 0.0])  # the best end (index 2) lies before the best start
    collector = SpanCollector(n_best=20, max_answer_length=30)
    collector.add(0, start, end, offsets)
    ranked = collector.best(0, k=20)
    assert ranked[0][1:3] == (3, 11)  # start 3 (5.0) + end 5 (4.0): the best valid span
    assert all(s < e for _, s, e, _ in ranked)  # start <= end, never a question token
    assert all(p <= 1.0 for *_, p in ranked)
    short = SpanCollector(n_best=20, max_answer_length=2)
    short.add(0, start, end, offsets)
    assert all(e - s <= 5 for _, s, e, _ in short.best(0, k=20))  # spans of at most 2 tokens
    assert short.best(0)[0][1:3] == (3, 8)


def test_featurize_matches_transformers_run_qa(minilm_dir: Path, data_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    examples = get_task("squad").read(data_dir, "validation")[:40]
    ours = get_task("squad").featurize(examples, BertTokenizer.from_pretrained(minilm_dir), max_length=128,
                                       doc_stride=32)
    hf_tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    enc = hf_tok([e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second",
                 max_length=128, stride=32, return_overflowing_tokens=True, return_offsets_mapping=True)
    assert len(ours) == len(enc["input_ids"]) > len(examples)
    for i, feature in enumerate(ours):
        assert feature["input_ids"] == enc["input_ids"][i]
        assert feature["example_index"] == enc["overflow_to_sample_mapping"][i]
        # run_qa's prepare_train_features, written out
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq, offsets = enc.sequence_ids(i), enc["offset_mapping"][i]
        start_char = ex.answers[0].start
        end_char = start_char + len(ex.answers[0].text)
        ts = seq.index(1)
        te = len(seq) - 1 - seq[::-1].index(1)
        if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
            expected = (0, 0)
        else:
            while ts < len(offsets) and offsets[ts][0] <= start_char:
                ts += 1
            while offsets[te][1] >= end_char:
                te -= 1
            expected = (ts - 1, te + 1)
        assert (feature["start_positions"], feature["end_positions"]) == expected


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_squad_scores_the_best_span_over_windows(tok: BertTokenizer) -> None:
    task = get_task("squad")
    examples = [example("x13 x14", "right"), example("x30", "wrong"), example("x13 x14 x15", "partial")]
    features = task.featurize(examples, tok, max_length=16, doc_stride=4)
    model = SpanOracle(tok, "x13", "x14")  # always answers "x13 x14"
    for batch_size in (1, 5, 100):
        metrics = evaluate(model, task, examples, features, batch_size=batch_size)
        assert metrics["exact_match"] == pytest.approx(100 / 3)
        assert metrics["f1"] == pytest.approx(100 * (1 + 0 + 0.8) / 3)  # "x13 x14" vs "x13 x14 x15": F1 0.8
    (answer,) = task.predict(model, tok, [{"question": "what where", "context": CONTEXT}], max_length=16, doc_stride=4)
    assert answer["answer"] == "x13 x14" == CONTEXT[answer["start"]:answer["end"]]
    assert 0 < answer["score"] <= 1


def test_tiny_model_end_to_end(tok: BertTokenizer) -> None:
    task = get_task("squad")
    config = ModelConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)
    model = task.build_model(config)
    assert type(model).__name__ == "BertForQuestionAnswering"
    features = task.featurize([example("x13 x14")], tok, max_length=16, doc_stride=4)
    batch = task.collate(features)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"}
    out = model(**batch)
    out.loss.backward()
    metrics = evaluate(model, task, [example("x13 x14")], features)
    assert set(metrics) == {"f1", "exact_match", "loss"}
    with pytest.raises(PlmkitError, match="doc_stride"):
        task.featurize([example("x1")], tok, max_length=8, doc_stride=6)
    long_question = QAExample("what " * 100, CONTEXT, [Answer("x1", 3)])
    windows = task.featurize([long_question], tok, max_length=80, doc_stride=4)  # cut to 64 question tokens
    assert all(f["token_type_ids"].count(0) == 66 for f in windows)  # [CLS] + 64 + [SEP]
