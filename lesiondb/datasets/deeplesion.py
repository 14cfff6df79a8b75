"""Reader and validator for DeepLesion's ``DL_info.csv``.

Streams the file row by row; every cell is checked and a bad row becomes a :class:`RowError`
carrying its line number and reason, never an exception that stops the batch.
"""
from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..core.pseudonym import Pseudonymizer
from ..core.records import LESION_TYPES, SPLITS, Annotated, Lesion, Patient, Study
from ..errors import ImageError, InputError
from .csvrows import RowError, iter_rows

COLUMNS = [
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index",
    "Measurement_coordinates", "Bounding_boxes", "Lesion_diameters_Pixel_",
    "Normalized_lesion_location", "Coarse_lesion_type", "Possibly_noisy", "Slice_range",
    "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender", "Patient_age",
    "Train_Val_Test",
]
SOURCE = "deeplesion"
#: The folder DeepLesion's image zips unpack into (``Images_png/PPPPPP_SS_RR/KKK.png``).
IMAGES_DIR = "Images_png"
_FILE_RE = re.compile(r"^(\d{6})_(\d{2})_(\d{2})_(\d{3})\.png$")
_REF_RE = re.compile(r"(\d{6}_\d{2}_\d{2})(?:[/_](\d+)\.png)?$")
# Normalised locations in the real file stay within [0, 1] up to rounding; allow a little slack.
_LOC_SLACK = 0.05
#: Plausibility limits (docs/security.md, "Input limits"); the real rows lie well inside them:
#: pixel spacing 0.28–0.98 mm, slice interval 0.25–5 mm, images 512², 768² and 1024².
SPACING_MM_RANGE = (0.05, 10.0)
SLICE_INTERVAL_MM_RANGE = (0.1, 50.0)
IMAGE_SIDE_RANGE = (32, 4096)
#: DeepLesion's coordinates are 1-based and sub-pixel: RECIST end points of the real rows reach up
#: to 1.65 px past the image side. Its boxes are the RECIST extent padded by 5 px (so they reach
#: 6.65 px past it) and hold every RECIST point at least 5 px inside.
COORD_SLACK_PX = 2.0
BOX_SLACK_PX = 8.0
CONTAIN_SLACK_PX = 1.0
#: Lesion_diameters_Pixel_ are the lengths of the two RECIST axes (within 0.09 % in the real rows).
DIAMETER_RTOL, DIAMETER_ATOL_PX = 0.05, 1.0


def _int(value: str, col: str) -> int:
    try:
        f = float(value)
    except ValueError:
        raise ValueError(f"{col}: {value!r} is not a number") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{col}: {value!r} is not an integer")
    return int(f)


def _floats(value: str, col: str, n: int) -> tuple[float, ...]:
    parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    if len(parts) != n:
        raise ValueError(f"{col}: expected {n} numbers, got {len(parts)} in {value!r}")
    out = []
    for p in parts:
        try:
            f = float(p)
        except ValueError:
            raise ValueError(f"{col}: {p!r} is not a number") from None
        if not math.isfinite(f):
            raise ValueError(f"{col}: {p!r} is not finite")
        out.append(f)
    return tuple(out)


def _whole(v: float, col: str) -> int:
    if v != int(v):
        raise ValueError(f"{col}: {v!r} is not an integer")
    return int(v)


def check_spacing(sx: float, sy: float, sz: float | None, col: str) -> None:
    """``ValueError`` when a spacing cannot be a CT's (limits in :data:`SPACING_MM_RANGE`,
    :data:`SLICE_INTERVAL_MM_RANGE`)."""
    lo, hi = SPACING_MM_RANGE
    if not (lo <= sx <= hi and lo <= sy <= hi):
        raise ValueError(f"{col}: pixel spacing {sx:g} × {sy:g} mm is outside the plausible {lo:g}–{hi:g} mm")
    lo, hi = SLICE_INTERVAL_MM_RANGE
    if sz is not None and not lo <= sz <= hi:
        raise ValueError(f"{col}: slice interval {sz:g} mm is outside the plausible {lo:g}–{hi:g} mm")


