"""Streaming a CSV with a required header: one dict per row, one :class:`RowError` per bad line.

The file is read as bytes and every physical line is decoded and parsed on its own, so one bad
line costs that line only: a byte that is not UTF-8, a NUL byte (binary data), an unterminated
quote or a wrong number of cells becomes a :class:`RowError` naming the line, and the next line is
read as the next row. A cell may therefore not span lines (no column of the files read here holds
free text); a quote left open is reported at its line instead of swallowing the lines after it.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: A physical line longer than this is not a row of these files (binary data, a missing newline).
MAX_LINE_BYTES = 1 << 20
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
         b"\xfe\xff": "UTF-16"}
_SAVE_AS = "save the file as UTF-8 CSV"


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


def _physical_lines(fh) -> Iterator[tuple[bytes, bool]]:
    """``(line, too_long)`` per physical line (``\\n``, ``\\r\\n`` or a lone ``\\r`` ends one),
    without its terminator. A line over :data:`MAX_LINE_BYTES` comes back cut, flagged, and the
    rest of it is skipped (read in pieces, never held whole)."""
    while True:
        chunk = fh.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while True:  # drop the rest of this line
                more = fh.readline(MAX_LINE_BYTES)
                if not more or more.endswith(b"\n"):
                    break
            yield chunk[:200], True
            continue
        if b"\r" in chunk.rstrip(b"\r\n"):  # old Mac line ends inside the chunk
            parts = chunk.splitlines()
            yield from ((p, False) for p in parts)
        else:
            yield chunk.rstrip(b"\r\n"), False


def _decode(raw: bytes) -> str:
    """The line as text; ``ValueError`` saying why it is not a line of a UTF-8 CSV."""
    if b"\x00" in raw:
        col = raw.index(b"\x00") + 1
        raise ValueError(f"binary data (NUL byte at column {col}), not CSV text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1].hex()
        raise ValueError(f"not UTF-8 text (byte 0x{bad} at column {exc.start + 1}); {_SAVE_AS}") from None


def parse_line(text: str) -> list[str]:
    """The cells of one CSV line; ``ValueError`` naming the quoting problem."""
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        msg = str(exc)
        if "unexpected end of data" in msg:
            raise ValueError("unterminated quote: a quoted cell runs past the end of the line (cells "
                             "cannot span lines here); the row is rejected and the next line is read as "
                             "a row of its own") from None
        raise ValueError(f"malformed CSV quoting ({msg})") from None
    except StopIteration:
        return []


def iter_rows(path: str | Path, columns: Sequence[str], what: str) -> Iterator[tuple[int, dict[str, str]] | RowError]:
    """Yield ``(line, {column: cell})`` per row, or a :class:`RowError` for a malformed line.

    Line numbers are 1-based physical lines (the header is line 1); blank lines are skipped. A file
    that cannot be opened, is empty, is not UTF-8 text in its header or lacks a required column
    raises :class:`InputError` naming ``what``.
    """
    path = Path(path)
    src = str(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open {what} file: {exc.strerror}", src) from exc
    with fh:
        lines = _physical_lines(fh)
        header_raw = b""
        lineno = 0
        for raw, too_long in lines:  # the first non-blank line is the header
            lineno += 1
            if too_long:
                raise InputError(f"not a {what} file: the first line is longer than {MAX_LINE_BYTES} bytes "
                                 "(a binary file?)", src, lineno)
            if raw.strip():
                header_raw = raw
                break
        if not header_raw:
            raise InputError(f"empty file, expected a {what} header", src)
        for bom, name in _BOMS.items():
            if header_raw.startswith(bom):
                raise InputError(f"the file is {name} encoded; {_SAVE_AS}", src, lineno)
        if header_raw.startswith(b"\xef\xbb\xbf"):
            header_raw = header_raw[3:]
        try:
            header = [h.strip() for h in parse_line(_decode(header_raw))]
        except ValueError as exc:
            raise InputError(f"not a {what} file: header line unreadable: {exc}", src, lineno) from None
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"not a {what} file: missing column(s) {', '.join(missing)}", src, lineno)
        for raw, too_long in lines:
            lineno += 1
            if too_long:
                yield RowError(lineno, f"line longer than {MAX_LINE_BYTES} bytes (binary data?)", src)
                continue
            if not raw.strip():
                continue
            try:
                cells = parse_line(_decode(raw))
            except ValueError as exc:
                yield RowError(lineno, str(exc), src)
                continue
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                yield RowError(lineno, f"expected {len(header)} cells, got {len(cells)}", src)
                continue
            yield lineno, dict(zip(header, cells, strict=True))
