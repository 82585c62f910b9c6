"""Parity with Hugging Face `transformers` on tiny random BERTs: every head's outputs and losses, both directions."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.models import MODEL_CLASSES

transformers = pytest.importorskip("transformers")

ATOL = 1e-5

# Several sizes, activations and segment-vocabulary sizes (post-LN, as BERT).
CONFIGS = {
    "tiny": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
    "wider": dict(vocab_size=120, hidden_size=64, num_hidden_layers=3, num_attention_heads=8, intermediate_size=128,
                  type_vocab_size=3, hidden_act="relu", max_position_embeddings=64),
    "one-layer": dict(vocab_size=77, hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                      type_vocab_size=1, hidden_act="gelu_new", layer_norm_eps=1e-7),
}


def make_inputs(cfg: dict, batch: int = 3, seq: int = 7, token_types: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, cfg["vocab_size"], (batch, seq), generator=g)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[1, 4:] = 0  # a padded row
    attention_mask[2, 6:] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_types:
        inputs["token_type_ids"] = torch.randint(0, cfg.get("type_vocab_size", 2), (batch, seq), generator=g)
    return inputs


def make_labels(arch: str, cfg: dict, inputs: dict, num_labels: int, problem: str | None, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    B, T = inputs["input_ids"].shape
    if arch == "BertForMaskedLM":
        labels = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
        labels[torch.rand(B, T, generator=g) > 0.3] = -100
        labels[inputs["attention_mask"] == 0] = -100
        return {"labels": labels}
    if arch == "BertForPreTraining":
        labels = make_labels("BertForMaskedLM", cfg, inputs, num_labels, problem, seed)["labels"]
        return {"labels": labels, "next_sentence_label": torch.randint(0, 2, (B,), generator=g)}
    if arch == "BertForNextSentencePrediction":
        return {"labels": torch.randint(0, 2, (B,), generator=g)}
    if arch == "BertForSequenceClassification":
        if problem == "regression":
            return {"labels": torch.rand(B, generator=g) * 5}
        if problem == "multi_label_classification":
            return {"labels": (torch.rand(B, num_labels, generator=g) > 0.5).float()}
        return {"labels": torch.randint(0, num_labels, (B,), generator=g)}
    if arch == "BertForTokenClassification":
        labels = torch.randint(0, num_labels, (B, T), generator=g)
        labels[:, 0] = -100
        labels[inputs["attention_mask"] == 0] = -100
        return {"labels": labels}
    if arch == "BertForQuestionAnswering":
        # One answer position past the end: clamped and ignored, as an answer cut off by a window.
        return {"start_positions": torch.tensor([1, 2, T + 3]), "end_positions": torch.tensor([3, 2, T + 5])}
    return {}


OUTPUT_FIELDS = ["loss", "logits", "prediction_logits", "seq_relationship_logits", "start_logits", "end_logits",
                 "last_hidden_state", "pooler_output"]
PER_TOKEN = {"prediction_logits", "start_logits", "end_logits", "last_hidden_state"}

CASES = [
    ("BertModel", None, 2), ("BertForMaskedLM", None, 2), ("BertForPreTraining", None, 2),
    ("BertForNextSentencePrediction", None, 2), ("BertForSequenceClassification", "single_label_classification", 3),
    ("BertForSequenceClassification", "regression", 1), ("BertForSequenceClassification",
                                                          "multi_label_classification", 4),
    ("BertForTokenClassification", None, 5), ("BertForQuestionAnswering", None, 2),
]


def hf_model(arch: str, cfg: dict, num_labels: int, problem: str | None, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(**cfg, num_labels=num_labels, problem_type=problem)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a swapped weight cannot hide
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def compare(hf_out, ours, real: torch.Tensor | None = None, per_token_logits: bool = False) -> None:
    """Every output field equal within ATOL. With `real` (the attention mask of an unpadded run), per-token
    outputs are compared at real tokens, and hidden states must be zero at padded ones."""
    per_token = PER_TOKEN | ({"logits"} if per_token_logits else set())
    for field in OUTPUT_FIELDS:
        theirs = getattr(hf_out, field, None)
        if theirs is None:
            continue
        mine = getattr(ours, field)
        assert mine is not None, field
        if real is not None and field in per_token:
            mine, theirs = mine[real], theirs[real]
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=1e-5, msg=lambda m, f=field: f"{f}: {m}")
    assert len(ours.hidden_states) == len(hf_out.hidden_states)
    for mine, theirs in zip(ours.hidden_states, hf_out.hidden_states, strict=True):
        if real is not None:
            assert not mine[~real].any(), "padded positions must be zero on the unpadded path"
            mine, theirs = mine[real], theirs[real]
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("size", list(CONFIGS))
@pytest.mark.parametrize("arch,problem,num_labels", CASES)
@pytest.mark.parametrize("token_types", [True, False], ids=["segments", "no-segments"])
@pytest.mark.parametrize("unpad", [False, True], ids=["padded", "unpadded"])
def test_hf_to_plmkit_parity(tmp_path, size, arch, problem, num_labels, token_types, unpad):
    cfg = CONFIGS[size]
    hf = hf_model(arch, cfg, num_labels, problem)
    hf.save_pretrained(tmp_path)
    ours = MODEL_CLASSES[arch].from_pretrained(tmp_path)
    assert not ours.training
    ours.encoder.unpad = unpad
    inputs = make_inputs(cfg, token_types=token_types)
    labels = make_labels(arch, cfg, inputs, num_labels, problem)
    if unpad and arch == "BertForQuestionAnswering":
        # transformers' span loss takes its softmax over padded positions too, whose logits differ on the
        # unpadded path; the loss is compared on the padded path above and on an unpadded batch below.
        labels = {}
    with torch.no_grad():
        theirs = hf(**inputs, **labels, output_hidden_states=True)
        mine = ours(**inputs, **labels, output_hidden_states=True)
    real = inputs["attention_mask"].bool() if unpad else None
    compare(theirs, mine, real=real, per_token_logits=arch in ("BertForMaskedLM", "BertForTokenClassification"))
    if unpad and arch == "BertForQuestionAnswering":
        full = {k: v[:1, :] for k, v in inputs.items()}  # row 0 has no padding
        labels = make_labels(arch, cfg, full, num_labels, problem)
        labels = {k: v[:1] for k, v in labels.items()}
        with torch.no_grad():
            torch.testing.assert_close(ours(**full, **labels).loss, hf(**full, **labels).loss, atol=ATOL, rtol=1e-5)
    # The package-level loader finds the same heads from the weights alone.
    assert type(plmkit.from_pretrained(tmp_path)).__name__ == arch


@pytest.mark.parametrize("arch,problem,num_labels", CASES)
def test_plmkit_to_hf_round_trip(tmp_path, arch, problem, num_labels):
    cfg = CONFIGS["tiny"]
    config = plmkit.ModelConfig.from_hf_dict({**cfg, "num_labels": num_labels, "problem_type": problem})
    torch.manual_seed(3)
    ours = MODEL_CLASSES[arch](config).eval()
    ours.save_pretrained(tmp_path)
    hf, info = getattr(transformers, arch).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    hf.eval()
    inputs = make_inputs(cfg)
    labels = make_labels(arch, cfg, inputs, num_labels, problem)
    ours.encoder.unpad = False
    with torch.no_grad():
        compare(hf(**inputs, **labels, output_hidden_states=True), ours(**inputs, **labels, output_hidden_states=True))
    # and back again into plmkit, bit for bit
    again = MODEL_CLASSES[arch].from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_attentions_match_hf(tmp_path):
    cfg = CONFIGS["tiny"]
    hf = transformers.BertModel(transformers.BertConfig(**cfg, attn_implementation="eager")).eval()
    hf.save_pretrained(tmp_path)
    ours = plmkit.BertModel.from_pretrained(tmp_path)
    ours.encoder.unpad = False
    inputs = make_inputs(cfg)
    with torch.no_grad():
        theirs = hf(**inputs, output_attentions=True)
        mine = ours(**inputs, output_attentions=True)
    for a, b in zip(mine.attentions, theirs.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(mine.last_hidden_state, theirs.last_hidden_state, atol=ATOL, rtol=1e-5)


def training_pair(tmp_path, arch: str) -> tuple:
    """The tiny config with dropout off as transformers `arch` and as plmkit's class of that name, same weights, both
    in train mode, and inputs for them."""
    cfg = {**CONFIGS["tiny"], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    hf = hf_model(arch, cfg, 2, None)
    hf.save_pretrained(tmp_path)
    ours = getattr(plmkit, arch).from_pretrained(tmp_path)
    hf.train(), ours.train()
    return hf, ours, make_inputs(cfg)


def test_training_mode_gradients_match(tmp_path):
    """Backward through the fused QKV equals backward through separate Q, K, V (dropout off)."""
    hf, ours, inputs = training_pair(tmp_path, "BertForSequenceClassification")
    labels = torch.tensor([0, 1, 1])
    hf(**inputs, labels=labels).loss.backward()
    ours(**inputs, labels=labels).loss.backward()
    theirs = hf.bert.encoder.layer[0].attention.self
    grad_q = ours.encoder.layers[0].attn.qkv_proj.weight.grad.chunk(3)[0]
    torch.testing.assert_close(grad_q, theirs.query.weight.grad, atol=ATOL, rtol=1e-4)
    # The last layer computes [CLS] alone (only the pooler reads it): Q from that row, K and V from every token.
    last, theirs_last = ours.encoder.layers[-1], hf.bert.encoder.layer[-1]
    for mine, name in zip(last.attn.qkv_proj.weight.grad.chunk(3), ("query", "key", "value"), strict=True):
        torch.testing.assert_close(mine, getattr(theirs_last.attention.self, name).weight.grad, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(last.mlp.in_proj.weight.grad, theirs_last.intermediate.dense.weight.grad,
                               atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(ours.encoder.embed.token.weight.grad, hf.bert.embeddings.word_embeddings.weight.grad,
                               atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_first_token_only_last_layer_equals_the_full_one(norm_position):
    """Pooled-only heads run the last layer for [CLS] alone: the same logits and gradients as the full last layer
    (forced here by asking for every hidden state), with and without unpadding, post- and pre-LN; a left-padded
    batch (position 0 is padding somewhere) takes the full path."""
    torch.manual_seed(0)
    config = plmkit.ModelConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                                hidden_dropout=0.0, attention_dropout=0.0, norm_position=norm_position, num_labels=3)
    model = plmkit.BertForSequenceClassification(config).train()
    inputs, labels = make_inputs(CONFIGS["tiny"]), torch.tensor([0, 2, 1])
    for unpad in (True, False):
        model.encoder.unpad = unpad
        first = model(**inputs, labels=labels)
        first_grads = torch.autograd.grad(first.loss, list(model.parameters()))
        full = model(**inputs, labels=labels, output_hidden_states=True)
        full_grads = torch.autograd.grad(full.loss, list(model.parameters()))
        torch.testing.assert_close(first.logits, full.logits, atol=1e-6, rtol=1e-5)
        for a, b in zip(first_grads, full_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    out = model.encoder(inputs["input_ids"], inputs["attention_mask"], first_token_only=True)
    assert out.last_hidden_state.shape == (3, 1, 32)
    left = {**inputs, "attention_mask": inputs["attention_mask"].flip(1)}
    model.encoder.unpad = True
    torch.testing.assert_close(model(**left).logits, model(**left, output_hidden_states=True).logits)
    with pytest.raises(ValueError, match="first_token_only"):
        model.encoder(inputs["input_ids"], first_token_only=True, output_attentions=True)


@pytest.mark.parametrize("masked_only", [False, True])
def test_pretraining_gradients_match_with_the_sparse_tied_lookup(tmp_path, masked_only):
    """With MLM labels the tied token lookup's gradient is sparse and autograd adds it into the head's dense one:
    the embedding's .grad is dense and equals transformers'. A batch with no labelled position (NSP alone) keeps
    the dense lookup, so the weight still gets a dense gradient; the embedding module is left as it was."""
    hf, ours, inputs = training_pair(tmp_path, "BertForPreTraining")
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 1], labels[1, 2], labels[2, 5] = 7, 11, 13
    nsp = torch.tensor([0, 1, 0])
    hf(**inputs, labels=labels, next_sentence_label=nsp).loss.backward()
    ours(**inputs, labels=labels, next_sentence_label=nsp, masked_only=masked_only).loss.backward()
    grad = ours.encoder.embed.token.weight.grad
    assert not grad.is_sparse and ours.encoder.embed.token.sparse is False
    torch.testing.assert_close(grad, hf.bert.embeddings.word_embeddings.weight.grad, atol=ATOL, rtol=1e-4)
    ours.zero_grad(set_to_none=True)
    out = ours(**inputs, labels=torch.full_like(labels, -100), next_sentence_label=nsp)
    out.nsp_loss.backward()
    assert not ours.encoder.embed.token.weight.grad.is_sparse
