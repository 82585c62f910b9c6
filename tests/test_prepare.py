"""`plmkit prepare`: every input kind decodes back to its text, output is independent of the worker count, documents
stay whole within shards, the validation split is deterministic and disjoint, and bad input fails in one line."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from plmkit import cli
from plmkit.data.corpus import expand_inputs, split_sentences
from plmkit.data.prepare import prepare_corpus
from plmkit.data.shards import PreparedCorpus
from plmkit.data.tokenizer import load_tokenizer
from plmkit.data.tokenizer_train import train_wordpiece
from plmkit.errors import PlmkitError

WORDS = ("the cat dog sat on a mat quickly running jumped over lazy foxes between mountains river valley people "
         "remarkable understanding government children beautiful yesterday wonderful extraordinary it was and "
         "of to in that he she they happily whispered carefully Mr. Smith café naïve").split()


def make_documents(n: int, seed: int = 0, sentences: tuple[int, int] = (1, 8)) -> list[list[str]]:
    """n documents, each a list of 1-8 sentences of 3-12 words (capitalised, ending in . ! or ?)."""
    rng = random.Random(seed)
    docs = []
    for d in range(n):
        doc = []
        for _ in range(rng.randint(*sentences)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            doc.append(" ".join([words[0].capitalize(), *words[1:]]) + rng.choice(".!?"))
        doc[0] = f"Doc{d} " + doc[0]
        docs.append(doc)
    return docs


def write_blank_line_text(path: Path, docs: list[list[str]]) -> None:
    """Documents separated by blank lines, each wrapped over several lines (as book text is)."""
    blocks = []
    for doc in docs:
        words = " ".join(doc).split(" ")
        blocks.append("\n".join(" ".join(words[i : i + 7]) for i in range(0, len(words), 7)))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def doc_text(doc: list[str]) -> str:
    return " ".join(doc)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    sample = root / "sample.txt"
    sample.write_text("\n".join(doc_text(d) for d in make_documents(300, seed=99)), encoding="utf-8")
    train_wordpiece([sample], 200, min_frequency=1).save_pretrained(root / "tok")
    return root / "tok"


@pytest.fixture(scope="module")
def tokenizer(tok_dir: Path):
    return load_tokenizer(tok_dir)


def all_documents(corpus: PreparedCorpus, split: str = "train") -> list[np.ndarray]:
    return [np.concatenate(doc) for doc in corpus.documents(split)]


def assert_decodes_to(corpus: PreparedCorpus, tokenizer, texts: list[str], split: str = "train") -> None:
    """The split's documents are, in order, exactly the token ids of `texts` (so they decode to the same text)."""
    docs = all_documents(corpus, split)
    assert len(docs) == len(texts)
    for ids, text in zip(docs, texts, strict=True):
        assert ids.tolist() == tokenizer.encode(text, add_special_tokens=False)
    assert corpus.decode(docs[0]) == tokenizer.decode(tokenizer.encode(texts[0]))


# ---- the sentence splitter ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Hello there. World is big! \"Is it?\" she asked. Mr. Smith met J. Doe.  Then he left...",
     ["Hello there.", " World is big!", " \"Is it?\" she asked.", " Mr. Smith met J. Doe.", "  Then he left..."]),
    ("我爱北京。天安门！真的吗？是的", ["我爱北京。", "天安门！", "真的吗？", "是的"]),
    ("A title\n\nFirst paragraph. It ends (here.) Next one", ["A title", "\n\nFirst paragraph.", " It ends (here.)",
                                                            " Next one"]),
    ("version 2.0 is out. it is lower case. 3 dogs.", ["version 2.0 is out. it is lower case. 3 dogs."]),
    ("", []),
])
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
    assert "".join(split_sentences(text)) == text


# ---- every input kind decodes back ----------------------------------------------------------------------------------