def check_geometry(recist: tuple[float, ...], bbox: tuple[float, ...], rows: int | None = None,
                   cols: int | None = None) -> None:
    """``ValueError`` when a RECIST point or the box is negative, lies beyond the ``rows × cols``
    image (when known), or the box does not contain the RECIST points (tolerances above)."""
    if min(recist) < 0:
        raise ValueError(f"Measurement_coordinates: negative pixel coordinate in {recist}")
    if min(bbox) < 0:
        raise ValueError(f"Bounding_boxes: negative pixel coordinate in {bbox}")
    xs, ys = recist[0::2], recist[1::2]
    if rows is not None and cols is not None:
        if max(xs) > cols + COORD_SLACK_PX or max(ys) > rows + COORD_SLACK_PX:
            raise ValueError(f"Measurement_coordinates: a point lies beyond the {rows}×{cols} image "
                             f"(x up to {max(xs):g}, y up to {max(ys):g})")
        if bbox[2] > cols + BOX_SLACK_PX or bbox[3] > rows + BOX_SLACK_PX:
            raise ValueError(f"Bounding_boxes: {bbox} reaches beyond the {rows}×{cols} image")
    t = CONTAIN_SLACK_PX
    if min(xs) < bbox[0] - t or max(xs) > bbox[2] + t or min(ys) < bbox[1] - t or max(ys) > bbox[3] + t:
        raise ValueError(f"Bounding_boxes: {bbox} does not contain the RECIST points {recist}")


def check_diameters(recist: tuple[float, ...], long_px: float, short_px: float, col: str) -> None:
    """``ValueError`` when the diameters are not the lengths of the two RECIST axes."""
    axes = (math.dist(recist[0:2], recist[2:4]), math.dist(recist[4:6], recist[6:8]))
    for given, axis in zip((long_px, short_px), axes, strict=True):
        if abs(given - axis) > max(DIAMETER_ATOL_PX, DIAMETER_RTOL * axis):
            raise ValueError(f"{col}: {long_px:g}, {short_px:g} px disagree with the RECIST axes "
                             f"({axes[0]:.2f}, {axes[1]:.2f} px)")


def lesion_key(file_name: str, coords: tuple[float, ...]) -> str:
    """Stable identity of one bookmark: its key slice and its RECIST points (one slice can hold several)."""
    return file_name + "@" + ",".join(f"{c:.2f}" for c in coords)


