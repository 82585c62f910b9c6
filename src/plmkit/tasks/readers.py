"""Readers for task data files: TSV, CSV, JSON Lines, CoNLL columns and whole-file JSON.

Every reader decodes UTF-8 line by line (a UTF-8 BOM on the first line is dropped, as MRPC has one), so a bad
byte, a short row or broken JSON ends in one `PlmkitError` naming the file and the 1-based line. An empty file is
an error too: a task with no rows is never what was meant.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plmkit.errors import PlmkitError

Row = dict[str, str]


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every line of a UTF-8 text file (gzip-compressed when
    its name ends in .gz)."""
    path = Path(path)
    if not path.is_file():
        raise PlmkitError(f"data file not found: {path}")
    seen = False
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise PlmkitError(f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte {err.start})") \
                        from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                seen = seen or bool(line.strip())
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError) as err:  # gzip: BadGzipFile is an OSError, a truncated file an EOFError
        raise PlmkitError(f"cannot read {path}: {err}") from err
    if not seen:
        raise PlmkitError(f"{path}: empty file")


def read_tsv(path: Path, header: bool = True) -> Iterator[tuple[int, list[str], list[str] | None]]:
    """(line number, fields, header fields or None) for every non-blank row of a tab-separated file.

    Fields are split on tabs with no quoting, as the GLUE files need (MRPC and QNLI have unbalanced quotes).
    """
    names: list[str] | None = None
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if header and names is None:
            names = [name.strip() for name in fields]
            continue
        yield lineno, fields, names


def read_csv(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str], list[str]]]:
    """(line number, fields, header fields) for every row of a CSV file with a header (standard quoting)."""
    lines = iter_lines(path)
    numbers: list[int] = []

    def text() -> Iterator[str]:
        for lineno, line in lines:
            numbers.append(lineno)
            yield line

    names: list[str] | None = None
    try:
        for fields in csv.reader(text(), delimiter=delimiter):
            lineno = numbers[-1]
            if not any(field.strip() for field in fields):
                continue
            if names is None:
                names = [name.strip() for name in fields]
                continue
            yield lineno, fields, names
    except csv.Error as err:
        raise PlmkitError(f"{path}:{numbers[-1] if numbers else 1}: bad CSV: {err}") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON Lines file; each line must be a JSON object."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PlmkitError(f"{path}:{lineno}: not valid JSON: {err.msg} at column {err.colno}") from None
        if not isinstance(record, dict):
            raise PlmkitError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def read_json(path: Path) -> Any:
    """A whole JSON file (SQuAD), with a one-line error naming the file and line of a syntax error."""
    text = "\n".join(line for _, line in iter_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PlmkitError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None


def read_conll(path: Path, token_column: int = 0, tag_column: int = -1,
               skip_docstart: bool = True) -> Iterator[tuple[int, list[str], list[str]]]:
    """(first line number, tokens, tags) for every sentence of a CoNLL file (whitespace columns, blank line
    between sentences). `-DOCSTART-` lines are document separators and are skipped."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields or (skip_docstart and fields[0] == "-DOCSTART-"):
            if tokens:
                yield start, tokens, tags
            tokens, tags = [], []
            continue
        try:
            token, tag = fields[token_column], fields[tag_column]
        except IndexError:
            raise PlmkitError(f"{path}:{lineno}: missing column: expected token column {token_column} and tag column "
                              f"{tag_column}, got {len(fields)} columns") from None
        if not tokens:
            start = lineno
        tokens.append(token)
        tags.append(tag)
    if tokens:
        yield start, tokens, tags


def field(fields: list[str], names: list[str] | None, column: str | int, where: str) -> str:
    """One column of a row, by header name or by index; a missing column is an error naming `where` (file:line)."""
    if isinstance(column, int):
        index = column
    else:
        if names is None or column not in names:
            raise PlmkitError(f"{where}: no column {column!r} in the header ({', '.join(names or [])})")
        index = names.index(column)
    if not -len(fields) <= index < len(fields):
        name = column if isinstance(column, str) else f"#{column}"
        raise PlmkitError(f"{where}: missing column {name!r} (the row has {len(fields)} of "
                          f"{len(names) if names else index + 1})")
    return fields[index]


def record_value(record: dict[str, Any], key: str, where: str) -> Any:
    """`record[key]` of a JSON row, or an error naming `where` (file:line) and the missing key."""
    if key not in record:
        raise PlmkitError(f"{where}: missing key {key!r} (the row has {', '.join(map(repr, record)) or 'no keys'})")
    return record[key]