def write_inputs(kind: str, root: Path, docs: list[list[str]]) -> tuple[list[str], dict]:
    """Write `docs` as input of `kind`; returns (inputs to pass, extra prepare_corpus arguments)."""
    half = len(docs) // 2
    if kind == "txt":
        write_blank_line_text(root / "a.txt", docs)
        return [str(root / "a.txt")], {}
    if kind in ("folder", "glob"):
        (root / "sub" / "deeper").mkdir(parents=True)
        write_blank_line_text(root / "sub" / "a.txt", docs[:half])
        write_blank_line_text(root / "sub" / "deeper" / "b.txt", docs[half:])
        (root / "sub" / ".hidden").write_bytes(b"\xff not text")  # skipped in folders
        return ([str(root / "sub")] if kind == "folder" else [str(root / "sub" / "**" / "*.txt")]), {}
    if kind == "gz":
        write_blank_line_text(root / "a.txt", docs[:half])
        with gzip.open(root / "b.txt.gz", "wt", encoding="utf-8") as f:
            f.write("\n\n".join(doc_text(d) for d in docs[half:]))
        return [str(root / "a.txt"), str(root / "b.txt.gz")], {}
    if kind == "line":
        (root / "a.txt").write_text("\n".join(doc_text(d) for d in docs) + "\n\n\n", encoding="utf-8")
        return [str(root / "a.txt")], {"doc_boundary": "line"}
    if kind in ("jsonl", "jsonl.gz"):
        rows = [json.dumps({"id": i, "body": doc_text(d)}) for i, d in enumerate(docs)]
        rows.insert(3, json.dumps({"id": -1, "body": "   "}))  # blank text: no document
        content = "\n".join(rows) + "\n\n"
        if kind == "jsonl":
            (root / "a.jsonl").write_text(content, encoding="utf-8")
        else:
            with gzip.open(root / "a.jsonl.gz", "wt", encoding="utf-8") as f:
                f.write(content)
        return [str(root / f"a.{kind}")], {"text_field": "body"}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["txt", "folder", "glob", "gz", "line", "jsonl", "jsonl.gz"])
def test_prepare_decodes_back(kind: str, tmp_path: Path, tok_dir: Path, tokenizer) -> None:
    docs = make_documents(40, seed=1)
    inputs, extra = write_inputs(kind, tmp_path, docs)
    summary = prepare_corpus(inputs, tmp_path / "out", tok_dir, num_workers=1, validation_fraction=0.0,
                             progress=False, **extra)
    corpus = PreparedCorpus(tmp_path / "out")
    assert_decodes_to(corpus, tokenizer, [doc_text(d) for d in docs])
    assert summary.splits["train"]["documents"] == corpus.num_documents() == 40
    assert corpus.splits == ["train"]
    # Sentences were split where the text has them (no wrapping line breaks or JSONL record edges in between).
    assert corpus.num_sentences() == sum(len(d) for d in docs)


def test_no_sentences_keeps_documents_whole(tmp_path: Path, tok_dir: Path, tokenizer) -> None:
    docs = make_documents(10, seed=2)
    write_blank_line_text(tmp_path / "a.txt", docs)
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, split_sentences=False, num_workers=1,
                   validation_fraction=0.0, progress=False)
    corpus = PreparedCorpus(tmp_path / "out")
    assert corpus.num_sentences() == corpus.num_documents() == 10
    assert_decodes_to(corpus, tokenizer, [doc_text(d) for d in docs])


def test_real_text(data_dir: Path, tmp_path: Path) -> None:
    """A slice of Emma (wrapped lines, paragraphs between blank lines, dialogue) prepares and decodes back."""
    lines = (data_dir / "raw_text_en/gutenberg_nltk/austen-emma.txt").read_text(encoding="utf-8").splitlines()[:1500]
    source = tmp_path / "emma.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = train_wordpiece([source], 1000)
    tok.save_pretrained(tmp_path / "tok")
    prepare_corpus(source, tmp_path / "out", tmp_path / "tok", num_workers=2, validation_fraction=0.0,
                   progress=False)
    corpus = PreparedCorpus(tmp_path / "out")
    paragraphs = [" ".join(line.strip() for line in block.splitlines() if line.strip())
                  for block in "\n".join(lines).split("\n\n") if block.strip()]
    assert_decodes_to(corpus, tok, paragraphs)
    assert corpus.num_sentences() > 1.5 * corpus.num_documents()  # paragraphs were cut into sentences
    assert "emma woodhouse, handsome, clever, and rich" in corpus.decode(corpus.document("train", 3)[0])


