"""`plmkit pretrain` end to end on a tiny model, and every shipped pretraining recipe loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from plmkit.cli import main
from plmkit.config import ModelConfig
from plmkit.errors import PlmkitError
from plmkit.training import ImplConfig, TrainConfig, dataclass_from_dict, load_recipe
from plmkit.training.pretrain import SECTIONS, DataConfig, TokenizerConfig, model_config_from

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the river runs past an old mill where children play and the miller grinds grain into flour while "
         "rain falls on the roof and birds sing in the tall trees beside a quiet road that leads to town").split()


def write_corpus(path: Path, docs: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(docs):
        sentences = [" ".join(rng.choices(WORDS, k=rng.randint(5, 14))).capitalize() + "." for _ in range(6)]
        paragraphs.append(" ".join(sentences))
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "pretrain").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe, monkeypatch):
    monkeypatch.chdir(REPO)
    r = load_recipe(recipe, sections=SECTIONS)
    dataclass_from_dict(TrainConfig, r["train"], "train")
    dataclass_from_dict(ImplConfig, r.get("impl"), "impl")
    dataclass_from_dict(DataConfig, r["data"], "data")
    dataclass_from_dict(TokenizerConfig, r.get("tokenizer"), "tokenizer")
    if isinstance(r["model"], dict) and "from_pretrained" in r["model"]:  # a hub id: read the offline BERT instead
        from plmkit.interop.hub import offline_model_dir

        try:
            r["model"]["from_pretrained"] = str(offline_model_dir())
        except PlmkitError as e:
            pytest.skip(str(e))
    assert isinstance(model_config_from(r["model"]), ModelConfig)


def test_pretrain_cli_tiny_end_to_end_and_resume(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(REPO / "configs/pretrain/bert-tiny.yaml"), f"data.inputs=[{corpus}]",
            "tokenizer.vocab_size=120", f"train.output_dir={out}", "train.max_steps=6", "train.batch_size=8",
            "train.eval_every=3", "train.save_every_steps=3", "train.log_every=1", "data.max_seq_length=64",
            "data.workers=1", "data.validation_fraction=0.15", "impl.progress=false", "impl.tensorboard=false",
            "model.num_layers=1", "model.hidden_size=32",
            "model.num_heads=2", "model.intermediate_size=64"]
    # `model: configs/models/bert-tiny.yaml` + `model.num_layers=1` = that file with one field changed.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pretrained 6 steps" in printed and "mlm_accuracy" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "eval"] == [3, 6]
    assert (out / "loss.png").is_file()
    model, info = transformers.BertForPreTraining.from_pretrained(out / "model", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size <= 120
    first = {r["step"]: r["loss"] for r in records if r["split"] == "train"}

    # Extend the same run to 9 steps with --resume: steps 1..6 are kept, 7..9 follow.
    assert main(args + ["train.max_steps=9", "--resume"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    again = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    assert sorted(again) == list(range(1, 10))
    assert all(again[s] == first[s] for s in range(1, 7))
    assert torch.load(sorted((out / "checkpoints").iterdir())[-1] / "rng.pt", weights_only=True)


def test_pretrain_cli_errors(tmp_path, capsys):
    recipe = REPO / "configs/pretrain/bert-tiny.yaml"
    assert main(["pretrain", "--config", str(recipe), "trian.lr=1"]) == 2
    assert "unknown section(s) trian" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(recipe), "train.warmup=3"]) == 2
    assert "train: unknown key(s) warmup" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    missing = tmp_path / "missing.txt"
    assert main(["pretrain", "--config", str(recipe), f"data.inputs=[{missing}]",
                 f"train.output_dir={tmp_path / 'r'}"]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_pretrain_continues_a_checkpoint_with_its_vocabulary(tmp_path, capsys):
    """`model: {from_pretrained: DIR}` (domain-adaptive pretraining): the checkpoint's weights and tokenizer are
    kept, the MLM head it lacks starts fresh, and conflicting settings are errors."""
    import plmkit

    corpus = write_corpus(tmp_path / "corpus.txt")
    tiny = ["data.max_seq_length=64", "data.workers=1", "data.validation_fraction=0.15", "impl.progress=false",
            "impl.tensorboard=false", "train.batch_size=8", "train.eval_every=0", "train.log_every=1"]
    first = tmp_path / "first"
    assert main(["pretrain", "--config", str(REPO / "configs/pretrain/bert-tiny.yaml"), f"data.inputs=[{corpus}]",
                 "tokenizer.vocab_size=120", f"train.output_dir={first}", "train.max_steps=2", "model.num_layers=1",
                 "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64", *tiny]) == 0
    # A checkpoint without the MLM head, as a sentence-embedding BERT is published.
    encoder = plmkit.BertModel.from_pretrained(first / "model")
    encoder.save_pretrained(tmp_path / "encoder", tokenizer=plmkit.load_tokenizer(first / "model"))
    assert not any("predictions" in k for k in plmkit.interop.checkpoint.read_keys(tmp_path / "encoder"))
    capsys.readouterr()

    out = tmp_path / "adapted"
    args = ["pretrain", "--config", str(REPO / "configs/pretrain/bert-continue.yaml"), f"data.inputs=[{corpus}]",
            f"model.from_pretrained={tmp_path / 'encoder'}", f"train.output_dir={out}", "train.max_steps=1",
            "train.lr=1e-9", *tiny]
    assert main(args) == 0
    assert not (out / "tokenizer").exists()  # no new tokenizer was trained
    assert (out / "model" / "vocab.txt").read_text() == (tmp_path / "encoder" / "vocab.txt").read_text()
    adapted = plmkit.BertForPreTraining.from_pretrained(out / "model")
    after = dict(adapted.named_parameters())
    for name, p in encoder.named_parameters():  # one step at lr 1e-9: the checkpoint's weights, not fresh ones
        torch.testing.assert_close(after[name], p, atol=1e-6, rtol=0)
    assert adapted.config.num_layers == 1 and adapted.config.vocab_size == encoder.config.vocab_size

    assert main(args + ["tokenizer.vocab_size=100"]) == 2
    assert "tokenizer.vocab_size: model.from_pretrained continues a checkpoint" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(REPO / "configs/pretrain/bert-tiny.yaml"),
                 f"model.from_pretrained={tmp_path / 'encoder'}", f"train.output_dir={out}"]) == 2
    assert "not with 'file'" in capsys.readouterr().err
    assert main(args[:4] + [f"model.from_pretrained={tmp_path / 'nope'}", *args[5:]]) == 2
    assert "nope: not a model directory" in capsys.readouterr().err
