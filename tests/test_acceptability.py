"""Synthetic unacceptable sentences (objectives.acceptability) and the word/tag corpus reader (data.tagged)."""

import random
import zipfile

import pytest

from plmkit.data.tagged import read_tagged
from plmkit.errors import PlmkitError
from plmkit.objectives.acceptability import (
    DELETABLE,
    INSERTS,
    PREPOSITIONS,
    acceptability_pairs,
    corrupt,
    detokenize,
    tag_text,
    unigram_tagger,
    verb_forms,
)

SENTENCE = [("The", "at"), ("dog", "nn"), ("is", "bez"), ("sleeping", "vbg"), ("in", "in"), ("the", "at"),
            ("garden", "nn"), (".", ".")]
WORDS = [w for w, _ in SENTENCE]


def only(kind, sentence=SENTENCE, seed=0, verbs=None):
    return corrupt(sentence, random.Random(seed), verbs, kinds=(kind,))


def test_each_kind_makes_its_corruption():
    assert only("agreement") == ["The", "dog", "are", "sleeping", "in", "the", "garden", "."]
    assert only("verb_s", [("She", "pps"), ("watches", "vbz"), ("it", "ppo")]) == ["She", "watch", "it"]
    assert only("verb_s", [("They", "ppss"), ("run", "vb"), ("home", "nr")]) == ["They", "runs", "home"]
    for seed in range(10):
        swapped = only("swap", seed=seed)
        i = next(i for i, (a, b) in enumerate(zip(swapped, WORDS, strict=True)) if a != b)
        assert swapped[i:i + 2] == WORDS[i:i + 2][::-1]
        moved = only("move", seed=seed)
        assert sorted(moved) == sorted(WORDS) and moved != WORDS
        deleted = only("delete", seed=seed)
        assert len(deleted) == len(WORDS) - 1
        gone = [w for w, t in SENTENCE if w not in deleted or WORDS.count(w) > deleted.count(w)]
        assert gone and dict(SENTENCE)[gone[0]].startswith(DELETABLE)
        inserted = only("insert", seed=seed)
        assert len(inserted) == len(WORDS) + 1 and any(w in INSERTS for w in inserted)
        prep = only("preposition", seed=seed)
        assert prep[4] in PREPOSITIONS and prep[4] != "in" and prep[:4] + prep[5:] == WORDS[:4] + WORDS[5:]
    verbs = {"vbd": ["slept"], "vbz": ["sleeps"]}
    assert only("verb_form", verbs=verbs)[3] in ("slept", "sleeps")


def test_corrupt_keeps_case_is_seeded_and_gives_up():
    assert only("agreement", [("This", "dt"), ("works", "vbz")]) == ["These", "works"]
    draws = [corrupt(SENTENCE, random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1] and draws[0] != WORDS
    assert only("agreement", [("Dogs", "nns"), ("bark", "vb")]) is None  # nothing to flip
    assert only("verb_form", verbs=None) is None
    with pytest.raises(ValueError, match="unknown corruption kind 'nope'"):
        only("nope")


def test_pairs_group_a_sentence_with_distinct_corruptions():
    groups = acceptability_pairs([SENTENCE, [("...", "...")]], random.Random(0), negatives=3)
    assert len(groups) == 1  # punctuation alone: no corruption applies, the sentence is left out
    (text, label), *bad = groups[0]
    assert (text, label) == ("The dog is sleeping in the garden.", 1)
    assert 1 <= len(bad) <= 3 and all(lab == 0 for _, lab in bad) and len({t for t, _ in bad}) == len(bad)


def test_tagger_and_detokenize():
    tagger = unigram_tagger([[("run", "vb"), ("fast", "rb")], [("Run", "nn"), ("run", "vb")]])
    assert tagger == {"run": "vb", "fast": "rb"}
    assert tag_text("They run, don't they?", tagger) == [
        ("They", "nn"), ("run", "vb"), (",", ","), ("don't", "nn"), ("they", "nn"), ("?", "?")]
    assert detokenize(["the", "dog", "'s", "bone", ",", "isn't", "it", "?"]) == "The dog's bone, isn't it?"
    assert verb_forms([SENTENCE, [("ran", "vbd"), ("3", "cd")]]) == {"vbg": ["sleeping"], "vbd": ["ran"]}


def test_read_tagged_from_zip_and_folder(tmp_path):
    archive = tmp_path / "brown.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("brown/README", "not/a corpus file at all")
        z.writestr("brown/ca02", "\n\n\tA/AT cat/NN ./.\n")
        z.writestr("brown/ca01", "\tThe/at dog/nn barked/vbd ./.\n\n\tIt/pps ran/vbd ./.\n")
    sentences = list(read_tagged(archive))
    assert sentences[0] == [("The", "at"), ("dog", "nn"), ("barked", "vbd"), (".", ".")]
    assert [s[0][0] for s in sentences] == ["The", "It", "A"] and sentences[2][1] == ("cat", "nn")
    folder = tmp_path / "brown"
    folder.mkdir()
    (folder / "cb01").write_text("1/2/cd cups/nns\n", encoding="utf-8")
    assert list(read_tagged(folder)) == [[("1/2", "cd"), ("cups", "nns")]]


def test_read_tagged_errors_name_the_file_and_line(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "ca01").write_text("ok/nn\nbroken token/nn\n", encoding="utf-8")
    with pytest.raises(PlmkitError, match=r"ca01:2: token 'broken' is not word/tag"):
        list(read_tagged(folder))
    (folder / "ca01").write_bytes(b"caf\xe9/nn\n")
    with pytest.raises(PlmkitError, match=r"ca01: not valid UTF-8"):
        list(read_tagged(folder))
    with pytest.raises(PlmkitError, match="no such tagged corpus"):
        list(read_tagged(tmp_path / "missing.zip"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PlmkitError, match="no corpus files"):
        list(read_tagged(empty))


def test_read_tagged_on_the_real_brown_corpus(data_dir):
    path = data_dir / "nltk_corpora" / "brown.zip"
    if not path.exists():
        pytest.skip(f"{path} not found")
    first = next(iter(read_tagged(path)))
    assert first[:3] == [("The", "at"), ("Fulton", "np-tl"), ("County", "nn-tl")]
    assert corrupt(first, random.Random(0)) not in (None, [w for w, _ in first])