# ---- determinism, shards, validation ------------------------------------------------------------------------------

def test_workers_do_not_change_the_output(tmp_path: Path, tok_dir: Path) -> None:
    docs = make_documents(400, seed=3)
    write_blank_line_text(tmp_path / "a.txt", docs[:200])
    write_blank_line_text(tmp_path / "b.txt", docs[200:])
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        prepare_corpus([tmp_path / "a.txt", tmp_path / "b.txt"], out, tok_dir, num_workers=workers,
                       shard_tokens=4000, validation_fraction=0.1, progress=False)
        outputs.append({p.name: p.read_bytes() for p in out.iterdir() if p.is_file()})
    assert outputs[0] == outputs[1]
    assert sum(name.endswith(".bin") for name in outputs[0]) > 3


def test_documents_never_span_shards(tmp_path: Path, tok_dir: Path, tokenizer) -> None:
    docs = make_documents(60, seed=4)
    docs.insert(7, [f"Long {i} people remarkable understanding government." for i in range(60)])  # > a shard
    write_blank_line_text(tmp_path / "a.txt", docs)
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, num_workers=1, shard_tokens=300,
                   validation_fraction=0.0, progress=False)
    corpus = PreparedCorpus(tmp_path / "out")
    shards = corpus.shards("train")
    assert len(shards) > 5
    for shard in shards:
        # A shard holds whole documents: its indexes start at 0 and end exactly at its token count.
        assert shard.sentence_offsets[0] == 0 and shard.sentence_offsets[-1] == shard.num_tokens
        assert shard.document_offsets[-1] == shard.num_sentences
        assert shard.num_tokens <= 300 or shard.num_documents == 1  # only an over-long document overflows
    assert max(s.num_tokens for s in shards) > 300
    assert_decodes_to(corpus, tokenizer, [doc_text(d) for d in docs])


def test_validation_split_is_deterministic_and_disjoint(tmp_path: Path, tok_dir: Path) -> None:
    docs = make_documents(300, seed=5)
    write_blank_line_text(tmp_path / "a.txt", docs)

    def split_texts(seed: int, **kwargs) -> dict[str, list[str]]:
        out = tmp_path / f"out{seed}-{len(kwargs)}"
        prepare_corpus(tmp_path / "a.txt", out, tok_dir, num_workers=1, seed=seed, progress=False, **kwargs)
        corpus = PreparedCorpus(out)
        return {split: [corpus.decode(d) for d in all_documents(corpus, split)] for split in ("train", "validation")}

    first, again, other = split_texts(0, validation_fraction=0.1), split_texts(0, validation_fraction=0.1), \
        split_texts(1, validation_fraction=0.1)
    assert first == again
    assert first["validation"] != other["validation"]
    assert 10 <= len(first["validation"]) <= 50
    assert not set(first["train"]) & set(first["validation"])
    assert len(first["train"]) + len(first["validation"]) == 300
    exact = split_texts(0, validation_docs=7)
    assert len(exact["validation"]) == 7 and len(exact["train"]) == 293
    assert not set(exact["train"]) & set(exact["validation"])


