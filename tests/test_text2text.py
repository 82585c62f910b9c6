"""Sequence-to-sequence tasks: readers on the real Multi30k / TED / BBC files, features, metrics against sacrebleu and
rouge-score, the loss on labelled positions only, and a from-scratch translation run through the CLI to predict and
generate."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch
import torch.nn.functional as F

from plmkit.cli import main
from plmkit.errors import PlmkitError
from plmkit.models.encoder_decoder import Seq2SeqLM, seq2seq_config
from plmkit.tasks import get_task
from plmkit.tasks.text2text import Text2TextExample, lead_sentences, text2text_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- readers, real data
def test_multi30k_reader_aligns_the_gzip_files(data_dir):
    task = get_task("multi30k")
    with gzip.open(data_dir / "multi30k" / "val.en.gz", "rt", encoding="utf-8") as f:
        english = f.read().splitlines()
    with gzip.open(data_dir / "multi30k" / "val.de.gz", "rt", encoding="utf-8") as f:
        german = f.read().splitlines()
    val = task.read(data_dir, "validation")
    assert len(val) == 1014 == len(english)
    assert [(e.source, e.target) for e in val[:5]] == list(zip(english[:5], german[:5], strict=True))
    assert len(task.read(data_dir, "test")) == 1000
    flipped = get_task("multi30k", source_lang="de", target_lang="en").read(data_dir, "test")
    assert flipped[0].source == task.read(data_dir, "test")[0].target


def test_ted_holds_out_every_twentieth_pair(data_dir):
    task = get_task("ted-en-zh")
    train, val = task.read(data_dir, "train"), task.read(data_dir, "validation")
    assert (len(train), len(val)) == (19000 - 28, 1000 - 2)
    lines = (data_dir / "translation_en_zh" / "parallel_corpus_en_zh.txt").read_text(encoding="utf-8").splitlines()
    assert (val[0].source, val[0].target) == tuple(lines[19].split("\t"))
    assert not {e.where for e in val} & {e.where for e in train}
    assert all(e.source.strip() and e.target.strip() for e in train + val)  # 30 applause lines lack English
    test = task.read(data_dir, "test")
    assert len(test) == 1000 and "news-commentary" in test[0].where
    assert get_task("ted-zh-en").read(data_dir, "validation")[0].source == val[0].target


def test_bbc_splits_are_disjoint_and_cover_the_file(data_dir):
    task = get_task("bbc-summarization")
    splits = {s: task.read(data_dir, s) for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [1781, 222, 222]
    sources = [{e.where for e in v} for v in splits.values()]
    assert len(set.union(*sources)) == 2225
    assert splits["test"][0].target and len(splits["test"][0].source) > len(splits["test"][0].target)


# ---------------------------------------------------------------------------------------------- readers, bad input
def write_parallel(directory, stem, pairs, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    for lang, side in (("en", 0), ("de", 1)):
        text = "".join(p[side] + "\n" for p in pairs).encode("utf-8")
        path = directory / f"{stem}.{lang}{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(text) if gz else text)


def test_parallel_files_must_align(tmp_path):
    write_parallel(tmp_path, "train", [("a b", "x y"), ("c", "z")])
    (tmp_path / "train.de").write_text("x y\n", encoding="utf-8")
    task = get_task("translation", source_lang="en", target_lang="de")
    with pytest.raises(PlmkitError, match=r"train\.en has 2 lines but .*train\.de has 1"):
        task.read(tmp_path, "train")
    (tmp_path / "train.de").write_text("x y\n\n", encoding="utf-8")
    assert [(e.source, e.target) for e in task.read(tmp_path, "train")] == [("a b", "x y")]  # an empty side: skipped


def test_bad_bytes_and_rows_name_file_and_line(tmp_path):
    (tmp_path / "train.en.gz").write_bytes(gzip.compress(b"fine\n\xff\xfe bad\n"))
    (tmp_path / "train.de.gz").write_bytes(gzip.compress(b"gut\nschlecht\n"))
    with pytest.raises(PlmkitError, match=r"train\.en\.gz:2: not valid UTF-8"):
        get_task("translation", source_lang="en", target_lang="de").read(tmp_path, "train")
    (tmp_path / "train.jsonl").write_text('{"text": "a", "summary": "b"}\n{"summary": "c"}\n', encoding="utf-8")
    with pytest.raises(PlmkitError, match=r"train\.jsonl:2: missing key 'text'"):
        get_task("summarization").read(tmp_path, "train")
    (tmp_path / "train.tsv").write_text("a\tb\nc\n", encoding="utf-8")
    with pytest.raises(PlmkitError, match=r"train\.tsv:2: missing column #1"):
        get_task("translation", format="tsv", header=False, source_column=0, target_column=1).read(
            tmp_path / "train.tsv", "train")


# ---------------------------------------------------------------------------------------------- features, metrics
def test_features_end_in_eos_and_collate_pads_labels_with_ignore():
    task = get_task("translation", source_lang="en", target_lang="de")
    tok = task.train_tokenizer([Text2TextExample("a small house by the sea", "ein kleines Haus am Meer")] * 20,
                               vocab_size=300)
    examples = [Text2TextExample("a small house", "ein kleines Haus"), Text2TextExample("the sea " * 30, "Meer")]
    features = task.featurize(examples, tok, max_length=8)
    eos = tok.eos_token_id
    assert all(f["input_ids"][-1] == eos and f["labels"][-1] == eos for f in features)
    assert len(features[1]["input_ids"]) == 8 and features[0]["input_ids"][:-1] == tok.encode("a small house")
    assert tok.decode(features[0]["labels"]) == "ein kleines Haus"  # byte-level BPE decodes to the exact text
    batch = task.collate(features, pad_token_id=tok.pad_token_id)
    assert batch["labels"].shape == (2, max(len(f["labels"]) for f in features))
    assert (batch["labels"][1, len(features[1]["labels"]):] == -100).all()


def test_metrics_equal_sacrebleu_and_rouge_score():
    import sacrebleu
    from rouge_score import rouge_scorer

    rng = random.Random(0)
    words = "a man dog runs in the park red ball with".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(30)]
    hyps = [" ".join(rng.sample(r.split(), len(r.split())) if i % 3 else r.split()[:-1]) for i, r in enumerate(refs)]
    ours = text2text_metrics(hyps, refs, ("bleu", "chrf", "rouge1", "rouge2", "rougeL"))
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    expected = 100 * sum(scorer.score(r, h)["rouge2"].fmeasure for r, h in zip(refs, hyps, strict=True)) / 30
    assert ours["rouge2"] == pytest.approx(expected)
    zh = text2text_metrics(["我喜欢猫"], ["我喜欢狗"], ("bleu",), target_lang="zh")["bleu"]
    assert zh == pytest.approx(sacrebleu.corpus_bleu(["我喜欢猫"], [["我喜欢狗"]], tokenize="zh").score) and zh > 0
    assert lead_sentences("One. Two is here.  Three!\n Four.", 3) == "One.\nTwo is here.\nThree!"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_on_labelled_positions_equals_full_logits_loss(smoothing):
    torch.manual_seed(0)
    model = Seq2SeqLM(seq2seq_config("bart", vocab_size=64, hidden_size=16, num_layers=1, num_heads=2,
                                     intermediate_size=32, max_position_embeddings=32, hidden_dropout=0.0,
                                     attention_dropout=0.0))
    ids = torch.randint(4, 64, (3, 7))
    labels = torch.randint(4, 64, (3, 5))
    labels[1, 3:] = -100
    full = model(ids, labels=labels)
    expected = F.cross_entropy(full.logits.flatten(0, 1), labels.flatten(), label_smoothing=smoothing)
    fast = model(ids, labels=labels, return_logits=False, label_smoothing=smoothing)
    assert fast.logits is None
    torch.testing.assert_close(fast.loss, expected)



def test_task_generation_options_reach_generate():
    """Summaries default to no repeated trigram (as BART's CNN checkpoints); a task's no-repeat size and minimum
    length are what evaluation and prediction generate with."""
    assert get_task("summarization").no_repeat_ngram_size == 3 and get_task("multi30k").no_repeat_ngram_size == 0
    torch.manual_seed(0)
    model = Seq2SeqLM(seq2seq_config("bart", vocab_size=12, hidden_size=16, num_layers=1, num_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)).eval()
    task = get_task("translation", source_lang="en", target_lang="de", no_repeat_ngram_size=1, min_length=8,
                    max_new_tokens=10)
    options = task.generation_options(model)
    assert options["no_repeat_ngram_size"] == 1 and options["min_length"] == 8
    out = model.generate(torch.randint(4, 12, (3, 6)), **options)
    for row in out.tolist():
        eos = model.config.eos_token_id  # also BART's decoder start token (row[0])
        ended = row.index(eos, 1) if eos in row[1:] else len(row)
        body = row[1:ended]
        assert len(body) >= 6 and len(body) == len(set(body))  # no 1-gram twice
        assert ended >= 8 - 1  # no end before the minimum length (of the sequence, start token included)

# ---------------------------------------------------------------------------------------------- end to end
def test_translation_from_scratch_through_the_cli(tmp_path, capsys):
    """A tokenizer and a tiny encoder-decoder trained from scratch on a toy 'translation' (each word mapped to
    another), saved so transformers loads it, then evaluated with beams, predicted and generated from."""
    transformers = pytest.importorskip("transformers")
    rng = random.Random(0)
    lexicon = dict(zip("red green blue cat dog bird runs sits flies".split(),
                       "rot grün blau Katze Hund Vogel läuft sitzt fliegt".split(), strict=True))
    pairs = []
    for _ in range(300):
        words = rng.choices(list(lexicon), k=rng.randint(2, 5))
        pairs.append((" ".join(words), " ".join(lexicon[w] for w in words)))
    data = tmp_path / "data"
    write_parallel(data, "train", pairs, gz=True)
    write_parallel(data, "val", pairs[:40])
    out = tmp_path / "run"
    args = ["finetune", "--task", "translation", "--data-dir", str(data), "--output", str(out),
            "task.source_lang=en", "task.target_lang=de", "task.max_new_tokens=24", "model.tokenizer.vocab_size=400",
            "model.config.hidden_size=64", "model.config.num_heads=2", "model.config.intermediate_size=128",
            "model.config.num_layers=1", "model.config.num_decoder_layers=1", "model.config.max_position_embeddings=64",
            "train.lr=1e-3", "train.batch_size=20", "train.label_smoothing=0.1", "train.warmup_steps=10",
            "data.epochs=40", "train.eval_every=200", "impl.progress=false", "impl.tensorboard=false"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    assert metrics["bleu"] > 50  # a word-for-word mapping (one token a word at this vocabulary) is learnt
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train"]
    assert losses[-1] < losses[0] / 2
    model_dir = out / "model"
    hf, info = transformers.BartForConditionalGeneration.from_pretrained(model_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info

    assert main(["evaluate", "--task", "translation", "--model", str(model_dir), "--data-dir", str(data),
                 "task.source_lang=en", "task.target_lang=de", "task.num_beams=3"]) == 0
    beams = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert beams["examples"] == 40 and beams["bleu"] > 50

    inputs = tmp_path / "in.txt"
    inputs.write_text('red cat runs\n{"text": "green bird flies"}\n', encoding="utf-8")
    assert main(["predict", "--model", str(model_dir), "--input", str(inputs), "--num-beams", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["input"] for r in rows] == ["red cat runs", {"text": "green bird flies"}]
    assert all(isinstance(r["prediction"]["generated_text"], str) for r in rows)
    assert main(["generate", "--model", str(model_dir), "--prompt", "red cat runs", "--max-new-tokens", "24"]) == 0
    generated = capsys.readouterr().out.strip()

    import plmkit

    translate = plmkit.pipeline("translation", model=model_dir)
    assert translate("red cat runs") == {"translation_text": generated}  # greedy, both ways
    assert translate(["red cat runs", "green bird flies"], num_beams=2) == [
        {"translation_text": r["prediction"]["generated_text"]} for r in rows]


def test_from_scratch_needs_a_seq2seq_task_and_a_config():
    from plmkit.training.finetune import finetune

    with pytest.raises(PlmkitError, match="training from scratch"):
        finetune({"task": {"name": "sst2"}, "model": {"config": {"hidden_size": 32}}})
    with pytest.raises(PlmkitError, match="pretrained model directory"):
        finetune({"task": {"name": "multi30k"}, "model": {"tokenizer": {"vocab_size": 300}}})
