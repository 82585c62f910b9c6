"""Causal-LM and T5 span-corruption pretraining: packing, corruption statistics, and `plmkit pretrain` end to end."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from plmkit.cli import main
from plmkit.data.denoising import (
    SpanCorruptionCollator,
    corrupt_spans,
    random_spans_noise_mask,
    span_corruption_lengths,
    t5_special_tokens,
)
from plmkit.data.packed import CausalLMCollator, PackedDataset
from plmkit.errors import PlmkitError
from plmkit.training.pretrain import model_config_from, objective_of

REPO = Path(__file__).resolve().parents[1]
WORDS = "one two three four five six seven eight nine ten".split()
SENTINELS = list(range(3, 103))  # as in a tokenizer plmkit trains for T5: <pad> </s> <unk>, then the sentinels
EOS = 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_corpus(path: Path, docs: int = 40, seed: int = 0) -> Path:
    """Documents that count up from a random word, one to twelve sentences long: easy to learn, quick to see."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(docs):
        start = rng.randrange(len(WORDS))
        sentences = [" ".join(WORDS[(start + i) % len(WORDS)] for i in range(len(WORDS))) + "."
                     for _ in range(rng.randint(1, 12))]
        paragraphs.append(" ".join(sentences))
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def prepared(tmp_path: Path, validation_fraction: float = 0.0) -> Path:
    from plmkit.data.prepare import prepare_corpus
    from plmkit.data.tokenizer_train import train_bytelevel_bpe

    corpus = write_corpus(tmp_path / "corpus.txt")
    tokenizer = train_bytelevel_bpe(corpus, 300)
    tokenizer.save_pretrained(tmp_path / "tok")
    prepare_corpus([corpus], tmp_path / "data", tmp_path / "tok", split_sentences=False, num_workers=1,
                   validation_fraction=validation_fraction, progress=False)
    return tmp_path / "data"


# ---- packing ----------------------------------------------------------------------------------------------------

def test_packing_puts_eos_between_documents_and_cuts_full_chunks(tmp_path):
    from plmkit.data.shards import PreparedCorpus

    corpus = PreparedCorpus(prepared(tmp_path))
    eos = corpus.special_ids["eos_token_id"]
    documents = [np.concatenate(d) for d in corpus.documents("train")]
    stream = np.concatenate([np.append(d, eos) for d in documents])
    assert len(PackedDataset(corpus, "validation", chunk_length=24)) == 0  # no validation documents: no examples
    dataset = PackedDataset(corpus, "train", chunk_length=24)
    assert len(dataset) == len(stream) // 24 > 10
    chunks = [dataset[i]["input_ids"] for i in range(len(dataset))]
    assert {len(c) for c in chunks} == {24}
    np.testing.assert_array_equal(np.concatenate(chunks), stream[:len(dataset) * 24])
    assert not any(eos in d for d in documents)  # so every eos in the chunks is a document boundary
    assert sum(int((c == eos).sum()) for c in chunks) >= len(documents) - 1
    np.testing.assert_array_equal(dataset[-1]["input_ids"], chunks[-1])
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    batch = CausalLMCollator()([dataset[0], dataset[1]], [0, 1])
    assert batch["input_ids"].shape == (2, 24) and torch.equal(batch["labels"], batch["input_ids"])


# ---- span corruption --------------------------------------------------------------------------------------------