def test_meta(tmp_path: Path, tok_dir: Path) -> None:
    docs = make_documents(50, seed=6)
    write_blank_line_text(tmp_path / "a.txt", docs)
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, num_workers=1, validation_docs=5, progress=False)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    tok = meta["tokenizer"]
    assert tok["sha256"] == hashlib.sha256((tok_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["dtype"] == "uint16" and tok["vocab_size"] == 200
    assert set(tok["special_ids"]) >= {"cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"}
    assert meta["settings"]["validation_docs"] == 5 and meta["settings"]["doc_boundary"] == "blank_line"
    for split in ("train", "validation"):
        info = meta["splits"][split]
        assert info["documents"] == sum(s["documents"] for s in info["shards"])
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    corpus = PreparedCorpus(tmp_path / "out")
    assert corpus.tokenizer.get_vocab() == load_tokenizer(tok_dir).get_vocab()
    corpus.check_tokenizer(tok_dir)
    other = tmp_path / "other"
    shutil.copytree(tok_dir, other)
    (other / "tokenizer.json").write_bytes((tok_dir / "tokenizer.json").read_bytes() + b" ")
    with pytest.raises(PlmkitError, match="prepared with another tokenizer"):
        corpus.check_tokenizer(other)


def test_rerun_with_the_tokenizer_inside_the_output(tmp_path: Path, tok_dir: Path, tokenizer) -> None:
    """`prepare --tokenizer out/tokenizer --output out` (a rerun from the corpus's own copy) keeps the tokenizer."""
    docs = make_documents(20, seed=10)
    write_blank_line_text(tmp_path / "a.txt", docs)
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, num_workers=1, progress=False)
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tmp_path / "out" / "tokenizer", num_workers=1,
                   validation_fraction=0.0, progress=False)
    assert_decodes_to(PreparedCorpus(tmp_path / "out"), tokenizer, [doc_text(d) for d in docs])


def test_failed_rerun_leaves_no_meta(tmp_path: Path, tok_dir: Path) -> None:
    """A prepare that fails half-way over an earlier corpus must not leave that corpus's meta.json in place."""
    write_blank_line_text(tmp_path / "a.txt", make_documents(20, seed=7))
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, num_workers=1, progress=False)
    (tmp_path / "bad.txt").write_bytes(b"Fine text.\n\nBroken \xff byte.\n")
    with pytest.raises(PlmkitError):
        prepare_corpus([tmp_path / "a.txt", tmp_path / "bad.txt"], tmp_path / "out", tok_dir, num_workers=1,
                       progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()
    with pytest.raises(PlmkitError, match="not a prepared corpus"):
        PreparedCorpus(tmp_path / "out")


# ---- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"Good line.\nanother\n\xc3\x28 broken\n", r"bad\.txt:3: not valid UTF-8"),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "broken\n', r"bad\.jsonl:2: not valid JSON"),
    ("bad.jsonl", b'{"text": "ok"}\n\n{"body": "no text field"}\n', r"bad\.jsonl:3: no 'text' field \(keys: body\)"),
    ("bad.jsonl", b'{"text": 3}\n', r"bad\.jsonl:1: 'text' is a JSON int, not a string"),
    ("empty.txt", b"\n  \n\n", r"no text to train on"),
    ("bad.txt.gz", b"not gzip at all", r"cannot read .*bad\.txt\.gz"),
])
def test_bad_input(name: str, content: bytes, message: str, tmp_path: Path, tok_dir: Path) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PlmkitError, match=message) as info:
        prepare_corpus(tmp_path / name, tmp_path / "out", tok_dir, num_workers=1, progress=False)
    assert "\n" not in str(info.value)


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(PlmkitError, match="input not found"):
        expand_inputs([tmp_path / "nope.txt"])
    with pytest.raises(PlmkitError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.txt")])
    with pytest.raises(PlmkitError, match="no input files"):
        expand_inputs([])


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "meta.json").write_text("{not json"), "meta.json: cannot read"),
    (lambda out: (out / "meta.json").write_text('{"format": "something else"}'), "not a plmkit prepared-corpus"),
    (lambda out: (out / "meta.json").write_text(json.dumps({**json.loads((out / "meta.json").read_text()),
                                                            "splits": {"train": {"shards": [{}]}}})), "malformed"),
    (lambda out: (out / "train-00000.bin").write_bytes(b"\x00" * 10), r"train-00000\.bin: 10 bytes, but meta"),
    (lambda out: (out / "train-00001.bin").unlink(), r"train-00001\.bin: shard missing"),
])
def test_damaged_corpus(damage, message: str, tmp_path: Path, tok_dir: Path) -> None:
    write_blank_line_text(tmp_path / "a.txt", make_documents(30, seed=8))
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, num_workers=1, shard_tokens=500, progress=False)
    damage(tmp_path / "out")
    with pytest.raises(PlmkitError, match=message):
        PreparedCorpus(tmp_path / "out")


