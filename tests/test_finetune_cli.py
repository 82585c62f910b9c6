"""End to end on a tiny model: pretrain → finetune → evaluate → predict through the CLI, and the fine-tuning
runner's bad-input errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

from plmkit.cli import main
from plmkit.training.data import ExampleStream

REPO = Path(__file__).resolve().parents[1]
POSITIVE = "good great fine lovely superb wonderful".split()
NEGATIVE = "bad awful poor dull terrible boring".split()
FILLER = "the film story acting was and plot music a".split()


def write_sentiment(directory: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=4) + rng.choices(POSITIVE if label else NEGATIVE, k=2)
        rng.shuffle(words)
        rows.append(f"{' '.join(words)}\t{'pos' if label else 'neg'}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_pretrain_finetune_evaluate_predict(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n\n".join(" ".join(rng.choices(POSITIVE + NEGATIVE + FILLER, k=40)) + "." for _ in range(40)),
                      encoding="utf-8")
    pre = tmp_path / "pre"
    assert main(["pretrain", "--config", str(REPO / "configs/pretrain/bert-tiny.yaml"), f"data.inputs=[{corpus}]",
                 "data.nsp=false", "data.max_seq_length=32", "data.workers=1", "data.validation_fraction=0.1",
                 "tokenizer.vocab_size=150", f"train.output_dir={pre}", "train.max_steps=3", "train.batch_size=8",
                 "model.num_layers=1", "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
                 "impl.progress=false", "impl.tensorboard=false"]) == 0
    data = tmp_path / "task"
    write_sentiment(data, 200, seed=1)
    (data / "dev.tsv").write_text((data / "train.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    ft = tmp_path / "ft"
    assert main(["finetune", "--task", "tsv", "--model", str(pre / "model"), "--data-dir", str(data), "--output",
                 str(ft), "--seeds", "1,2", "task.text_column=sentence", "train.lr=1e-3", "train.batch_size=16",
                 "train.warmup_ratio=0",
                 "data.epochs=6", "train.eval_every=epoch", "impl.progress=false", "impl.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "median accuracy over 2 seeds" in out
    evals = [json.loads(line) for line in (ft / "seed-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r.get("split") == "eval"] == [13, 26, 39, 52, 65, 78]  # 13 steps an epoch
    config = json.loads((ft / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert main(["evaluate", "--task", "tsv", "--model", str(ft / "model"), "--data-dir", str(data),
                 "task.text_column=sentence"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["examples"] == 200 and metrics["accuracy"] > 0.8  # the words decide the label
    inputs = tmp_path / "in.txt"
    inputs.write_text('the film was great and lovely\n\n{"text": "awful boring plot"}\n', encoding="utf-8")
    assert main(["predict", "--model", str(ft / "model"), "--input", str(inputs)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["prediction"]["label"] for r in lines] == ["pos", "neg"]


def test_finetune_bad_input(tmp_path, capsys, minilm_dir):
    data = tmp_path / "task"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\nfine film\tpos\nno label here\n", encoding="utf-8")
    assert main(["finetune", "--task", "tsv", "--model", str(minilm_dir), "--data-dir", str(data),
                 "task.text_column=sentence", f"train.output_dir={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert "train.tsv" in err and ":3" in err
    (data / "train.tsv").write_text("", encoding="utf-8")
    assert main(["finetune", "--task", "tsv", "--model", str(minilm_dir), "--data-dir", str(data),
                 f"train.output_dir={tmp_path / 'o'}"]) == 2
    assert "train.tsv" in capsys.readouterr().err
    assert main(["finetune", "--task", "sst3", "--model", str(minilm_dir)]) == 2
    assert "unknown task 'sst3'" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["predict", "--model", str(minilm_dir), "--input", str(empty)]) == 2
    assert "no inputs (the file is empty)" in capsys.readouterr().err
    # A bare encoder (all-MiniLM-L6-v2 is a sentence-embedding model) scores pairs by cosine; one text is an error.
    pairs = tmp_path / "pairs.txt"
    pairs.write_text('{"text": "A man plays a guitar.", "text_pair": "Someone is playing the guitar."}\n'
                     '{"text": "A man plays a guitar.", "text_pair": "The stock market fell today."}\n'
                     "just one sentence\n", encoding="utf-8")
    assert main(["predict", "--model", str(minilm_dir), "--input", str(pairs)]) == 2
    assert "pairs.txt:3: a bare encoder (sentence embeddings) scores sentence pairs" in capsys.readouterr().err
    pairs.write_text("\n".join(pairs.read_text(encoding="utf-8").splitlines()[:2]) + "\n", encoding="utf-8")
    assert main(["predict", "--model", str(minilm_dir), "--input", str(pairs)]) == 0
    close, far = (json.loads(line)["prediction"]["score"] for line in capsys.readouterr().out.strip().splitlines())
    assert close > 0.5 > far


def test_length_grouped_batches_hold_similar_lengths():
    lengths = [random.Random(i).randint(5, 100) for i in range(400)]
    stream = ExampleStream(list(range(400)), lambda ex, seeds: {"x": ex}, 8, seed=3, lengths=lengths)
    order = stream.order(0)
    assert sorted(order.tolist()) == list(range(400))  # a permutation: every example once per epoch
    spreads = [max(lengths[i] for i in order[s:s + 8]) - min(lengths[i] for i in order[s:s + 8])
               for s in range(0, 400, 8)]
    assert sum(spreads) / len(spreads) < 10  # random batches would spread ~75
    assert stream.order(1).tolist() != order.tolist()
