"""Reading text files line by line: plain or `.gz`, UTF-8, with errors that name the file and line."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from plmkit.errors import PlmkitError


def iter_lines(paths: Sequence[Path], batch_size: int = 1000) -> Iterator[list[str]]:
    """Non-empty lines of the files, in batches; a line that is not UTF-8 raises PlmkitError naming file and line."""
    batch: list[str] = []
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as handle:
                for lineno, raw in enumerate(handle, start=1):
                    try:
                        line = raw.decode("utf-8").rstrip("\r\n")
                    except UnicodeDecodeError as err:
                        raise PlmkitError(f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte {err.start})") \
                            from err
                    if line.strip():
                        batch.append(line)
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
        except (OSError, EOFError, zlib.error) as err:
            raise PlmkitError(f"cannot read {path}: {err}") from err
    if batch:
        yield batch