def test_damaged_index(tmp_path: Path, tok_dir: Path) -> None:
    write_blank_line_text(tmp_path / "a.txt", make_documents(30, seed=8))
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", tok_dir, num_workers=1, progress=False)
    np.save(tmp_path / "out" / "train-00000.sentences.npy", np.arange(5))
    with pytest.raises(PlmkitError, match=r"sentences\.npy: does not match meta\.json"):
        PreparedCorpus(tmp_path / "out").document("train", 0)


# ---- command line -------------------------------------------------------------------------------------------------

def test_cli(tmp_path: Path, tok_dir: Path, tokenizer, capsys: pytest.CaptureFixture) -> None:
    docs = make_documents(30, seed=9)
    (tmp_path / "a.txt").write_text("\n".join(doc_text(d) for d in docs) + "\n", encoding="utf-8")
    code = cli.main(["prepare", str(tmp_path / "a.txt"), "--tokenizer", str(tok_dir), "--output",
                     str(tmp_path / "out"), "--doc-boundary", "line", "--workers", "2", "--validation-fraction", "0",
                     "--quiet"])
    assert code == 0
    assert "train 30 documents" in capsys.readouterr().out
    assert_decodes_to(PreparedCorpus(tmp_path / "out"), tokenizer, [doc_text(d) for d in docs])


def test_cli_errors(tmp_path: Path, tok_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["prepare", str(tmp_path / "missing.txt"), "--tokenizer", str(tok_dir), "--output",
                     str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: input not found") and err.count("\n") == 1
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    code = cli.main(["prepare", str(tmp_path / "bad.txt"), "--tokenizer", str(tok_dir), "--output",
                     str(tmp_path / "out"), "--quiet", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {tmp_path / 'bad.txt'}:2: not valid UTF-8" in err and err.count("\n") == 1


def test_zip_archives_and_encoding_errors(tmp_path: Path, tok_dir: Path, tokenizer) -> None:
    """A .zip input is read member by member (folders and README files skipped), like NLTK's corpus archives;
    an invalid UTF-8 line stops prepare naming file and line, unless encoding_errors="replace"."""
    import zipfile

    docs = make_documents(6, seed=5)
    with zipfile.ZipFile(tmp_path / "corpus.zip", "w") as archive:
        archive.writestr("corpus/README", "Not part of the corpus.\n")
        archive.writestr("corpus/a.txt", "\n\n".join(" ".join(d) for d in docs[:3]) + "\n")
        archive.writestr("corpus/b.txt", "\n\n".join(" ".join(d) for d in docs[3:]) + "\n")
    out = tmp_path / "zip-out"
    prepare_corpus(tmp_path / "corpus.zip", out, tok_dir, validation_fraction=0.0, num_workers=1, progress=False)
    assert_decodes_to(PreparedCorpus(out), tokenizer, [doc_text(d) for d in docs])

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\u00e9 au lait. It was good.\n\nSecond document here.\n".encode("latin-1"))
    with pytest.raises(PlmkitError, match=r"latin1\.txt:1: not valid UTF-8"):
        prepare_corpus(bad, tmp_path / "strict", tok_dir, validation_fraction=0.0, num_workers=1, progress=False)
    prepare_corpus(bad, tmp_path / "replaced", tok_dir, validation_fraction=0.0, num_workers=1, progress=False,
                   encoding_errors="replace")
    assert PreparedCorpus(tmp_path / "replaced").num_documents("train") == 2