def reconstruct(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The original chunk from a corrupted input and its target: each sentinel of the input becomes its span."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    spans, current = {}, None
    for token in targets[:-1].tolist():
        if token in SENTINELS:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    out = []
    for token in inputs[:-1].tolist():
        out.extend(spans.pop(token) if token in SENTINELS else [token])
    assert not spans  # every span of the target was used
    return np.array(out)


def test_span_corruption_lengths_as_t5():
    assert span_corruption_lengths(512) == (568, 114)  # run_t5_mlm_flax.py's numbers for T5's 512-token inputs
    for input_length in (32, 64, 256):
        chunk, target_length = span_corruption_lengths(input_length)
        inputs, targets = SpanCorruptionCollator(SENTINELS, EOS, 0).corrupt(np.arange(200, 200 + chunk), seed=1)
        assert (len(inputs), len(targets)) == (input_length, target_length)


def test_span_corruption_statistics_order_and_reconstruction():
    collator = SpanCorruptionCollator(SENTINELS, EOS, pad_id=0)
    noise, tokens, span_lengths = 0, 0, []
    for seed in range(300):
        length = 100 + seed % 400
        ids = np.arange(200, 200 + length)
        inputs, targets = collator.corrupt(ids, seed)
        np.testing.assert_array_equal(reconstruct(inputs, targets), ids)
        in_sentinels = [t for t in inputs.tolist() if t in SENTINELS]
        out_sentinels = [t for t in targets.tolist() if t in SENTINELS]
        assert in_sentinels == out_sentinels == SENTINELS[:len(in_sentinels)]  # <extra_id_0>, <extra_id_1>, ...
        assert inputs[0] not in SENTINELS  # a clean run comes first, as in T5
        noise += len(targets) - 1 - len(out_sentinels)
        tokens += length
        mask = random_spans_noise_mask(length, 0.15, 3.0, np.random.default_rng(seed))
        starts = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])) == 1)
        ends = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])) == -1)
        span_lengths.extend((ends - starts).tolist())
    assert noise / tokens == pytest.approx(0.15, abs=0.005)
    assert np.mean(span_lengths) == pytest.approx(3.0, abs=0.15)
    assert len(set(span_lengths)) > 4  # random lengths, not all three
    # Seeded: the same example and seed corrupt the same way; other seeds differently.
    ids = np.arange(200, 400)
    first, again = collator.corrupt(ids, 7), collator.corrupt(ids, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({collator.corrupt(ids, s)[0].tobytes() for s in range(10)}) == 10


def test_span_corruption_batch_pads_labels_with_ignore_index():
    collator = SpanCorruptionCollator(SENTINELS, EOS, pad_id=0)
    batch = collator([{"input_ids": np.arange(200, 240)}, {"input_ids": np.arange(200, 300)}], [3, 4])
    inputs, targets = collator.corrupt(np.arange(200, 240), 3)
    assert batch["input_ids"].shape[0] == batch["labels"].shape[0] == 2
    assert batch["input_ids"][0, :len(inputs)].tolist() == inputs.tolist()
    assert batch["attention_mask"][0].sum() == len(inputs) and (batch["input_ids"][0, len(inputs):] == 0).all()
    assert batch["labels"][0, :len(targets)].tolist() == targets.tolist()
    assert (batch["labels"][0, len(targets):] == -100).all()
    with pytest.raises(PlmkitError, match="sentinel"):
        corrupt_spans(np.arange(10), np.array([0, 1, 0, 1, 0, 1, 0, 0, 0, 0], bool), [5], EOS)


def test_t5_tokenizer_specials():
    specials = t5_special_tokens()
    assert specials[:4] == ("<pad>", "</s>", "<unk>", "<extra_id_0>") and len(specials) == 103


# ---- recipes ----------------------------------------------------------------------------------------------------

def test_model_section_style_and_errors():
    gpt = model_config_from({"style": "gpt2", "num_layers": 1, "hidden_size": 32, "num_heads": 2})
    assert objective_of(gpt) == "causal_lm" and gpt.norm_position == "pre" and gpt.num_layers == 1
    assert objective_of(model_config_from({"style": "llama", "hidden_size": 32, "num_heads": 2})) == "causal_lm"
    assert objective_of(model_config_from({"style": "t5", "hidden_size": 32, "num_heads": 2})) == "span_corruption"
    assert objective_of(model_config_from(str(REPO / "configs/models/bert-tiny.yaml"))) == "masked_lm"
    with pytest.raises(PlmkitError, match=r"model.style: unknown style 'gpt3'; choose from: gpt2, llama, t5, bart"):
        model_config_from({"style": "gpt3"})
    with pytest.raises(PlmkitError, match="unknown key.*'hiden_size'"):
        model_config_from({"style": "gpt2", "hiden_size": 32})


def tiny_args(kind: str, corpus: Path, out: Path) -> list[str]:
    common = [f"data.inputs=[{corpus}]", f"train.output_dir={out}", "train.batch_size=8", "train.log_every=1",
              "train.eval_every=10", "train.save_every_steps=15", "train.eval_max_batches=2",
              "train.warmup_ratio=0.1", "train.max_steps=30", "data.workers=1", "data.validation_fraction=0.1",
              "data.eval_batch_size=8", "impl.progress=false", "impl.tensorboard=false", "model.num_layers=1",
              "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64", "data.max_seq_length=32"]
    if kind == "gpt":
        return ["pretrain", "--config", str(REPO / "configs/pretrain/gpt-mini.yaml"), "tokenizer.vocab_size=300",
                "model.max_position_embeddings=32", "train.lr=3e-3", *common]
    return ["pretrain", "--config", str(REPO / "configs/pretrain/t5-mini.yaml"), "tokenizer.vocab_size=400",
            "model.num_decoder_layers=1", "train.lr=1e-2", *common]


def train_losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def hf_batch(kind: str, run: Path) -> dict[str, torch.Tensor]:
    """Two held-out examples of the run, collated as in training."""
    from plmkit.data.denoising import sentinel_ids
    from plmkit.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(run / "model")
    if kind == "gpt":
        dataset, collate = PackedDataset(run / "data", "validation", 32), CausalLMCollator()
    else:
        dataset = PackedDataset(run / "data", "validation", span_corruption_lengths(32)[0])
        collate = SpanCorruptionCollator(sentinel_ids(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    return collate([dataset[0], dataset[1]], [5, 6])


@pytest.mark.parametrize("kind, hf_class", [("gpt", "GPT2LMHeadModel"), ("t5", "T5ForConditionalGeneration")])
def test_pretrain_cli_generative_end_to_end_and_resume(kind, hf_class, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from plmkit.models.decoder import CausalLM
    from plmkit.models.encoder_decoder import Seq2SeqLM

    corpus = write_corpus(tmp_path / "corpus.txt", docs=60)
    out = tmp_path / "run"
    args = tiny_args(kind, corpus, out)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pretrained 30 steps" in printed and "perplexity" in printed
    losses = train_losses(out)
    assert sorted(losses) == list(range(1, 31))
    assert np.mean([losses[s] for s in (28, 29, 30)]) < np.mean([losses[s] for s in (1, 2, 3)]) - 1.0  # nats

    model, info = getattr(transformers, hf_class).from_pretrained(out / "model", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    if kind == "gpt":
        assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
        assert model.config.n_layer == 1 and model.config.vocab_size == len(tokenizer)
    else:
        assert (model.config.pad_token_id, model.config.eos_token_id, model.config.decoder_start_token_id) == (0, 1, 0)
        assert tokenizer.convert_tokens_to_ids(["<pad>", "</s>", "<extra_id_0>", "<extra_id_99>"]) == [0, 1, 3, 102]
        assert model.config.num_layers == model.config.num_decoder_layers == 1
    # transformers computes the training loss of the saved model as plmkit does (labels, shift, decoder start).
    batch = hf_batch(kind, out)
    ours = (CausalLM if kind == "gpt" else Seq2SeqLM).from_pretrained(out / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, ours(**batch).loss, atol=1e-4, rtol=1e-4)

    # Resume from the step-15 checkpoint (the step-30 one removed): steps 16..30 come out bit for bit the same.
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000015", "step-00000030"]
    shutil.rmtree(checkpoints[-1])
    assert main(args + ["--resume"]) == 0
    again = train_losses(out)
    assert all(again[s] == losses[s] for s in range(1, 31))

    # Continued pretraining (model.from_pretrained) starts from the saved weights: one step at lr 1e-9 keeps them.
    recipe = tmp_path / "continue.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"from_pretrained": str(out / "model")},
        "data": {"inputs": [str(corpus)], "max_seq_length": 32, "workers": 1, "validation_fraction": 0.1},
        "train": {"output_dir": str(tmp_path / "more"), "max_steps": 1, "lr": 1e-9, "batch_size": 8,
                  "eval_every": 0},
        "impl": {"progress": False, "tensorboard": False}}))
    assert main(["pretrain", "--config", str(recipe)]) == 0
    more = dict(type(ours).from_pretrained(tmp_path / "more" / "model").named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(more[name], p, atol=1e-6, rtol=0)


def test_pretrain_cli_generative_recipe_errors(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = tiny_args("gpt", corpus, tmp_path / "run")
    assert main([*args, "model.style=gpt3"]) == 2
    assert "model.style: unknown style 'gpt3'; choose from: gpt2, llama, t5, bart" in capsys.readouterr().err
    assert main([*args, "data.nsp=true"]) == 2
    assert "data.nsp applies to masked_lm pretraining only" in capsys.readouterr().err
    assert main([*tiny_args("t5", corpus, tmp_path / "run2"), "data.noise_density=1.5"]) == 2
    assert "data.noise_density must be in (0, 1)" in capsys.readouterr().err
    assert main([*args, "data.max_seq_length=64"]) == 2  # the model has 32 positions
    assert "data.max_seq_length 64 exceeds the model's max_position_embeddings 32" in capsys.readouterr().err
    # A tokenizer without sentinels cannot serve span corruption; one without a pad token neither.
    from plmkit.data.denoising import T5_ROLES, T5_SPECIALS
    from plmkit.data.tokenizer_train import train_bytelevel_bpe

    t5_args = tiny_args("t5", corpus, tmp_path / "run3")
    train_bytelevel_bpe(corpus, 300, special_tokens=T5_SPECIALS, roles=T5_ROLES).save_pretrained(tmp_path / "tok")
    assert main([*t5_args, f"tokenizer.path={tmp_path / 'tok'}"]) == 2
    assert "needs 2 sentinel tokens (<extra_id_0> ... <extra_id_1>); the tokenizer has 0" in capsys.readouterr().err
    train_bytelevel_bpe(corpus, 300).save_pretrained(tmp_path / "gpt-tok")
    assert main([*t5_args, f"tokenizer.path={tmp_path / 'gpt-tok'}", f"train.output_dir={tmp_path / 'run4'}"]) == 2
    assert "span corruption needs an eos and a pad token" in capsys.readouterr().err
