"""`plmkit.pipeline` on tiny random models saved to directories, and on all-MiniLM-L6-v2 for embeddings."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit import (
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
    ModelConfig,
    PlmkitError,
)

CHARS = list(string.ascii_lowercase + string.digits + string.punctuation)
WORDS = ["good", "bad", "movie", "john", "visited", "ulm", "who", "the"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's spinning threads
    make each small op ~100x slower; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> BertTokenizer:
    directory = tmp_path_factory.mktemp("vocab")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *CHARS, *[f"##{c}" for c in CHARS]]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizer.from_file(directory / "vocab.txt")


def save(model_class: type, tok: BertTokenizer, directory: Path, **config: object) -> Path:
    torch.manual_seed(0)
    model = model_class(ModelConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4,
                                    intermediate_size=37, **config))
    model.save_pretrained(directory, tokenizer=tok)
    return directory


def test_text_classification(tok: BertTokenizer, tmp_path: Path) -> None:
    directory = save(BertForSequenceClassification, tok, tmp_path, id2label={0: "negative", 1: "positive"})
    clf = plmkit.pipeline("text-classification", model=directory)
    result = clf("good movie")
    assert result["label"] in ("negative", "positive") and 0.5 <= result["score"] <= 1
    model = BertForSequenceClassification.from_pretrained(directory)
    with torch.inference_mode():
        probs = model(**tok("good movie", return_tensors="pt")).logits.softmax(-1)[0]
    assert result["score"] == pytest.approx(probs.max().item(), abs=1e-5)
    assert result["label"] == ["negative", "positive"][probs.argmax()]
    assert len(clf(["good", "bad movie"])) == 2
    assert set(clf(("good", "bad"))) == {"label", "score"}  # a (text, text_pair) pair
    ranked = clf("good", top_k=2)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_token_classification_aggregates_words(tok: BertTokenizer, tmp_path: Path) -> None:
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    directory = save(BertForTokenClassification, tok, tmp_path, id2label=labels)
    model = BertForTokenClassification.from_pretrained(directory)
    with torch.no_grad():  # every token says B-LOC: each word is one LOC entity, however many sub-tokens it has
        model.classifier.proj.weight.zero_()
        model.classifier.proj.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0, 0.0]))
    ner = plmkit.pipeline("ner", model=model, tokenizer=tok)
    text = "John visited Ulmxyz."
    entities = ner(text)
    assert [e["word"] for e in entities] == ["John", "visited", "Ulmxyz", "."]
    assert all(text[e["start"]:e["end"]] == e["word"] and e["entity_group"] == "LOC" for e in entities)
    assert [(e["word_start"], e["word_end"]) for e in entities] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(e["score"] > 0.99 for e in entities)
    assert isinstance(plmkit.pipeline("token-classification", model=directory)(["a b", "c"]), list)


def test_question_answering(tok: BertTokenizer, tmp_path: Path) -> None:
    qa = plmkit.pipeline("question-answering", model=save(BertForQuestionAnswering, tok, tmp_path))
    context = "john visited ulm in the good old days when the movie was bad " * 8
    answer = qa(question="who visited ulm?", context=context, max_length=32, doc_stride=8)
    assert set(answer) == {"answer", "score", "start", "end"}
    assert answer["answer"] == context[answer["start"]:answer["end"]] and answer["answer"]
    assert 0 <= answer["score"] <= 1
    both = qa([{"question": "who?", "context": "john"}, {"question": "where?", "context": "ulm"}])
    assert [a["answer"] for a in both] == ["john", "ulm"]  # a one-word context has one possible span


def test_fill_mask(tok: BertTokenizer, tmp_path: Path) -> None:
    fill = plmkit.pipeline("fill-mask", model=save(BertForMaskedLM, tok, tmp_path), top_k=3)
    fills = fill("good [MASK] movie")
    assert len(fills) == 3 and [f["score"] for f in fills] == sorted((f["score"] for f in fills), reverse=True)
    assert all(f["token_str"].removeprefix("##") in f["sequence"] for f in fills)
    assert [f["token_str"] for f in fills] == [tok.decode([f["token"]]) for f in fills]
    assert sum(f["score"] for f in fills) <= 1.0
    two = fill("[MASK] good [MASK]", top_k=2)
    assert len(two) == 2 and all(len(per_mask) == 2 for per_mask in two)
    with pytest.raises(PlmkitError, match=r"no \[MASK\] in 'good movie'"):
        fill("good movie")


def test_errors(tok: BertTokenizer, tmp_path: Path) -> None:
    directory = save(BertModel, tok, tmp_path)
    with pytest.raises(PlmkitError, match="holds a BertModel; text-classification needs BertForSequenceClassification"):
        plmkit.pipeline("text-classification", model=directory)
    with pytest.raises(PlmkitError, match=r"unknown pipeline task 'summarize'; choose from: .*fill-mask"):
        plmkit.pipeline("summarize", model=directory)
    with pytest.raises(PlmkitError, match="pass the tokenizer"):
        plmkit.pipeline("fill-mask", model=BertForMaskedLM.from_pretrained(directory))
    with pytest.raises(PlmkitError, match="unknown pooling 'max'"):
        plmkit.pipeline("feature-extraction", model=directory)("x", pooling="max")


def test_feature_extraction_and_similarity_minilm(minilm_dir: Path) -> None:
    from plmkit.similarity import SentenceEncoder

    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue today."]
    features = plmkit.pipeline("feature-extraction", model=minilm_dir)
    one = features(sentences[0])
    assert one.shape == (384,)
    reference = SentenceEncoder.from_pretrained(minilm_dir).encode(sentences, normalize=False)
    torch.testing.assert_close(features(sentences), reference, atol=1e-5, rtol=1e-4)
    tokens = features(sentences[0], pooling="none")
    assert tokens.shape == (len(BertTokenizer.from_pretrained(minilm_dir)(sentences[0])["input_ids"]), 384)
    torch.testing.assert_close(tokens.mean(0), one, atol=1e-5, rtol=1e-4)  # mean pooling = mean of the tokens
    assert features(sentences[0], pooling="cls").shape == (384,)
    similarity = plmkit.pipeline("sentence-similarity", model=minilm_dir)
    scores = similarity(sentences[0], sentences[1:])
    assert scores[0] > 0.5 > scores[1]
    same = similarity({"source_sentence": sentences[0], "sentences": sentences[1:]})
    assert same == pytest.approx(scores, abs=1e-6)
    unit = torch.nn.functional.normalize(reference, dim=-1)
    assert scores == pytest.approx((unit[1:] @ unit[0]).tolist(), abs=1e-5)
