"""Bad checkpoints and configs: each is refused with one line that names the problem, never a stack of frames."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import plmkit
from plmkit.cli import main
from plmkit.errors import PlmkitError

TINY = dict(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = plmkit.BertForSequenceClassification(plmkit.ModelConfig(**TINY))
    model.save_pretrained(tmp_path / "ok")
    return tmp_path / "ok"


def edit_weights(model_dir, change):
    state = load_file(model_dir / "model.safetensors")
    change(state)
    save_file(state, model_dir / "model.safetensors", metadata={"format": "pt"})


def one_line_error(model_dir, capsys, *fragments):
    """The API raises PlmkitError with a one-line message; the CLI prints just that line and exits 2."""
    with pytest.raises(PlmkitError) as err:
        plmkit.BertForSequenceClassification.from_pretrained(model_dir)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert main(["info", str(model_dir)]) == 2
    err_out = capsys.readouterr().err.strip()
    assert err_out.count("\n") == 0 and err_out.startswith("error: ") and "Traceback" not in err_out, err_out
    return message


def test_missing_key(saved, capsys):
    edit_weights(saved, lambda s: s.pop("bert.encoder.layer.1.attention.self.key.weight"))
    one_line_error(saved, capsys, "missing keys", "bert.encoder.layer.1.attention.self.key.weight")


def test_extra_key(saved, capsys):
    edit_weights(saved, lambda s: s.update({"bert.encoder.layer.7.surprise.weight": torch.zeros(3)}))
    one_line_error(saved, capsys, "unexpected keys", "encoder.layer.7.surprise.weight")


def test_wrong_shape(saved, capsys):
    edit_weights(saved, lambda s: s.update({"bert.pooler.dense.weight": torch.zeros(32, 31)}))
    one_line_error(saved, capsys, "shape mismatches", "pooler.dense.weight (32, 31) vs expected (32, 32)")


def test_many_problems_are_listed_together(saved):
    def change(s):
        for k in [k for k in s if "layer.1." in k]:
            del s[k]
    edit_weights(saved, change)
    with pytest.raises(PlmkitError, match=r"16 missing keys: .* and 10 more"):
        plmkit.BertForSequenceClassification.from_pretrained(saved)


def test_corrupt_safetensors(saved, capsys):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[:len(data) // 2])  # truncated mid-file
    one_line_error(saved, capsys, "model.safetensors", "not a valid safetensors file")
    (saved / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    one_line_error(saved, capsys, "not a valid safetensors file")


def test_config_unknown_key(saved, capsys):
    config = json.loads((saved / "config.json").read_text())
    config["hidden_sizee"] = 64
    (saved / "config.json").write_text(json.dumps(config))
    one_line_error(saved, capsys, "config.json", "unknown key 'hidden_sizee'")


def test_config_heads_must_divide_hidden(saved, capsys):
    config = json.loads((saved / "config.json").read_text())
    config["num_attention_heads"] = 5
    (saved / "config.json").write_text(json.dumps(config))
    one_line_error(saved, capsys, "hidden_size (32) must be divisible by num_heads (5)")


def test_config_not_json(saved, capsys):
    (saved / "config.json").write_text("{not json")
    one_line_error(saved, capsys, "config.json", "not valid JSON")


def test_no_weights(saved, capsys):
    (saved / "model.safetensors").unlink()
    one_line_error(saved, capsys, "no weights")


def test_pickle_is_loaded_without_executing_code(tmp_path, capsys):
    """A pytorch_model.bin is read with weights_only=True: a payload that would run code is refused."""
    torch.manual_seed(0)
    model = plmkit.BertForSequenceClassification(plmkit.ModelConfig(**TINY))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = plmkit.BertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(loaded.classifier.proj.weight, model.classifier.proj.weight)

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    one_line_error(tmp_path, capsys, "pytorch_model.bin", "weights_only=True")
    assert not marker.exists()


def test_plmkit_config_errors(tmp_path):
    with pytest.raises(PlmkitError, match="unknown key 'num_layer'"):
        plmkit.ModelConfig.from_dict({"num_layer": 3})
    (tmp_path / "m.yaml").write_text("model:\n  hidden_size: 30\n  num_heads: 4\n")
    with pytest.raises(PlmkitError, match=r"hidden_size \(30\) must be divisible by num_heads \(4\)"):
        plmkit.ModelConfig.from_file(tmp_path / "m.yaml")
    with pytest.raises(PlmkitError, match="unknown activation 'gelo'; choose from: gelu"):
        plmkit.ModelConfig(activation="gelo")
    with pytest.raises(PlmkitError, match="no such config file"):
        plmkit.ModelConfig.from_file(tmp_path / "absent.yaml")


def test_hub_id_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to find locally
    with pytest.raises(PlmkitError) as err:
        plmkit.from_pretrained("bert-base-uncased")
    assert "\n" not in str(err.value)
    assert "bert-base-uncased" in str(err.value) and "pass a local model directory" in str(err.value)
    with pytest.raises(PlmkitError, match="bert-base-uncased"):
        plmkit.BertTokenizer.from_pretrained("bert-base-uncased")


def test_cli_error_has_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    env_cmd = [sys.executable, "-m", "plmkit", "info", str(tmp_path / "nowhere")]
    result = subprocess.run(env_cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nowhere'}: not a model directory"


def test_sharded_safetensors_load(saved):
    """Large Hugging Face checkpoints come as shards with an index; they load like one file."""
    state = load_file(saved / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, saved / name, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
    (saved / "model.safetensors.index.json").write_text(json.dumps(index))
    (saved / "model.safetensors").unlink()
    model = plmkit.BertForSequenceClassification.from_pretrained(saved)
    assert torch.equal(model.pooler.dense.weight, state["bert.pooler.dense.weight"])
    (saved / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(PlmkitError, match="shard model-00002-of-00002.safetensors is missing"):
        plmkit.BertForSequenceClassification.from_pretrained(saved)
