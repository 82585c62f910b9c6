"""Pretraining examples from a prepared corpus (NSP pairs, packed segments) and the per-example-seeded collator."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.data.prepare import prepare_corpus
from plmkit.data.pretraining import PretrainingCollator, PretrainingDataset
from plmkit.data.shards import PreparedCorpus
from plmkit.data.tokenizer_train import train_bytelevel_bpe, train_wordpiece
from plmkit.errors import PlmkitError
from plmkit.objectives import IGNORE_INDEX

WORDS = ("the cat dog sat on a mat quickly running jumped over lazy foxes between mountains river valley people "
         "remarkable understanding government children beautiful yesterday wonderful extraordinary it was and "
         "of to in that he she they happily whispered carefully").split()
MAX_LEN = 32


def write_corpus(path: Path, n_docs: int, seed: int = 0) -> None:
    """n_docs documents of 8-25 sentences of 3-12 words, separated by blank lines."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(8, 25)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            sentences.append(" ".join([words[0].capitalize(), *words[1:]]) + rng.choice(".!?"))
        docs.append(" ".join(sentences))
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> PreparedCorpus:
    root = tmp_path_factory.mktemp("pretraining")
    write_corpus(root / "a.txt", 400)
    train_wordpiece([root / "a.txt"], 200, min_frequency=1).save_pretrained(root / "tok")
    prepare_corpus(root / "a.txt", root / "out", root / "tok", num_workers=1, shard_tokens=5000,
                   validation_fraction=0.1, progress=False)
    corpus = PreparedCorpus(root / "out")
    assert len(corpus.shards("train")) > 5 and corpus.num_documents("validation") > 10
    return corpus


@pytest.fixture(scope="module")
def nsp_data(corpus: PreparedCorpus) -> PretrainingDataset:
    return PretrainingDataset(corpus, max_seq_length=MAX_LEN, seed=0)


def document_of(corpus: PreparedCorpus, shard: int, token: int) -> tuple[int, int]:
    """(shard, document within the shard) holding token offset `token` of `shard`."""
    s = corpus.shards("train")[shard]
    sentence = np.searchsorted(s.sentence_offsets, token, side="right") - 1
    return shard, int(np.searchsorted(s.document_offsets, sentence, side="right") - 1)


# ---- NSP pairs ----------------------------------------------------------------------------------------------------

def test_nsp_layout_and_provenance(corpus: PreparedCorpus, nsp_data: PretrainingDataset) -> None:
    cls, sep = corpus.special_ids["cls_token_id"], corpus.special_ids["sep_token_id"]
    shards = corpus.shards("train")
    assert len(nsp_data) > 2000
    documents_used, cross_shard = set(), 0
    for i in range(len(nsp_data)):
        ex, inst = nsp_data[i], nsp_data.instance(i)
        ids, types = ex["input_ids"], ex["token_type_ids"]
        la, lb = inst.a_end - inst.a_start, inst.b_end - inst.b_start
        assert la >= 1 and lb >= 1 and len(ids) == la + lb + 3 <= MAX_LEN
        # [CLS] A [SEP] B [SEP], token types 0 up to the first [SEP], 1 after it
        assert ids[0] == cls and ids[1 + la] == sep and ids[-1] == sep
        assert (ids == sep).sum() == 2 and (ids == cls).sum() == 1
        assert types.tolist() == [0] * (la + 2) + [1] * (lb + 1)
        assert ids[1 : 1 + la].tolist() == shards[inst.a_shard].tokens[inst.a_start : inst.a_end].tolist()
        assert ids[2 + la : -1].tolist() == shards[inst.b_shard].tokens[inst.b_start : inst.b_end].tolist()
        # A and B each lie within one document
        doc_a = document_of(corpus, inst.a_shard, inst.a_start)
        doc_b = document_of(corpus, inst.b_shard, inst.b_start)
        assert doc_a == document_of(corpus, inst.a_shard, inst.a_end - 1)
        assert doc_b == document_of(corpus, inst.b_shard, inst.b_end - 1)
        documents_used.add(doc_a)
        if ex["next_sentence_label"] == 0:
            # B continues A in the same document: they meet at a sentence boundary (only trimming may open a gap)
            assert doc_b == doc_a and inst.a_end <= inst.b_start
            offsets = shards[inst.a_shard].sentence_offsets
            assert np.any((offsets >= inst.a_end) & (offsets <= inst.b_start))
            if la + lb < MAX_LEN - 3:
                assert inst.b_start == inst.a_end
        else:
            assert doc_b != doc_a
            cross_shard += inst.b_shard != inst.a_shard
    assert len(documents_used) == corpus.num_documents("train")  # every document gives examples
    assert cross_shard > 0.5 * (nsp_data._labels == 1).sum()  # random Bs come from any shard


