"""Raw text for pretraining: which files an input names, the documents in them, and the sentences of a document.

Inputs are text files (plain or `.gz`), folders (every non-hidden file below them, sorted), glob patterns, and JSONL
files (`.jsonl`, `.jsonl.gz`) with one document per record in a text field. In text files a document is a block of
lines between blank lines (`doc_boundary="blank_line"`, as BERT's pretraining data and wrapped book text have it; the
lines of a block are stripped and joined by one space) or a single line (`doc_boundary="line"`).

`split_sentences` is a small regex splitter, good enough to cut documents into NSP segments without a model
download: a sentence ends at `.`, `!` or `?` (and closing quotes or brackets) followed by white space and a capital
letter or an opening quote, at CJK `。！？`, and at a paragraph break (a blank line inside a JSONL text). It is
lossless: the sentences concatenate back to the text, white space between two sentences going with the second,
so tokenizing the sentences one by one gives the ids of tokenizing the whole text for WordPiece and byte-level BPE.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from plmkit.errors import PlmkitError

logger = logging.getLogger(__name__)

DOC_BOUNDARIES = ("blank_line", "line")
# A document longer than this is cut at a line boundary, so that a file without blank lines read with
# doc_boundary="blank_line" cannot make one document the size of the file (memory stays bounded).
MAX_DOCUMENT_CHARS = 1 << 24

_GLOB_CHARS = re.compile(r"[*?\[]")
# A sentence end: terminal punctuation, closing quotes/brackets, then (not consumed) white space and what starts a
# sentence (a capital, possibly after an opening quote or bracket); or CJK terminal punctuation; or a blank line.
_SENTENCE_END = re.compile(
    r"[.!?]+[\"'”’»)\]]*(?=\s+[\"'“‘«(\[]*[A-ZÀ-ÖØ-ÞА-ЯΑ-Ω])"
    r"|[。！？]+[”’」』）】]*"
)
_PARAGRAPH_END = re.compile(r"(?<=\S)(?=[^\S\n]*\n\s*\n)")
_LAST_WORD = re.compile(r"(\w+)\.$")
# Abbreviations whose period does not end a sentence ("Mr. Woodhouse"), compared in lower case.
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc mt gen col lt sgt capt rev hon inc ltd co no fig "
                           "vol ch pp ed eds approx dept univ".split())


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order; `"".join(result) == text` (white space between sentences starts the next)."""
    sentences, start = [], 0
    ends = _SENTENCE_END.finditer(text)
    if "\n" in text:  # paragraph breaks (JSONL texts); a separate pass, as the lookbehind is slow on every position
        ends = sorted([*ends, *_PARAGRAPH_END.finditer(text)], key=lambda m: m.end())
    for match in ends:
        end = match.end()
        if end <= start:
            continue
        punct = match.group()
        if punct[:1] == "." and punct[1:2] not in (".", "!", "?"):  # a lone period may end an abbreviation
            word = _LAST_WORD.search(text, max(start, match.start() - 20), match.start() + 1)
            word = word.group(1) if word else ""
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue  # "Mr. Smith", "J. Smith": not an end
        sentences.append(text[start:end])
        start = end
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files that `inputs` name, in order, each once: files as given, folders recursively (sorted, hidden files
    and folders skipped), glob patterns expanded (sorted). A missing path or a pattern matching nothing is an error."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise PlmkitError("no input files given")
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise PlmkitError(f"input folder has no files: {path}")
            files.extend(found)
        elif _GLOB_CHARS.search(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not found:
                raise PlmkitError(f"input pattern matches no files: {item}")
            files.extend(found)
        else:
            raise PlmkitError(f"input not found: {path}")
    return list(dict.fromkeys(files))


ENCODING_ERRORS = ("strict", "replace")


def _members(path: Path) -> Iterator[tuple[str, str | None]]:
    """(display name, archive member or None) for each text file `path` holds: itself, or for a .zip archive its
    files in archive order, skipping folders, hidden files and README files (NLTK's corpus zips have one each)."""
    if path.suffix != ".zip":
        yield str(path), None
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (OSError, zipfile.BadZipFile) as err:
        raise PlmkitError(f"cannot read {path}: {err}") from err
    for member in names:
        base = member.rsplit("/", 1)[-1]
        if base.startswith(".") or base.upper().startswith("README"):
            continue
        yield f"{path}!{member}", member


class DocumentReader:
    """Streams the documents of a list of files; `bytes_read` says how far it is (on-disk bytes, for progress)."""

    def __init__(self, files: Sequence[Path], *, doc_boundary: str = "blank_line", text_field: str = "text",
                 encoding_errors: str = "strict") -> None:
        if doc_boundary not in DOC_BOUNDARIES:
            raise PlmkitError(f"unknown doc_boundary {doc_boundary!r}; choose from: {', '.join(DOC_BOUNDARIES)}")
        if encoding_errors not in ENCODING_ERRORS:
            raise PlmkitError(f"unknown encoding_errors {encoding_errors!r}; choose from: {', '.join(ENCODING_ERRORS)}")
        self.files, self.doc_boundary, self.text_field = list(files), doc_boundary, text_field
        self.encoding_errors = encoding_errors
        self.bytes_read = 0
        self.total_bytes = sum(f.stat().st_size for f in self.files)

    def __iter__(self) -> Iterator[str]:
        """Each document's text (never empty or blank), file after file (a .zip: member after member)."""
        self.bytes_read = 0
        done = 0
        for path in self.files:
            for name, member in _members(path):
                if is_jsonl(Path(member or path)):
                    yield from self._jsonl_documents(name, path, member, done)
                elif self.doc_boundary == "line":
                    for _, line in self._lines(name, path, member, done):
                        if line.strip():
                            yield line.strip()
                else:
                    yield from self._block_documents(name, path, member, done)
            done += path.stat().st_size
            self.bytes_read = done

    def _lines(self, name: str, path: Path, member: str | None, done: int) -> Iterator[tuple[int, str]]:
        """(line number, line without its end) of a UTF-8 file, plain, gzip or a zip archive's member. With
        encoding_errors="replace" an invalid byte becomes U+FFFD (logged once per file) instead of an error."""
        warned = False
        try:
            with open(path, "rb") as raw:
                archive = zipfile.ZipFile(raw) if member is not None else None
                if archive is not None:
                    handle = archive.open(member)
                else:
                    handle = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
                for lineno, data in enumerate(handle, start=1):
                    try:
                        line = data.decode("utf-8")
                    except UnicodeDecodeError as err:
                        if self.encoding_errors == "strict":
                            raise PlmkitError(f"{name}:{lineno}: not valid UTF-8 ({err.reason} at byte {err.start}); "
                                              "encoding_errors=replace reads it with U+FFFD") from err
                        line = data.decode("utf-8", errors="replace")
                        if not warned:
                            logger.warning("%s:%d: not valid UTF-8; invalid bytes replaced by U+FFFD", name, lineno)
                            warned = True
                    if lineno % 1024 == 0 and archive is None:
                        self.bytes_read = done + raw.tell()
                    yield lineno, line.rstrip("\r\n")
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as err:
            raise PlmkitError(f"cannot read {name}: {err}") from err

    def _block_documents(self, name: str, path: Path, member: str | None, done: int) -> Iterator[str]:
        block: list[str] = []
        size = 0
        for lineno, line in self._lines(name, path, member, done):
            line = line.strip()
            if line:
                block.append(line)
                size += len(line) + 1
                if size < MAX_DOCUMENT_CHARS:
                    continue
                logger.warning("%s:%d: document over %d characters without a blank line; cut here", name, lineno,
                               MAX_DOCUMENT_CHARS)
            if block:
                yield " ".join(block)
                block, size = [], 0
        if block:
            yield " ".join(block)

    def _jsonl_documents(self, name: str, source: Path, member: str | None, done: int) -> Iterator[str]:
        field = self.text_field
        path = name  # error messages name the file, or the member of an archive
        for lineno, line in self._lines(name, source, member, done):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PlmkitError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(record, dict):
                raise PlmkitError(f"{path}:{lineno}: a JSON {type(record).__name__}, not an object with a "
                                  f"'{field}' field")
            if field not in record:
                keys = ", ".join(map(str, list(record)[:10])) or "none"
                raise PlmkitError(f"{path}:{lineno}: no '{field}' field (keys: {keys}); choose one with text_field")
            text = record[field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise PlmkitError(f"{path}:{lineno}: '{field}' is a JSON {type(text).__name__}, not a string")
            if text.strip():
                yield text.strip()
