"""The real all-MiniLM-L6-v2 checkpoint: plmkit's model and the familiar Hugging Face workflow against transformers."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.similarity import SentenceEncoder, mean_pooling, semantic_search

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "Hello, my dog is cute",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "她今天去北京看望了她的父母，还买了很多礼物。",
    "Crème brûlée, façade, naïve café — déjà vu at the Zürich Hauptbahnhof.",
    "I love this movie 😍🎬 so much!!! #best",
    "東京は日本の首都です。",
    "a",
]


@pytest.fixture(scope="module")
def models(minilm_dir):
    ours = plmkit.BertModel.from_pretrained(minilm_dir)
    theirs = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="sdpa").eval()
    tok = plmkit.BertTokenizer.from_pretrained(minilm_dir)
    return ours, theirs, tok


@pytest.mark.parametrize("unpad", [True, False])
def test_last_hidden_state_matches_transformers(models, unpad):
    ours, theirs, tok = models
    inputs = tok(SENTENCES, padding=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any(), "the batch must be padded"
    ours.encoder.unpad = unpad
    try:
        with torch.no_grad():
            mine = ours(**inputs)
            ref = theirs(**inputs)
    finally:
        ours.encoder.unpad = True
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(mine.last_hidden_state[real], ref.last_hidden_state[real], atol=1e-5, rtol=0)
    if not unpad:
        # The padded path also computes padded positions as transformers does; their values (which nothing should
        # read) come from a differently-masked SDPA kernel and agree to float32 rounding, ~1e-5 relative.
        torch.testing.assert_close(mine.last_hidden_state, ref.last_hidden_state, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(mine.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)


def test_sentence_embeddings_match_transformers_mean_pooling(models, minilm_dir):
    _, theirs, _ = models
    hf_tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    batch = hf_tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = torch.nn.functional.normalize(mean_pooling(theirs(**batch).last_hidden_state, batch["attention_mask"]))
    mine = SentenceEncoder.from_pretrained(minilm_dir).encode(SENTENCES, batch_size=3)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=0)


def test_semantic_search_ranks_by_cosine():
    corpus = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    hits = semantic_search(torch.tensor([[0.0, 2.0]]), corpus, top_k=2)
    assert [i for i, _ in hits[0]] == [2, 1]
    assert hits[0][0][1] == pytest.approx(1.0)


def test_seed_workflow_runs_with_plmkit_names(minilm_dir):
    """The seed's Hugging Face example, word for word with plmkit names, gives transformers' loss and logits."""
    torch.manual_seed(0)
    tok = plmkit.BertTokenizer.from_pretrained(minilm_dir)
    model = plmkit.BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    inputs = tok("Hello, my dog is cute", return_tensors="pt")
    outputs = model(**inputs, labels=torch.tensor([1]).unsqueeze(0))
    outputs.loss.backward()
    assert outputs.logits.shape == (1, 2)
    assert model.classifier.proj.weight.grad is not None

    # The same with transformers, its new classifier given plmkit's freshly initialised weights.
    hf_tok = transformers.BertTokenizer.from_pretrained(minilm_dir)
    hf_model = transformers.BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    with torch.no_grad():
        hf_model.classifier.weight.copy_(model.classifier.proj.weight)
        hf_model.classifier.bias.copy_(model.classifier.proj.bias)
    hf_inputs = hf_tok("Hello, my dog is cute", return_tensors="pt")
    assert torch.equal(hf_inputs["input_ids"], inputs["input_ids"])
    model.eval(), hf_model.eval()
    with torch.no_grad():
        mine = model(**inputs, labels=torch.tensor([1]).unsqueeze(0))
        ref = hf_model(**hf_inputs, labels=torch.tensor([1]).unsqueeze(0))
    torch.testing.assert_close(mine.logits, ref.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(mine.loss, ref.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM", "BertForPreTraining",
                                      "BertForTokenClassification", "BertForQuestionAnswering"])
def test_every_task_class_loads_the_checkpoint(minilm_dir, cls_name):
    """Heads the checkpoint lacks start fresh; the backbone is the checkpoint's."""
    model = getattr(plmkit, cls_name).from_pretrained(minilm_dir)
    tok = plmkit.BertTokenizer.from_pretrained(minilm_dir)
    inputs = tok(["Hello, my dog is cute", "and so is mine"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    assert out.keys()
    ref = plmkit.BertModel.from_pretrained(minilm_dir).encoder.embed.token.weight
    assert torch.equal(model.encoder.embed.token.weight, ref)


def test_save_then_transformers_loads_same_numbers(tmp_path, minilm_dir):
    tok = plmkit.BertTokenizer.from_pretrained(minilm_dir)
    model = plmkit.BertForMaskedLM.from_pretrained(minilm_dir)
    model.save_pretrained(tmp_path, tokenizer=tok)
    hf, info = transformers.BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    batch = hf_tok(SENTENCES[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = hf.eval()(**batch).logits
        mine = model(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(mine[real], ref[real], atol=1e-4, rtol=1e-5)
