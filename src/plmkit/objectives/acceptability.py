"""Synthetic unacceptable sentences: one grammatical corruption of a POS-tagged sentence, of the kinds linguists
build CoLA's unacceptable examples from. Pairs of (sentence, 1) and (corrupted, 0) make an intermediate task that
teaches a sentence-embedding checkpoint to look at syntax before it is fine-tuned on acceptability (RESULTS.md:
CoLA from all-MiniLM-L6-v2). Tags follow the Brown corpus (lower case, "-tl"/"-hl" suffixes allowed):
vb/vbz/vbd/vbn/vbg verbs, in prepositions, at articles, md modals, pp* pronouns, be*/hv*/do* auxiliaries."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

Tagged = Sequence[tuple[str, str]]  # (word, tag)

# agreement and case: the word becomes its wrong-number or wrong-case partner
PARTNERS = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has", "does": "do",
            "do": "does", "am": "are", "this": "these", "these": "this", "that": "those", "those": "that",
            "a": "an", "an": "a", "much": "many", "many": "much", "he": "him", "him": "he", "she": "her",
            "they": "them", "them": "they", "we": "us", "us": "we", "i": "me", "me": "i", "who": "whom"}
PREPOSITIONS = ("of", "in", "on", "at", "to", "from", "with", "by", "for", "about")
INSERTS = ("the", "to", "of", "a", "is", "did", "that", "will", "be", "have", "for")
VERB_FORMS = ("vb", "vbd", "vbn", "vbg", "vbz")
# a word of these tags (by prefix) can go missing: verbs, auxiliaries, modals, prepositions, articles, pronouns
DELETABLE = ("vb", "be", "hv", "do", "md", "in", "at", "to", "pp")
KINDS = ("agreement", "agreement", "verb_s", "swap", "move", "delete", "delete", "insert", "preposition",
         "verb_form")  # agreement and deletion drawn twice as often, as in CoLA's unacceptable sentences


def base_tag(tag: str) -> str:
    return tag.split("-")[0]


def _flip_s(word: str, tag: str) -> str:
    """A present-tense verb with its -s added (vb) or dropped (vbz)."""
    if tag == "vbz":
        if word.endswith("es") and len(word) > 3 and word[-3] in "sxzh":
            return word[:-2]
        return word[:-1] if word.endswith("s") else word
    return word + ("es" if word[-1] in "sxzh" else "s")


def corrupt(sentence: Tagged, rng: random.Random, verbs: dict[str, list[str]] | None = None,
            kinds: Sequence[str] = KINDS, tries: int = 20) -> list[str] | None:
    """The sentence's words with one corruption of a kind drawn from `kinds` (one that applies to it), or None if
    none applied in `tries` draws. `verbs` maps a verb tag to words of that tag, for "verb_form" (a verb replaced by
    one of another form)."""
    words = [w for w, _ in sentence]
    tags = [base_tag(t) for _, t in sentence]
    body = [i for i, t in enumerate(tags) if t[:1].isalpha()]  # not punctuation
    for _ in range(tries):
        kind = rng.choice(kinds)
        out = list(words)
        if kind == "agreement":
            where = [i for i in body if out[i].lower() in PARTNERS]
            if not where:
                continue
            i = rng.choice(where)
            new = PARTNERS[out[i].lower()]
            out[i] = new.capitalize() if out[i][:1].isupper() else new
        elif kind == "verb_s":
            where = [i for i in body if tags[i] in ("vb", "vbz") and out[i].isalpha()]
            if not where:
                continue
            i = rng.choice(where)
            out[i] = _flip_s(out[i], tags[i])
        elif kind == "swap":  # two neighbours of different classes trade places
            where = [i for i in body[:-1] if i + 1 in body and tags[i][:2] != tags[i + 1][:2]
                     and words[i].lower() != words[i + 1].lower()]
            if not where:
                continue
            i = rng.choice(where)
            out[i], out[i + 1] = out[i + 1], out[i]
        elif kind == "move":  # a word moved at least two places
            if len(body) < 4:
                continue
            i, j = rng.sample(body, 2)
            if abs(i - j) < 2:
                continue
            out.insert(j, out.pop(i))
        elif kind == "delete":
            where = [i for i in body if tags[i].startswith(DELETABLE)]
            if not where:
                continue
            del out[rng.choice(where)]
        elif kind == "insert":
            if not body:
                continue
            out.insert(rng.choice(body), rng.choice(INSERTS))
        elif kind == "preposition":
            where = [i for i in body if tags[i] == "in"]
            if not where:
                continue
            i = rng.choice(where)
            out[i] = rng.choice([p for p in PREPOSITIONS if p != out[i].lower()])
        elif kind == "verb_form":
            where = [i for i in body if tags[i] in VERB_FORMS]
            if not where or not verbs:
                continue
            i = rng.choice(where)
            other = [t for t in VERB_FORMS if t != tags[i] and verbs.get(t)]
            if not other:
                continue
            out[i] = rng.choice(verbs[rng.choice(other)])
        else:
            raise ValueError(f"unknown corruption kind {kind!r}; known: {', '.join(sorted(set(KINDS)))}")
        if [w.lower() for w in out] != [w.lower() for w in words]:
            return out
    return None


def verb_forms(sentences: Iterable[Tagged]) -> dict[str, list[str]]:
    """Words of each verb tag in the sentences (with repeats, so common verbs are drawn more often)."""
    forms: dict[str, list[str]] = {}
    for sentence in sentences:
        for word, tag in sentence:
            if base_tag(tag) in VERB_FORMS and word.isalpha():
                forms.setdefault(base_tag(tag), []).append(word.lower())
    return forms


def unigram_tagger(sentences: Iterable[Tagged]) -> dict[str, str]:
    """Each lower-cased word's most frequent tag in the sentences: a tagger for untagged text good enough to pick
    which words to corrupt."""
    counts: dict[str, dict[str, int]] = {}
    for sentence in sentences:
        for word, tag in sentence:
            by_tag = counts.setdefault(word.lower(), {})
            by_tag[tag] = by_tag.get(tag, 0) + 1
    return {word: max(by_tag, key=by_tag.__getitem__) for word, by_tag in counts.items()}


def tag_text(text: str, tagger: dict[str, str], unknown: str = "nn") -> list[tuple[str, str]]:
    """Words and punctuation of `text`, each with the tagger's tag (punctuation tagged as itself)."""
    tokens = re.findall(r"\w+(?:'\w+)?|[^\w\s]", text)
    return [(t, tagger.get(t.lower(), unknown) if t[0].isalnum() else t) for t in tokens]


def detokenize(words: Sequence[str]) -> str:
    """Words joined as running text: no space before closing punctuation, the first letter capitalised."""
    text = " ".join(words)
    text = re.sub(r" ([,.;:?!)%]|'s\b|n't\b|'\w\w?\b)", r"\1", text).replace("( ", "(")
    return text[:1].upper() + text[1:]


def acceptability_pairs(sentences: Iterable[Tagged], rng: random.Random, verbs: dict[str, list[str]] | None = None,
                        negatives: int = 1) -> list[list[tuple[str, int]]]:
    """For each sentence that can be corrupted: [(sentence, 1), (a corruption, 0), ...], up to `negatives` distinct
    corruptions. Groups stay together so a caller can split them into train and dev without leaking a sentence."""
    groups = []
    for sentence in sentences:
        words = [w for w, _ in sentence]
        bad = []
        for _ in range(negatives):
            out = corrupt(sentence, rng, verbs)
            if out is not None and out not in bad:
                bad.append(out)
        if bad:
            groups.append([(detokenize(words), 1)] + [(detokenize(b), 0) for b in bad])
    return groups
