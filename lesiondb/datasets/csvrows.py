"""Streaming a CSV with a required header: one dict per row, one :class:`RowError` per bad line."""
from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class RowError:
    """A rejected row: where and why."""

    line: int
    reason: str
    source: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"

    def to_dict(self) -> dict:
        return {"source": self.source, "line": self.line, "reason": self.reason}


def iter_rows(path: str | Path, columns: Sequence[str], what: str) -> Iterator[tuple[int, dict[str, str]] | RowError]:
    """Yield ``(line, {column: cell})`` per row, or a :class:`RowError` for a malformed line.

    Line numbers are 1-based physical lines (the header is line 1); blank lines are skipped. A file
    that cannot be opened, is empty or lacks a required column raises :class:`InputError` naming ``what``.
    """
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot open {what} file: {exc.strerror}", str(path)) from exc
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputError(f"empty file, expected a {what} header", str(path)) from None
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"not a {what} file: missing column(s) {', '.join(missing)}", str(path), 1)
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowError(line, f"malformed CSV: {exc}", str(path))
                continue
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                yield RowError(line, f"expected {len(header)} cells, got {len(cells)}", str(path))
                continue
            yield line, dict(zip(header, cells, strict=True))