def parse_row(row: dict[str, str], ids: Pseudonymizer, keep_source_ids: bool = False) -> Annotated:
    """Validate one DL_info row and build its records. Raises ``ValueError`` naming the bad cell."""
    missing = [c for c in COLUMNS if row.get(c) is None]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    fname = row["File_name"].strip()
    m = _FILE_RE.match(fname)
    if not m:
        raise ValueError(f"File_name: {fname!r} is not PPPPPP_SS_RR_KKK.png")
    patient = _int(row["Patient_index"], "Patient_index")
    study = _int(row["Study_index"], "Study_index")
    series = _int(row["Series_ID"], "Series_ID")
    key = _int(row["Key_slice_index"], "Key_slice_index")
    if (patient, study, series, key) != tuple(int(g) for g in m.groups()):
        raise ValueError(f"File_name {fname!r} disagrees with Patient_index/Study_index/Series_ID/Key_slice_index")
    if min(patient, study, series) < 1 or key < 0:
        raise ValueError("Patient_index, Study_index and Series_ID must be ≥ 1 and Key_slice_index ≥ 0")
    coords = _floats(row["Measurement_coordinates"], "Measurement_coordinates", 8)
    bbox = _floats(row["Bounding_boxes"], "Bounding_boxes", 4)
    if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise ValueError(f"Bounding_boxes: x2 ≤ x1 or y2 ≤ y1 in {bbox}")
    long_px, short_px = _floats(row["Lesion_diameters_Pixel_"], "Lesion_diameters_Pixel_", 2)
    if long_px <= 0 or short_px <= 0:
        raise ValueError(f"Lesion_diameters_Pixel_: diameters must be positive, got {long_px}, {short_px}")
    loc = _floats(row["Normalized_lesion_location"], "Normalized_lesion_location", 3)
    if any(v < -_LOC_SLACK or v > 1 + _LOC_SLACK for v in loc):
        raise ValueError(f"Normalized_lesion_location: {loc} outside [0, 1]")
    type_code = _int(row["Coarse_lesion_type"], "Coarse_lesion_type")
    if type_code != -1 and type_code not in LESION_TYPES:
        raise ValueError(f"Coarse_lesion_type: unknown code {type_code} (expected -1 or 1..8)")
    noisy = _int(row["Possibly_noisy"], "Possibly_noisy")
    if noisy not in (0, 1):
        raise ValueError(f"Possibly_noisy: {noisy} is not 0 or 1")
    first, last = (_whole(v, "Slice_range") for v in _floats(row["Slice_range"], "Slice_range", 2))
    if first > last:
        raise ValueError(f"Slice_range: first {first} > last {last}")
    if first < 0:
        raise ValueError(f"Slice_range: first slice {first} is negative")
    if not first <= key <= last:
        raise ValueError(f"Key_slice_index {key} lies outside Slice_range {first}–{last}")
    sx, sy, sz = _floats(row["Spacing_mm_px_"], "Spacing_mm_px_", 3)
    if sx <= 0 or sy <= 0 or sz <= 0:
        raise ValueError(f"Spacing_mm_px_: spacing must be positive, got {sx}, {sy}, {sz}")
    check_spacing(sx, sy, sz, "Spacing_mm_px_")
    rows, cols = (_whole(v, "Image_size") for v in _floats(row["Image_size"], "Image_size", 2))
    lo_side, hi_side = IMAGE_SIDE_RANGE
    if not (lo_side <= rows <= hi_side and lo_side <= cols <= hi_side):
        raise ValueError(f"Image_size: {rows}×{cols} is not a CT slice size ({lo_side}–{hi_side} pixels a side)")
    check_geometry(coords, bbox, rows, cols)
    check_diameters(coords, long_px, short_px, "Lesion_diameters_Pixel_")
    win = _floats(row["DICOM_windows"], "DICOM_windows", 2)
    if win[0] >= win[1]:
        raise ValueError(f"DICOM_windows: low {win[0]:g} ≥ high {win[1]:g}")
    sex = row["Patient_gender"].strip().upper() or None
    if sex not in (None, "M", "F"):
        raise ValueError(f"Patient_gender: {row['Patient_gender']!r} is not M or F")
    age_s = row["Patient_age"].strip()
    age = None if age_s.lower() in ("", "nan") else _int(age_s, "Patient_age")
    if age is not None and not 0 <= age <= 130:
        raise ValueError(f"Patient_age: {age} out of range")
    split_code = _int(row["Train_Val_Test"], "Train_Val_Test")
    if split_code not in SPLITS:
        raise ValueError(f"Train_Val_Test: {split_code} is not 1, 2 or 3")

    pid = ids.patient(SOURCE, str(patient))
    sid = ids.study(SOURCE, str(patient), str(study))
    lid = ids.lesion(SOURCE, lesion_key(fname, coords))
    ref = series_ref(patient, study, series)
    return Annotated(
        patient=Patient(pid, sex=sex, source_id=str(patient) if keep_source_ids else None, source=SOURCE),
        study=Study(sid, pid, study, patient_age_years=None if age is None else min(age, 90),
                    source_id=f"{patient:06d}_{study:02d}" if keep_source_ids else None),
        lesion=Lesion(
            lesion_id=lid, study_id=sid, patient_id=pid, series_index=series, key_slice_index=key,
            series_id=series_id(ids, ref),
            recist_long_px=coords[:4], recist_short_px=coords[4:], bbox_px=bbox,  # type: ignore[arg-type]
            long_diameter_px=long_px, short_diameter_px=short_px, spacing_mm=(sx, sy),
            slice_interval_mm=sz, location=loc, type_code=type_code,  # type: ignore[arg-type]
            possibly_noisy=bool(noisy), slice_range=(first, last), image_size=(rows, cols),
            window_hu=win, split=SPLITS[split_code], source=SOURCE,  # type: ignore[arg-type]
            source_id=fname if keep_source_ids else None,
            # The image path reveals the patient index: kept only with the source ids.
            image_ref=f"{ref}/{slice_file(key)}" if keep_source_ids else None,
        ),
        extra={"fileName": fname},
    )


def read_dl_info(path: str | Path, ids: Pseudonymizer, keep_source_ids: bool = False) -> Iterator[Annotated | RowError]:
    """Yield one :class:`Annotated` per valid row and one :class:`RowError` per bad row.

    A row repeating an earlier row's File_name and Measurement_coordinates is yielded again when
    its values are the same (an exact duplicate: the writer counts it) and is a :class:`RowError`
    naming both lines when they differ. Line numbers are 1-based physical lines of the file (the
    header is line 1). Each record's ``extra["fileName"]`` is its ``File_name`` (source ids kept
    or not: it is never written to the graph unless kept).
    """
    seen: dict[str, tuple[int, str, bytes]] = {}  # lesionId → (line, content hash, cell checksums)
    for item in iter_rows(path, COLUMNS, "DL_info.csv"):
        if isinstance(item, RowError):
            yield item
            continue
        line, row = item
        try:
            rec = parse_row(row, ids, keep_source_ids)
        except ValueError as exc:
            yield RowError(line, str(exc), str(path))
            continue
        lid = rec.lesion.lesion_id
        digest = rec.to_row()["lesion"]["contentHash"]
        cells = _cell_sums(row)
        first = seen.get(lid)
        if first is not None and first[1] != digest:
            # same key slice and RECIST points, other values: which row is right is unknown
            differ = [c for k, c in enumerate(COLUMNS) if cells[4 * k:4 * k + 4] != first[2][4 * k:4 * k + 4]]
            yield RowError(line, f"conflicting duplicate of line {first[0]}: same File_name and "
                                 f"Measurement_coordinates, different {', '.join(differ) or 'values'}; "
                                 f"line {first[0]} is kept, line {line} is rejected", str(path))
            continue
        if first is None:
            seen[lid] = (line, digest, cells)
        yield rec