def test_nsp_labels_balanced(nsp_data: PretrainingDataset) -> None:
    labels = np.array([nsp_data[i]["next_sentence_label"] for i in range(len(nsp_data))])
    # BERT forces a random B when a document's last sentence is left alone, so slightly more than half are random.
    assert abs(labels.mean() - 0.5) < 0.05


def test_nsp_deterministic_and_short_sequences(corpus: PreparedCorpus, nsp_data: PretrainingDataset) -> None:
    again = PretrainingDataset(corpus, max_seq_length=MAX_LEN, seed=0)
    other = PretrainingDataset(corpus, max_seq_length=MAX_LEN, seed=1)
    assert [again.instance(i) for i in range(len(again))] == [nsp_data.instance(i) for i in range(len(nsp_data))]
    assert len(other) != len(nsp_data) or any(other.instance(i) != nsp_data.instance(i) for i in range(len(other)))
    lengths = np.array([len(nsp_data[i]["input_ids"]) for i in range(len(nsp_data))])
    assert (lengths == MAX_LEN).mean() > 0.5  # most pairs fill the sequence
    long = PretrainingDataset(corpus, max_seq_length=MAX_LEN, short_seq_prob=0.0, seed=0)
    assert len(long) < len(nsp_data)  # short targets make more, shorter pairs


def test_nsp_table_is_compact_and_pickles(nsp_data: PretrainingDataset) -> None:
    assert isinstance(nsp_data._pairs, np.ndarray) and nsp_data._pairs.nbytes == 48 * len(nsp_data)
    clone = pickle.loads(pickle.dumps(nsp_data))
    assert len(pickle.dumps(nsp_data)) < 48 * len(nsp_data) + 10_000  # no token arrays travel to workers
    assert clone[7]["input_ids"].tolist() == nsp_data[7]["input_ids"].tolist()
    by_tensor, by_negative = nsp_data[torch.tensor(7)], nsp_data[np.int64(7 - len(nsp_data))]
    assert by_tensor["input_ids"].tolist() == by_negative["input_ids"].tolist() == clone[7]["input_ids"].tolist()


def test_validation_split_and_errors(corpus: PreparedCorpus, tmp_path: Path) -> None:
    val = PretrainingDataset(corpus, "validation", max_seq_length=MAX_LEN)
    assert 0 < len(val) and all(len(val[i]["input_ids"]) <= MAX_LEN for i in range(len(val)))
    with pytest.raises(PlmkitError, match="no split 'test'"):
        PretrainingDataset(corpus, "test")
    with pytest.raises(PlmkitError, match="max_seq_length must be an int of at least 5"):
        PretrainingDataset(corpus, max_seq_length=4)
    # A corpus without a validation split gives an empty validation dataset; one without sentences cannot do NSP.
    write_corpus(tmp_path / "a.txt", 5)
    prepare_corpus(tmp_path / "a.txt", tmp_path / "out", corpus.directory / "tokenizer", num_workers=1,
                   validation_fraction=0.0, split_sentences=False, progress=False)
    assert len(PretrainingDataset(tmp_path / "out", "validation", nsp=False)) == 0
    with pytest.raises(PlmkitError, match="prepared without sentence splitting"):
        PretrainingDataset(tmp_path / "out")
    assert len(PretrainingDataset(tmp_path / "out", nsp=False, max_seq_length=16)) > 0
    # One document cannot give random next sentences: no NSP examples (a warning), but packed segments.
    write_corpus(tmp_path / "one.txt", 1)
    prepare_corpus(tmp_path / "one.txt", tmp_path / "one", corpus.directory / "tokenizer", num_workers=1,
                   validation_fraction=0.0, progress=False)
    assert len(PretrainingDataset(tmp_path / "one")) == 0
    assert len(PretrainingDataset(tmp_path / "one", nsp=False)) > 0


