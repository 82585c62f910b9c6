"""ModelConfig round trips, every shipped config, and the CLI verbs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_builds(path):
    config = plmkit.ModelConfig.from_file(path)
    with torch.device("meta"):  # build without allocating bert-base's weights
        model = plmkit.BertForPreTraining(config)
    assert model.config.head_dim * config.num_heads == config.hidden_size


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_round_trip(tmp_path, suffix):
    config = plmkit.ModelConfig(hidden_size=64, num_heads=4, num_layers=3, norm_position="pre",
                                id2label={0: "neg", 1: "pos"}, classifier_dropout=0.2)
    config.save(tmp_path / f"c{suffix}")
    assert plmkit.ModelConfig.from_file(tmp_path / f"c{suffix}") == config


def test_hf_config_round_trip():
    config = plmkit.ModelConfig(hidden_size=64, num_heads=4, activation="gelu_tanh", id2label={0: "O", 1: "B-PER"},
                                problem_type="single_label_classification", type_vocab_size=1)
    hf = config.to_hf_dict("BertForTokenClassification")
    assert hf["num_hidden_layers"] == 12 and hf["hidden_act"] == "gelu_new" and hf["label2id"] == {"O": 0, "B-PER": 1}
    assert plmkit.ModelConfig.from_hf_dict(json.loads(json.dumps(hf))) == config
    with pytest.raises(plmkit.PlmkitError, match="type_vocab_size=0 cannot be saved"):
        config.replace(type_vocab_size=0).to_hf_dict("BertModel")


def test_pre_ln_encoder_trains_and_refuses_hf_export(tmp_path):
    torch.manual_seed(0)
    config = plmkit.ModelConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                                norm_position="pre")
    model = plmkit.BertForMaskedLM(config)
    assert model.encoder.final_norm is not None
    ids = torch.randint(0, 50, (2, 6))
    model(ids, labels=ids).loss.backward()
    with pytest.raises(plmkit.PlmkitError, match="only post-LN"):
        model.save_pretrained(tmp_path)


def test_mlm_decoder_is_tied_to_embeddings():
    model = plmkit.BertForMaskedLM(plmkit.ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                                      intermediate_size=32))
    assert model.mlm.decoder_weight is model.encoder.embed.token.weight
    names = [n for n, _ in model.named_parameters()]
    assert "mlm.decoder.weight" not in names and names.count("encoder.embed.token.weight") == 1


def test_cli_has_every_verb():
    assert set(COMMANDS) >= {"info", "tokenizer", "search", "demo"}


def test_cli_info(tmp_path, capsys, minilm_dir):
    assert main(["info", str(minilm_dir)]) == 0
    out = capsys.readouterr().out
    assert "BertModel" in out and "22,713,216" in out and "pooler" in out and "6" in out
    torch.manual_seed(0)
    model = plmkit.BertForTokenClassification(plmkit.ModelConfig(vocab_size=99, hidden_size=32, num_layers=2,
                                                                 num_heads=4, intermediate_size=37,
                                                                 id2label={0: "O", 1: "B-LOC", 2: "I-LOC"}))
    model.save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BertForTokenClassification" in out and "O, B-LOC, I-LOC" in out and "classifier" in out


def test_cli_tokenizer_train_then_search(tmp_path, capsys, minilm_dir):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(["The cat sat on the mat.", "Stocks fell on Monday.", "It will rain tomorrow.",
                               "Bake the bread for forty minutes."] * 20), encoding="utf-8")
    out_dir = str(tmp_path / "tok")
    assert main(["tokenizer", "train", "--files", str(text), "--vocab-size", "200", "--out", out_dir]) == 0
    assert plmkit.load_tokenizer(tmp_path / "tok").vocab_size <= 200
    capsys.readouterr()
    assert main(["search", "--model", str(minilm_dir), "--corpus", str(text), "--top-k", "1", "weather forecast"]) == 0
    out = capsys.readouterr().out
    assert "It will rain tomorrow." in out.splitlines()[1]


def test_cli_search_bad_corpus(tmp_path, capsys, minilm_dir):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    assert main(["search", "--model", str(minilm_dir), "--corpus", str(bad), "q"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}:2: not valid UTF-8 (invalid start byte at byte 0)"


def test_demo_runs_offline(capsys, minilm_dir, tmp_path):
    """Every stage of `plmkit demo` on a tiny time budget: tokenizer, pretraining + fill-mask, fine-tuning +
    evaluation + prediction, semantic search, and the results table."""
    assert main(["demo", "--pretrain-minutes", "0.05", "--finetune-minutes", "0.05", "--workdir", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    for stage in ("== 1. tokenizer", "== 2. pretraining", "== 3. fine-tuning", "== 4. sentence embeddings",
                  "== results"):
        assert stage in out
    assert (tmp_path / "pretrain" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "finetune" / "model" / "config.json").is_file()
    right = int(out.split("semantic search precision@3")[1].split("/")[0])
    assert right >= 18, out  # semantic search must mostly find the query's topic


def test_bert_initialisation():
    torch.manual_seed(0)
    config = plmkit.ModelConfig(vocab_size=500, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256)
    model = plmkit.BertForPreTraining(config)
    weight = model.encoder.layers[0].mlp.in_proj.weight
    assert abs(weight.std().item() - config.initializer_range) < 0.002 and abs(weight.mean().item()) < 0.002
    assert not model.encoder.layers[0].mlp.in_proj.bias.any() and not model.mlm.bias.any()
    assert torch.equal(model.encoder.embed.norm.weight, torch.ones(64))
    assert not model.encoder.embed.token.weight[config.pad_token_id].any()  # the padding embedding starts at zero
    emb = model.encoder.embed.token.weight[1:]
    assert abs(emb.std().item() - config.initializer_range) < 0.002
