"""Bad-input suite for the CSV readers (issue #15): malformed variants of real DL_info rows and of a
synthetic cohort annotations.csv — encodings, binary data, quoting, missing and extra columns,
out-of-range values, truncated and oversized files, duplicates.

For every variant: no exception but :class:`InputError` naming the file for a file that cannot be
read at all; otherwise one :class:`RowError` per damaged line, naming the file and that line, and
no other; every undamaged row read, with exactly the values a clean read gives (nothing that a
clean run would not write). A few variants go end to end through ingest into the embedded engine.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.datasets import cohort as C
from lesiondb.datasets.csvrows import MAX_LINE_BYTES, RowError
from lesiondb.datasets.deeplesion import COLUMNS, read_dl_info
from lesiondb.errors import InputError
from tests.ct_factory import ANN_COLUMNS, ann_row

IDS = Pseudonymizer(b"bad-input-suite-key-0123456789ab")
N_ROWS = 30  # real DL_info rows per variant file; physical line of row i is i + 2


def _line(cells: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue().rstrip("\n").encode("utf-8")


@dataclass
class Variant:
    """A malformed file: its lines, which physical lines must be rejected and which base rows
    must not be read (``dropped``); or the whole file refused (``file_error``)."""

    lines: list[bytes]
    bad: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    reason: str | None = None  # a substring of each bad line's reason
    file_error: str | None = None
    twice: list[int] = field(default_factory=list)  # base rows present twice (exact duplicates)
    eol: bytes = b"\n"
    tail: bytes = b"\n"
    raw: bytes | None = None

    def data(self) -> bytes:
        return self.raw if self.raw is not None else self.eol.join(self.lines) + self.tail


Build = Callable[[list[str], list[list[str]]], Variant]


def _base(header, rows) -> list[bytes]:
    return [_line(header)] + [_line(r) for r in rows]


# -- cell values: (column, bad value or f(row) -> value, reason) -------------------------------------------
def _shift(cell: str, d: float) -> str:
    return ", ".join(f"{float(v) + d:g}" for v in re.split(r"[,\s]+", cell.strip()) if v)


def _key(r: dict) -> int:
    return int(r["Key_slice_index"])


DL_VALUES: list[tuple[str, object, str]] = [
    ("File_name", "x.png", "is not PPPPPP_SS_RR_KKK.png"),
    ("File_name", "", "is not PPPPPP_SS_RR_KKK.png"),
    ("File_name", lambda r: r["File_name"][:-7] + f"{_key(r) + 1:03d}.png", "disagrees"),
    ("Patient_index", "abc", "not a number"),
    ("Patient_index", "0", "disagrees"),
    ("Study_index", "1.5", "not an integer"),
    ("Series_ID", "", "not a number"),
    ("Key_slice_index", "1e400", "not an integer"),
    ("Measurement_coordinates", "1, 2, 3", "expected 8 numbers"),
    ("Measurement_coordinates", "a, b, c, d, e, f, g, h", "not a number"),
    ("Measurement_coordinates", lambda r: "nan, " + r["Measurement_coordinates"].split(",", 1)[1], "not finite"),
    ("Measurement_coordinates", lambda r: _shift(r["Measurement_coordinates"], -600), "negative"),
    ("Measurement_coordinates", lambda r: _shift(r["Measurement_coordinates"], 2000), "beyond the"),
    ("Bounding_boxes", "1, 2, 3", "expected 4 numbers"),
    ("Bounding_boxes", lambda r: _shift(r["Bounding_boxes"], 60), "does not contain the RECIST points"),
    ("Bounding_boxes", lambda r: _shift(r["Bounding_boxes"], -600), "negative"),
    ("Bounding_boxes", "300, 300, 200, 200", "x2 ≤ x1"),
    ("Lesion_diameters_Pixel_", "0, 0", "must be positive"),
    ("Lesion_diameters_Pixel_", "500, 1", "disagree with the RECIST axes"),
    ("Lesion_diameters_Pixel_", "x", "expected 2 numbers"),
    ("Normalized_lesion_location", "2, 0.5, 0.5", "outside [0, 1]"),
    ("Normalized_lesion_location", "0.5, 0.5", "expected 3 numbers"),
    ("Coarse_lesion_type", "9", "unknown code"),
    ("Coarse_lesion_type", "0", "unknown code"),
    ("Coarse_lesion_type", "3.5", "not an integer"),
    ("Possibly_noisy", "2", "not 0 or 1"),
    ("Possibly_noisy", "yes", "not a number"),
    ("Slice_range", lambda r: f"{_key(r) + 1}, {_key(r) + 10}", "outside Slice_range"),
    ("Slice_range", "20, 10", "first 20 > last 10"),
    ("Slice_range", lambda r: f"-5, {_key(r) + 3}", "negative"),
    ("Slice_range", "1.5, 900", "not an integer"),
    ("Spacing_mm_px_", "1e-300, 1e-300, 5", "outside the plausible"),
    ("Spacing_mm_px_", "1e300, 1e300, 5", "outside the plausible"),
    ("Spacing_mm_px_", "0.5, 0.5, 1e300", "slice interval"),
    ("Spacing_mm_px_", "0.5, 0.5, 1e-300", "slice interval"),
    ("Spacing_mm_px_", "0.5, 0.5, 100", "slice interval"),
    ("Spacing_mm_px_", "20, 20, 5", "pixel spacing"),
    ("Spacing_mm_px_", "0, 0.5, 5", "must be positive"),
    ("Spacing_mm_px_", "nan, 0.5, 5", "not finite"),
    ("Spacing_mm_px_", "inf, 0.5, 5", "not finite"),
    ("Spacing_mm_px_", "0.5, 0.5", "expected 3 numbers"),
    ("Image_size", "0, 0", "not a CT slice size"),
    ("Image_size", "100000, 100000", "not a CT slice size"),
    ("Image_size", "200, 200", "beyond the 200×200 image"),
    ("Image_size", "512", "expected 2 numbers"),
    ("Image_size", "512.5, 512", "not an integer"),
    ("DICOM_windows", "275, -175", "low 275 ≥ high -175"),
    ("DICOM_windows", "a, b", "not a number"),
    ("Patient_gender", "X", "not M or F"),
    ("Patient_age", "200", "out of range"),
    ("Patient_age", "-3", "out of range"),
    ("Patient_age", "old", "not a number"),
    ("Train_Val_Test", "4", "not 1, 2 or 3"),
    ("Train_Val_Test", "", "not a number"),
]


def _value_variant(col: str, value, reason: str, row: int) -> Build:
    def build(header, rows):
        rows = [list(r) for r in rows]
        d = dict(zip(header, rows[row], strict=True))
        rows[row][header.index(col)] = value(d) if callable(value) else value
        return Variant(_base(header, rows), bad={row + 2}, dropped={row}, reason=reason)
    return build


# -- bytes: encodings and binary data ------------------------------------------------------------------------
BAD_BYTES = {"ff": b"\xff", "lone-continuation": b"\x80", "truncated-2-byte": b"\xc3",
             "overlong": b"\xc0\xaf", "surrogate": b"\xed\xa0\x80", "latin1-e-acute": b"\xe9"}


def _bytes_in_line(seq: bytes, row: int, where: str) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        ln = lines[row + 1]
        cut = {"start": 0, "middle": len(ln) // 2, "end": len(ln)}[where]
        lines[row + 1] = ln[:cut] + seq + ln[cut:]
        return Variant(lines, bad={row + 2}, dropped={row}, reason="not UTF-8 text" if seq != b"\x00" else "NUL")
    return build


def _whole_file(kind: str) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        text = b"\n".join(lines).decode() + "\n"
        if kind in ("utf-16", "utf-16-be", "utf-32"):
            enc = {"utf-16": "utf-16", "utf-16-be": "utf-16", "utf-32": "utf-32"}[kind]
            data = text.encode(enc)
            if kind == "utf-16-be":
                data = b"\xfe\xff" + text.encode("utf-16-be")
            return Variant(lines, raw=data, file_error="encoded; save the file as UTF-8")
        if kind == "utf-8-bom":
            return Variant(lines, raw=b"\xef\xbb\xbf" + text.encode())
        if kind == "crlf":
            return Variant(lines, eol=b"\r\n", tail=b"\r\n")
        if kind == "cr":
            return Variant(lines, eol=b"\r", tail=b"\r")
        if kind == "no-final-newline":
            return Variant(lines, tail=b"")
        raise AssertionError(kind)
    return build


def _binary(kind: str) -> Build:
    blob = bytes(range(256)) * 8  # every byte value, newlines included
    def build(header, rows):
        lines = _base(header, rows)
        if kind == "png-as-csv":
            data = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256))
            return Variant(lines, raw=data, file_error="not a DL_info.csv file")
        if kind == "nul-file":
            return Variant(lines, raw=b"\x00" * 4096, file_error="not a DL_info.csv file")
        if kind in ("blob-appended", "blob-in-middle"):
            at = len(lines) if kind == "blob-appended" else 16
            pieces = blob.splitlines()
            new = lines[:at] + pieces + lines[at:]
            blob_lines = _physical(pieces)
            bad = {at + 1 + k for k, p in enumerate(blob_lines) if p.strip()}
            shifted = {i + 2 if i + 2 <= at else i + 2 + len(blob_lines) for i in range(len(rows))}
            return _Shifted(new, bad, shifted)
        raise AssertionError(kind)
    return build


def _physical(pieces: list[bytes]) -> list[bytes]:
    """The physical lines the reader sees in ``pieces`` joined by newlines (a lone CR ends one too)."""
    return b"\n".join(pieces).splitlines()


def _Shifted(lines, bad, row_lines) -> Variant:  # noqa: N802 - a Variant whose rows moved down
    v = Variant(lines, bad=bad)
    v.row_lines = row_lines  # type: ignore[attr-defined]
    return v


# -- quoting ---------------------------------------------------------------------------------------------------
def _unclosed_quote(row: int, col: str) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        cells = list(rows[row])
        k = header.index(col)
        before = _line(cells[:k]).decode() + "," if k else ""
        after = "," + _line(cells[k + 1:]).decode() if k + 1 < len(cells) else ""
        lines[row + 1] = (before + '"' + cells[k] + after).encode()  # the quote opened, never closed
        # an unterminated quote, or (a later quoted cell closing it) malformed quoting
        return Variant(lines, bad={row + 2}, dropped={row}, reason="quot")
    return build


def _quote_junk(kind: str, row: int) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        ln = lines[row + 1].decode()
        if kind == "junk-after-quote":  # "…"x, : a quoted cell followed by text
            i = ln.index('"', ln.index('"') + 1)
            ln = ln[:i + 1] + "x" + ln[i + 1:]
            reason = "malformed CSV quoting"
        elif kind == "stray-quote-in-cell":  # 1"2 in an unquoted number cell
            ln = ln.replace(",", ',1"', 1)
            reason = "Patient_index"
        elif kind == "quotes-around-everything":  # valid CSV
            cells = next(csv.reader([ln]))
            ln = ",".join('"' + c.replace('"', '""') + '"' for c in cells)
            return Variant([lines[0], *lines[1:row + 1], ln.encode(), *lines[row + 2:]])
        else:
            raise AssertionError(kind)
        lines[row + 1] = ln.encode()
        return Variant(lines, bad={row + 2}, dropped={row}, reason=reason)
    return build


# -- structure: columns, header, blank lines ------------------------------------------------------------------
def _structure(kind: str) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        if kind.startswith("header-without-"):
            col = kind[len("header-without-"):]
            k = header.index(col)
            h2 = header[:k] + header[k + 1:]
            new = [_line(h2)] + [_line(r[:k] + r[k + 1:]) for r in rows]
            return Variant(new, file_error=f"missing column\\(s\\) {col}")
        if kind == "extra-column-everywhere":
            return Variant([_line(header + ["Note"])] + [_line(r + ["n"]) for r in rows])
        if kind == "reordered-columns":
            order = list(reversed(range(len(header))))
            return Variant([_line([header[i] for i in order])] + [_line([r[i] for i in order]) for r in rows])
        if kind == "row-missing-a-cell":
            lines[5] = _line(rows[4][:-1])
            return Variant(lines, bad={6}, dropped={4}, reason="expected 18 cells, got 17")
        if kind == "row-with-an-extra-cell":
            lines[5] = _line(rows[4] + ["extra"])
            return Variant(lines, bad={6}, dropped={4}, reason="expected 18 cells, got 19")
        if kind == "second-header-line":
            new = lines[:10] + [lines[0]] + lines[10:]
            return _Shifted(new, {11}, {i + 2 if i + 2 <= 10 else i + 3 for i in range(len(rows))})
        if kind == "blank-and-space-lines":
            new = lines[:3] + [b"", b"   ", b"\t"] + lines[3:]
            return _Shifted(new, set(), {i + 2 if i + 2 <= 3 else i + 5 for i in range(len(rows))})
        if kind == "all-empty-cells-row":
            new = lines[:3] + [b"," * 17] + lines[3:]
            return _Shifted(new, set(), {i + 2 if i + 2 <= 3 else i + 3 for i in range(len(rows))})
        if kind == "header-with-spaces":
            return Variant([b", ".join(h.encode() for h in header)] + lines[1:])
        if kind == "leading-blank-lines":
            return _Shifted([b"", b""] + lines, set(), {i + 4 for i in range(len(rows))})
        raise AssertionError(kind)
    return build


# -- truncated, empty and oversized files ---------------------------------------------------------------------
def _truncated(frac: float) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        data = b"\n".join(lines) + b"\n"
        cut = int(len(data) * frac)
        kept = data[:cut]
        if b"\n" not in kept:
            return Variant(lines, raw=kept, file_error="not a DL_info.csv file|empty file")
        whole = kept.count(b"\n")  # complete lines kept (header included)
        partial = not kept.endswith(b"\n")
        n_rows = whole - 1  # complete data rows
        dropped = set(range(n_rows, len(rows)))
        v = Variant(lines, raw=kept, dropped=dropped)
        if partial and kept.rsplit(b"\n", 1)[1].strip():
            v.bad = {whole + 1}
            v.maybe_bad = True  # type: ignore[attr-defined]  # a cut row may still parse (a shorter number)
        return v
    return build


def _oversized(kind: str) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        big = b"7" * (2 * MAX_LINE_BYTES)
        if kind == "huge-line-in-middle":
            new = lines[:8] + [big] + lines[8:]
            return _Shifted(new, {9}, {i + 2 if i + 2 <= 8 else i + 3 for i in range(len(rows))})
        if kind == "huge-last-line-without-newline":
            v = Variant(lines + [big], bad={len(lines) + 1}, tail=b"")
            return v
        if kind == "huge-header":
            return Variant([big] + lines[1:], file_error="longer than")
        if kind == "file-repeated-three-times":  # every row three times: exact duplicates, counted
            new = lines + lines[1:] + lines[1:]
            v = _Shifted(new, set(), {i + 2 for i in range(len(rows))})
            v.twice = list(range(len(rows))) * 2
            return v
        raise AssertionError(kind)
    return build


def _empty(kind: str) -> Build:
    def build(header, rows):
        if kind == "empty-file":
            return Variant([], raw=b"", file_error="empty file")
        if kind == "only-header":
            return Variant([_line(header)], dropped=set(range(len(rows))))
        if kind == "only-blank-lines":
            return Variant([], raw=b"\n\n \n", file_error="empty file")
        raise AssertionError(kind)
    return build


# -- duplicates ---------------------------------------------------------------------------------------------
def _duplicate(col: str | None, value=None) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        dup = list(rows[3])
        if col is not None:
            d = dict(zip(header, dup, strict=True))
            dup[header.index(col)] = value(d) if callable(value) else value
        new = lines[:12] + [_line(dup)] + lines[12:]
        if col is None:  # exact duplicate: read twice, the writer counts it
            v = _Shifted(new, set(), {i + 2 if i + 2 <= 12 else i + 3 for i in range(len(rows))})
            v.twice = [3]
            return v
        v = _Shifted(new, {13}, {i + 2 if i + 2 <= 12 else i + 3 for i in range(len(rows))})
        v.reason = f"conflicting duplicate of line 5: same File_name and Measurement_coordinates, different {col}"
        return v
    return build


DL_VARIANTS: dict[str, Build] = {}
for _col, _val, _why in DL_VALUES:
    for _row in (0, 13):
        DL_VARIANTS[f"value-{_col}-{_why[:24]}-{_val if isinstance(_val, str) else 'fn'}-row{_row}"] = \
            _value_variant(_col, _val, _why, _row)
for _name, _seq in BAD_BYTES.items():
    for _where, _row in (("start", 0), ("middle", 9), ("end", N_ROWS - 1)):
        DL_VARIANTS[f"bytes-{_name}-{_where}"] = _bytes_in_line(_seq, _row, _where)
DL_VARIANTS["bytes-nul-middle"] = _bytes_in_line(b"\x00", 7, "middle")
DL_VARIANTS["bytes-nul-start"] = _bytes_in_line(b"\x00", 20, "start")
for _k in ("utf-16", "utf-16-be", "utf-32", "utf-8-bom", "crlf", "cr", "no-final-newline"):
    DL_VARIANTS[f"encoding-{_k}"] = _whole_file(_k)
for _k in ("png-as-csv", "nul-file", "blob-appended", "blob-in-middle"):
    DL_VARIANTS[f"binary-{_k}"] = _binary(_k)
for _c in ("Measurement_coordinates", "Bounding_boxes", "Spacing_mm_px_", "Train_Val_Test", "File_name"):
    DL_VARIANTS[f"quote-unclosed-{_c}-row10"] = _unclosed_quote(10, _c)
DL_VARIANTS["quote-unclosed-last-row"] = _unclosed_quote(N_ROWS - 1, "Slice_range")
DL_VARIANTS["quote-unclosed-first-row"] = _unclosed_quote(0, "Image_size")
for _k in ("junk-after-quote", "stray-quote-in-cell", "quotes-around-everything"):
    DL_VARIANTS[f"quote-{_k}"] = _quote_junk(_k, 6)
for _k in ("header-without-File_name", "header-without-Spacing_mm_px_", "header-without-Train_Val_Test",
           "extra-column-everywhere", "reordered-columns", "row-missing-a-cell", "row-with-an-extra-cell",
           "second-header-line", "blank-and-space-lines", "all-empty-cells-row", "header-with-spaces",
           "leading-blank-lines"):
    DL_VARIANTS[f"structure-{_k}"] = _structure(_k)
for _f in (0.002, 0.1, 0.35, 0.5, 0.77, 0.999):
    DL_VARIANTS[f"truncated-at-{_f:g}"] = _truncated(_f)
for _k in ("empty-file", "only-header", "only-blank-lines"):
    DL_VARIANTS[f"empty-{_k}"] = _empty(_k)
for _k in ("huge-line-in-middle", "huge-last-line-without-newline", "huge-header", "file-repeated-three-times"):
    DL_VARIANTS[f"oversized-{_k}"] = _oversized(_k)
DL_VARIANTS["duplicate-exact"] = _duplicate(None)
DL_VARIANTS["duplicate-conflicting-type"] = _duplicate("Coarse_lesion_type", lambda r: "8" if r["Coarse_lesion_type"] != "8" else "7")
DL_VARIANTS["duplicate-conflicting-age"] = _duplicate("Patient_age", lambda r: "99")
DL_VARIANTS["duplicate-conflicting-split"] = _duplicate("Train_Val_Test", lambda r: "1" if r["Train_Val_Test"] != "1" else "2")
DL_VARIANTS["duplicate-conflicting-noisy"] = _duplicate("Possibly_noisy", lambda r: "1" if r["Possibly_noisy"] == "0" else "0")
DL_VARIANTS["duplicate-conflicting-windows"] = _duplicate("DICOM_windows", "-1000, 1000")


@pytest.fixture(scope="module")
def dl_base(dl_info):
    with open(dl_info, newline="", encoding="utf-8-sig") as fh:
        r = csv.reader(fh)
        header = next(r)
        rows = [next(r) for _ in range(N_ROWS)]
    assert header == COLUMNS
    return header, rows


@pytest.fixture(scope="module")
def dl_clean(dl_base, tmp_path_factory):
    """The clean read: base row i → its record."""
    header, rows = dl_base
    p = tmp_path_factory.mktemp("clean") / "DL_info.csv"
    p.write_bytes(b"\n".join(_base(header, rows)) + b"\n")
    out = list(read_dl_info(p, IDS))
    assert not [o for o in out if isinstance(o, RowError)] and len(out) == N_ROWS
    return out


def _expected_rows(v: Variant, n: int) -> list[int]:
    rows = [i for i in range(n) if i not in v.dropped]
    return sorted(rows + list(v.twice))


def check_read(items_or_error, v: Variant, path, clean, line_of_row=None):
    """The contract of every variant (see the module doc)."""
    if v.file_error:
        assert isinstance(items_or_error, InputError), f"expected the file to be refused, got {items_or_error!r}"
        assert re.search(v.file_error, str(items_or_error)) and str(path) in str(items_or_error)
        return
    assert not isinstance(items_or_error, Exception), items_or_error
    items = items_or_error
    errors = [i for i in items if isinstance(i, RowError)]
    good = [i for i in items if not isinstance(i, RowError)]
    for e in errors:
        assert e.source == str(path) and f"{path}:{e.line}:" in str(e), e
    got_lines = {e.line for e in errors}
    if getattr(v, "maybe_bad", False):  # a cut last row may still be a valid (shorter) row
        assert got_lines <= v.bad
        extra = len(good) - len(_expected_rows(v, len(clean)))
        assert extra in (0, 1) and (extra == 1) == (not got_lines)
        good = good[:len(good) - extra]
    else:
        assert got_lines == v.bad, [str(e) for e in errors]
        assert len(errors) == len(v.bad), [str(e) for e in errors]
    if v.reason:
        for e in errors:
            assert v.reason in e.reason, (v.reason, str(e))
    want = [clean[i] for i in _expected_rows(v, len(clean))]
    key = (lambda a: a.lesion.lesion_id) if hasattr(want[0] if want else None, "lesion") else (lambda a: a.annotation_id)
    assert sorted(map(key, good)) == sorted(map(key, want))
    by_key = {key(w): w for w in want}
    for g in good:  # exactly the clean values: nothing a clean run would not write
        w = by_key[key(g)]
        if hasattr(g, "to_row"):
            assert g.to_row() == w.to_row()
        else:
            assert _row_values(g) == _row_values(w)


def _row_values(r):
    return {k: v for k, v in vars(r).items() if k != "line"}


def _read_or_error(fn):
    try:
        return list(fn())
    except InputError as exc:
        return exc


@pytest.mark.parametrize("name", sorted(DL_VARIANTS))
def test_dl_info_variant(name, dl_base, dl_clean, tmp_path):
    header, rows = dl_base
    v = DL_VARIANTS[name](header, rows)
    path = tmp_path / "DL_info.csv"
    path.write_bytes(v.data())
    check_read(_read_or_error(lambda: read_dl_info(path, IDS)), v, path, dl_clean)


# -- cohort annotations.csv ----------------------------------------------------------------------------------
UIDS = [f"1.2.826.0.1.3680043.10.{k}" for k in range(40)]


def _cohort_rows() -> list[list[str]]:
    out = []
    for k in range(20):
        p = k // 4  # 4 rows a patient, 2 a study (and series)
        st, se = UIDS[2 * (k // 2)], UIDS[2 * (k // 2) + 1]
        r = ann_row(f"A{k:02d}", f"SYN{p:04d}", st, se, f"2020-0{1 + (k // 2) % 9}-0{1 + p}", 3 + k % 4,
                    20 + k, 30 + k % 7, 3 + k % 3, type_code=1 + k % 8)
        out.append([str(r[c]) for c in ANN_COLUMNS])
    return out


COHORT_VALUES: list[tuple[str, object, str]] = [
    ("annotation_id", "", "annotation_id is empty"),
    ("patient_id", "", "patient_id is empty"),
    ("patient_id", "../etc", "cannot name a folder"),
    ("study_uid", "1.2.3 4", "is not a UID"),
    ("series_uid", "x" * 70, "is not a UID"),
    ("study_date", "2020-13-45", "not a valid date"),
    ("study_date", "yesterday", "is not a date"),
    ("key_slice_index", "-1", "negative"),
    ("key_slice_index", "2.5", "not an integer"),
    ("recist_x1", "nan", "not finite"),
    ("recist_x1", "-5", "negative pixel coordinate"),
    ("recist_y3", "abc", "not a number"),
    ("bbox_x1", "-1", "negative pixel coordinate"),
    ("bbox_x2", "1", "x2 ≤ x1"),
    ("bbox_y2", lambda r: str(float(r["bbox_y1"]) + 0.5), "does not contain the RECIST points"),
    ("long_diameter_px", "0", "must be positive"),
    ("long_diameter_px", "300", "disagree with the RECIST axes"),
    ("type_code", "12", "unknown code"),
    ("spacing_x_mm", "1e-300", "outside the plausible"),
    ("spacing_y_mm", "1e300", "outside the plausible"),
    ("slice_interval_mm", "1e300", "slice interval"),
    ("slice_interval_mm", "0", "must be positive"),
    ("slice_interval_mm", "inf", "not finite"),
    ("location_x", "7", "outside [0, 1]"),
    ("location_z", "", "location_z"),
    ("patient_sex", "U", "not M or F"),
    ("patient_age", "131", "out of range"),
]


_cohort_value = _value_variant  # a cohort CSV's bad cell is built the same way as DL_info's


def _cohort_consistency(kind: str) -> Build:
    def build(header, rows):
        lines = _base(header, rows)
        dup = list(rows[2])
        if kind == "annotation-id-repeated":
            dup[header.index("key_slice_index")] = "9"
            reason = "repeats line 4"
        elif kind == "study-with-another-patient":
            dup[header.index("annotation_id")] = "B1"
            dup[header.index("key_slice_index")] = "9"
            dup[header.index("patient_id")] = "SYN9999"
            reason = "patient_id differs"
        elif kind == "study-with-another-date":
            dup[header.index("annotation_id")] = "B1"
            dup[header.index("key_slice_index")] = "9"
            dup[header.index("study_date")] = "2021-01-01"
            reason = "study_date differs"
        elif kind == "same-lesion-other-type":
            dup[header.index("annotation_id")] = "B1"
            dup[header.index("type_code")] = "8" if dup[header.index("type_code")] != "8" else "7"
            reason = "conflicting duplicate of line 4"
        elif kind == "same-lesion-same-values":  # another annotation of the same lesion: read, counted once
            dup[header.index("annotation_id")] = "B1"
            new = lines[:8] + [_line(dup)] + lines[8:]
            v = _Shifted(new, set(), {i + 2 if i + 2 <= 8 else i + 3 for i in range(len(rows))})
            v.extra_row = dup  # type: ignore[attr-defined]
            return v
        else:
            raise AssertionError(kind)
        new = lines[:8] + [_line(dup)] + lines[8:]
        v = _Shifted(new, {9}, {i + 2 if i + 2 <= 8 else i + 3 for i in range(len(rows))})
        v.reason = reason
        return v
    return build


def _cohort_structure(kind: str) -> Build:
    def build(header, rows):
        if kind.startswith("header-without-"):
            col = kind[len("header-without-"):]
            k = header.index(col)
            return Variant([_line(header[:k] + header[k + 1:])] + [_line(r[:k] + r[k + 1:]) for r in rows],
                           file_error=f"missing column\\(s\\) {col}")
        if kind == "semicolon-separated":
            return Variant([";".join(header).encode()] + [";".join(r).encode() for r in rows],
                           file_error="missing column")
        raise AssertionError(kind)
    return build


COHORT_VARIANTS: dict[str, Build] = {}
for _col, _val, _why in COHORT_VALUES:
    for _row in (1, 19):
        COHORT_VARIANTS[f"value-{_col}-{_why[:20]}-row{_row}"] = _cohort_value(_col, _val, _why, _row)
for _name, _seq in BAD_BYTES.items():
    COHORT_VARIANTS[f"bytes-{_name}-middle"] = _bytes_in_line(_seq, 5, "middle")
COHORT_VARIANTS["bytes-nul"] = _bytes_in_line(b"\x00", 11, "start")
for _k in ("utf-16", "utf-8-bom", "crlf", "cr", "no-final-newline"):
    COHORT_VARIANTS[f"encoding-{_k}"] = _whole_file(_k)
for _c in ("patient_id", "recist_x1", "patient_age"):
    COHORT_VARIANTS[f"quote-unclosed-{_c}"] = _unclosed_quote(7, _c)
for _k in ("annotation-id-repeated", "study-with-another-patient", "study-with-another-date",
           "same-lesion-other-type", "same-lesion-same-values"):
    COHORT_VARIANTS[f"consistency-{_k}"] = _cohort_consistency(_k)
for _k in ("header-without-patient_id", "header-without-bbox_y2", "header-without-slice_interval_mm",
           "semicolon-separated"):
    COHORT_VARIANTS[f"structure-{_k}"] = _cohort_structure(_k)
for _f in (0.1, 0.5, 0.93):
    COHORT_VARIANTS[f"truncated-at-{_f:g}"] = _truncated(_f)
COHORT_VARIANTS["empty-file"] = _empty("empty-file")


@pytest.fixture(scope="module")
def cohort_clean(tmp_path_factory):
    rows = _cohort_rows()
    p = tmp_path_factory.mktemp("cclean") / "annotations.csv"
    p.write_bytes(b"\n".join(_base(ANN_COLUMNS, rows)) + b"\n")
    out = list(C.read_rows(p))
    assert all(isinstance(o, C.CohortRow) for o in out) and len(out) == len(rows)
    return rows, out


@pytest.mark.parametrize("name", sorted(COHORT_VARIANTS))
def test_cohort_annotations_variant(name, cohort_clean, tmp_path):
    rows, clean = cohort_clean
    v = COHORT_VARIANTS[name](list(ANN_COLUMNS), rows)
    if v.file_error == "not a DL_info.csv file|empty file":
        v.file_error = "empty file|not a cohort annotations.csv file"
    path = tmp_path / "annotations.csv"
    path.write_bytes(v.data())
    got = _read_or_error(lambda: C.read_rows(path))
    extra = getattr(v, "extra_row", None)
    if extra is not None:  # the same lesion annotated twice with the same values: both rows read
        assert not isinstance(got, Exception) and not [g for g in got if isinstance(g, RowError)]
        assert [g.annotation_id for g in got].count("B1") == 1 and len(got) == len(clean) + 1
        twin = next(g for g in got if g.annotation_id == "B1")
        assert twin.lesion_key() == clean[2].lesion_key()
        return
    check_read(got, v, path, clean)


# -- a file-level error names the file; no traceback for unreadable paths -------------------------------------
def test_a_folder_or_missing_path_is_an_input_error(tmp_path):
    for p in (tmp_path, tmp_path / "missing.csv"):
        with pytest.raises(InputError, match="cannot open") as err:
            list(read_dl_info(p, IDS))
        assert str(p) in str(err.value)


# -- end to end: ingest into the embedded engine ------------------------------------------------------------
E2E_DL = ["bytes-ff-middle", "quote-unclosed-Measurement_coordinates-row10", "duplicate-conflicting-type",
          "duplicate-exact", "binary-blob-in-middle", "truncated-at-0.5", "oversized-huge-line-in-middle",
          "value-Spacing_mm_px_-outside the plausible-1e300, 1e300, 5-row13",
          "value-Measurement_coordinates-beyond the-fn-row0", "encoding-crlf"]


@pytest.mark.parametrize("name", E2E_DL)
def test_dl_info_variant_end_to_end(name, engine, dl_base, dl_clean, tmp_path):
    """Through ingest into a graph: the report names every bad line, the graph holds exactly the
    good rows with their clean values, and a clean re-ingest changes nothing."""
    from lesiondb.client import Client
    from lesiondb.ingest import ingest_deeplesion

    header, rows = dl_base
    v = DL_VARIANTS[name](header, rows)
    path = tmp_path / "DL_info.csv"
    path.write_bytes(v.data())
    rep = ingest_deeplesion(engine, str(path), IDS, batch_size=7)
    want_rows = sorted(set(_expected_rows(v, N_ROWS)))
    bad_lines = {e["line"] for e in rep.rejected}
    assert bad_lines == v.bad and all(e["source"] == str(path) for e in rep.rejected)
    assert rep.written == len(want_rows) and rep.duplicates == len(v.twice)
    les = Client(engine, owns_engine=False).lesions()
    assert sorted(les.lesionId) == sorted(dl_clean[i].lesion.lesion_id for i in want_rows)
    clean_path = tmp_path / "clean.csv"
    clean_path.write_bytes(b"\n".join(_base(header, [rows[i] for i in want_rows])) + b"\n")
    again = ingest_deeplesion(engine, str(clean_path), IDS)
    assert (again.written, again.unchanged) == (0, len(want_rows))  # the same values as a clean run


def test_cohort_variant_end_to_end(engine, tmp_path):
    """A cohort with images whose annotations.csv holds a bad byte, an unclosed quote and a
    conflicting duplicate: the other annotations land, each bad line is named."""
    from lesiondb.client import Client
    from lesiondb.ingest import ingest_dicom
    from tests.ct_factory import mini_cohort

    info = mini_cohort(tmp_path / "c")
    ann = tmp_path / "c" / "annotations.csv"
    lines = ann.read_bytes().splitlines()
    n = len(lines) - 1
    lines[2] = lines[2][:10] + b"\xff" + lines[2][10:]  # line 3
    cells = lines[4].decode().split(",")
    lines[4] = (",".join(cells[:3]) + ',"' + ",".join(cells[3:])).encode()  # line 5: unclosed quote
    dup = lines[6].decode().split(",")
    dup[0] = "DUP"
    dup[ANN_COLUMNS.index("type_code")] = "8"
    lines.append(",".join(dup).encode())  # conflicts with line 7
    ann.write_bytes(b"\n".join(lines) + b"\n")
    rep = ingest_dicom(engine, tmp_path / "c", IDS, embed=False, keep_source_ids=True)
    errs = {e["line"]: e["reason"] for e in rep.rejected}
    assert set(errs) == {3, 5, n + 2}
    assert "not UTF-8" in errs[3] and "unterminated quote" in errs[5] and "line 7" in errs[n + 2]
    assert rep.written == n - 2
    assert len(Client(engine, owns_engine=False).lesions()) == n - 2
    assert len(info["rows"]) == n