def file_names(path: str | Path, ids: Pseudonymizer) -> dict[str, str]:
    """lesionId → ``File_name`` of every valid row of a DL_info.csv, pseudonymised with ``ids`` (the
    ingest's key, so the ids are the graph's): how a pseudonymised graph finds its images."""
    return {a.lesion.lesion_id: a.extra["fileName"] for a in read_dl_info(path, ids) if isinstance(a, Annotated)}


# -- DeepLesion's naming rule: the one place it is written -------------------------------------------
def series_ref(patient: int, study: int, series: int) -> str:
    """The series folder name ``PPPPPP_SS_RR`` (patient, study and series indices)."""
    return f"{patient:06d}_{study:02d}_{series:02d}"


def series_id(ids: Pseudonymizer, ref: str) -> str:
    """The ``seriesId`` pseudonym of a series folder ``PPPPPP_SS_RR`` (what the graph stores)."""
    return ids.series(SOURCE, str(int(ref[:6])), ref)


def series_ids(images_root: str | Path, ids: Pseudonymizer) -> dict[str, str]:
    """``seriesId`` pseudonym → series folder name, for every ``PPPPPP_SS_RR`` folder in
    ``images_root`` (or its ``Images_png``): how a pseudonymised graph finds its images."""
    out: dict[str, str] = {}
    root = Path(images_root)
    for base in (root, root / IMAGES_DIR):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            if series_ref_of(name) == name:
                out[series_id(ids, name)] = name
    return out


def slice_file(slice_number: int) -> str:
    """A slice's file name in its series folder: ``KKK.png`` (1-based, three digits)."""
    return f"{slice_number:03d}.png"


def _cell_sums(row: dict[str, str]) -> bytes:
    """A 4-byte checksum of each (stripped) cell: enough to name the columns two rows differ in."""
    return b"".join(zlib.crc32(row[c].strip().encode()).to_bytes(4, "little") for c in COLUMNS)


def parse_file_name(file_name: str) -> tuple[int, int, int, int]:
    """``000001_02_01_014.png`` (DL_info's File_name) → (patient, study, series, key slice)."""
    m = _FILE_RE.match(file_name)
    if not m:
        raise InputError(f"{file_name!r} is not a DeepLesion file name PPPPPP_SS_RR_KKK.png")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def split_file_name(file_name: str) -> tuple[str, int]:
    """A File_name → (series folder ``PPPPPP_SS_RR``, key slice number)."""
    p, s, r, k = parse_file_name(file_name)
    return series_ref(p, s, r), k


def series_ref_of(value: str | None) -> str | None:
    """``PPPPPP_SS_RR`` from an image reference (``PPPPPP_SS_RR/KKK.png`` or a folder path) or a
    File_name; None when ``value`` names no DeepLesion series."""
    if not value:
        return None
    m = _REF_RE.search(str(value).replace("\\", "/").rstrip("/"))
    return m.group(1) if m else None


def series_folder(images_root: str | Path, ref: str) -> Path:
    """The folder of a series: ``images_root/ref`` or ``images_root/Images_png/ref``."""
    root = Path(images_root)
    for cand in (root / ref, root / IMAGES_DIR / ref):
        if cand.is_dir():
            return cand
    raise ImageError(f"series folder {ref!r} not found (looked in {root} and {root / IMAGES_DIR})", str(root))


def slice_path(images_root: str | Path, ref: str, slice_number: int) -> Path:
    """``…/PPPPPP_SS_RR/KKK.png`` of one slice."""
    return series_folder(images_root, ref) / slice_file(slice_number)


def key_slice_path(images_root: str | Path, file_name: str) -> Path:
    """The PNG of a DL_info ``File_name`` such as ``000062_01_01_078.png``."""
    ref, key = split_file_name(file_name)
    return slice_path(images_root, ref, key)
