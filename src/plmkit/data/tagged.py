"""POS-tagged corpora in NLTK's `word/tag` layout (the Brown corpus: one sentence a line, tokens separated by
spaces), read from the corpus's zip file or folder."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from plmkit.errors import PlmkitError

# corpus files are named like brown/ca01; README, CONTENTS and cats.txt are not text
CORPUS_FILE = re.compile(r"(?:.*/)?c[a-r]\d\d")


def _tagged_lines(name: str, text: str) -> Iterator[list[tuple[str, str]]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        sentence = []
        for token in tokens:
            word, slash, tag = token.rpartition("/")
            if not slash or not word or not tag:
                raise PlmkitError(f"{name}:{lineno}: token {token!r} is not word/tag")
            sentence.append((word, tag.lower()))
        yield sentence


def _sentences(path: Path, sources: list[tuple[str, Callable[[], bytes]]]) -> Iterator[list[tuple[str, str]]]:
    """The sentences of each (name, read its bytes) source in order; errors name the source and line."""
    if not sources:
        raise PlmkitError(f"{path}: no corpus files (names like ca01) in it")
    for name, read in sources:
        try:
            text = read().decode("utf-8")
        except UnicodeDecodeError as err:
            raise PlmkitError(f"{name}: not valid UTF-8 ({err.reason} at byte {err.start})") from err
        yield from _tagged_lines(name, text)


def read_tagged(path: str | Path, pattern: re.Pattern = CORPUS_FILE) -> Iterator[list[tuple[str, str]]]:
    """Sentences as [(word, tag)] (tags lower-cased) from each file whose name matches `pattern`, in name order,
    inside a zip (NLTK's brown.zip) or a folder."""
    path = Path(path)
    if not path.exists():
        raise PlmkitError(f"{path}: no such tagged corpus (NLTK's brown.zip or its unzipped folder)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and pattern.fullmatch(p.name))
        yield from _sentences(path, [(str(p), p.read_bytes) for p in files])
        return
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if pattern.fullmatch(n))
        yield from _sentences(path, [(f"{path}:{n}", partial(archive.read, n)) for n in names])