# ---- packed segments ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split, max_len", [("train", 16), ("validation", 50)])
def test_packing(corpus: PreparedCorpus, split: str, max_len: int) -> None:
    cls, sep = corpus.special_ids["cls_token_id"], corpus.special_ids["sep_token_id"]
    data = PretrainingDataset(corpus, split, max_seq_length=max_len, nsp=False)
    docs = [np.concatenate(d).tolist() for d in corpus.documents(split)]
    stream = [t for i, d in enumerate(docs) for t in ([sep] if i else []) + d]  # documents joined by [SEP]
    bodies = []
    for i in range(len(data)):
        ex = data[i]
        ids = ex["input_ids"].tolist()
        assert "next_sentence_label" not in ex and not ex["token_type_ids"].any()
        assert ids[0] == cls and ids[-1] == sep
        assert len(ids) == max_len or i == len(data) - 1
        bodies += ids[1:-1]
    assert bodies == stream
    assert len(data) == -(-len(stream) // (max_len - 2))


# ---- collator -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(nsp_data: PretrainingDataset) -> list[dict]:
    return [nsp_data[i] for i in range(1500)]


def test_collator_masking_depends_only_on_example_and_seed(corpus: PreparedCorpus, examples: list[dict]) -> None:
    collate = PretrainingCollator(corpus.tokenizer)
    alone = collate([examples[0]], [1234])
    with_short = collate([examples[3], examples[0]], [99, 1234])
    with_others = collate([examples[5], examples[9], examples[0]], [5, 9, 1234])
    n = len(examples[0]["input_ids"])
    for batch, row in ((with_short, 1), (with_others, 2)):
        for key in ("input_ids", "labels", "token_type_ids", "attention_mask"):
            assert torch.equal(batch[key][row, :n], alone[key][0, :n])
    reseeded = collate([examples[0]], [4321])
    assert not torch.equal(reseeded["labels"], alone["labels"])  # another epoch, another mask


def test_collator_padding_and_masking_rates(corpus: PreparedCorpus, examples: list[dict]) -> None:
    tok = corpus.tokenizer
    collate = PretrainingCollator(tok, pad_to_multiple_of=8)
    batch = collate(examples, list(range(len(examples))))
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width - 8 < lengths.max() <= width
    assert torch.equal(batch["attention_mask"].sum(1), lengths)
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == tok.pad_token_id).all() and (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["token_type_ids"][pad] == 0).all()
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]

    original = torch.full_like(batch["input_ids"], tok.pad_token_id)
    for i, e in enumerate(examples):
        original[i, : len(e["input_ids"])] = torch.as_tensor(e["input_ids"])
    specials = torch.isin(original, torch.tensor(tok.all_special_ids))
    selected = batch["labels"] != IGNORE_INDEX
    assert not (selected & specials).any()  # [CLS], [SEP] and padding are never masked
    assert torch.equal(batch["input_ids"][specials], original[specials])
    assert torch.equal(batch["labels"][selected], original[selected])
    assert abs(selected.sum() / (~specials).sum() - 0.15) < 0.01
    as_mask = batch["input_ids"][selected] == tok.mask_token_id
    unchanged = batch["input_ids"][selected] == original[selected]
    assert abs(as_mask.float().mean() - 0.8) < 0.03 and abs(unchanged.float().mean() - 0.1) < 0.03
    ids = batch["input_ids"]
    replaced = ids[selected & (ids != tok.mask_token_id) & (ids != original)]
    assert not torch.isin(replaced, torch.tensor(tok.all_special_ids)).any()


def test_collator_whole_word(corpus: PreparedCorpus, examples: list[dict]) -> None:
    tok = corpus.tokenizer
    batch = PretrainingCollator(tok, whole_word=True)(examples, [7 * i for i in range(len(examples))])
    words = selected_words = tokens = 0
    for i, e in enumerate(examples):
        pieces = tok.convert_ids_to_tokens(e["input_ids"].tolist())
        labels = batch["labels"][i, : len(pieces)].tolist()
        word: list[int] = []
        for j, piece in enumerate([*pieces, "[END]"]):
            if not piece.startswith("##") and word:  # a word ends: all of its pieces masked, or none
                chosen = {labels[k] != IGNORE_INDEX for k in word}
                assert len(chosen) == 1
                words += 1
                selected_words += chosen.pop()
                word = []
            if piece.startswith("##") or piece not in ("[CLS]", "[SEP]", "[END]"):
                word.append(j)
        tokens += sum(label != IGNORE_INDEX for label in labels)
    assert any(len(p) > 2 and p.startswith("##") for p in tok.get_vocab())  # the test vocabulary splits words
    assert abs(selected_words / words - 0.15) < 0.015


def test_collator_errors(corpus: PreparedCorpus, examples: list[dict], tmp_path: Path) -> None:
    collate = PretrainingCollator(corpus.tokenizer)
    with pytest.raises(PlmkitError, match="2 examples but 1 seeds"):
        collate(examples[:2], [1])
    (tmp_path / "t.txt").write_text("some text for a tiny byte-level vocabulary\n" * 20)
    with pytest.raises(PlmkitError, match="no mask or pad token"):
        PretrainingCollator(train_bytelevel_bpe([tmp_path / "t.txt"], 300))
