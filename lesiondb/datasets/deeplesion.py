"""Reader and validator for DeepLesion's ``DL_info.csv``.

Streams the file row by row; every cell is checked and a bad row becomes a :class:`RowError`
carrying its line number and reason, never an exception that stops the batch.
"""
from __future__ import annotations

import math
import os
import re
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
    first, last = (int(v) for v in _floats(row["Slice_range"], "Slice_range", 2))
    if first > last:
        raise ValueError(f"Slice_range: first {first} > last {last}")
    sx, sy, sz = _floats(row["Spacing_mm_px_"], "Spacing_mm_px_", 3)
    if sx <= 0 or sy <= 0 or sz <= 0:
        raise ValueError(f"Spacing_mm_px_: spacing must be positive, got {sx}, {sy}, {sz}")
    rows, cols = (int(v) for v in _floats(row["Image_size"], "Image_size", 2))
    if rows <= 0 or cols <= 0:
        raise ValueError(f"Image_size: {rows}, {cols} must be positive")
    win = _floats(row["DICOM_windows"], "DICOM_windows", 2)
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
        study=Study(sid, pid, study, patient_age_years=age,
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
    )


def read_dl_info(
    path: str | Path, ids: Pseudonymizer, keep_source_ids: bool = False, file_names: dict[str, str] | None = None
) -> Iterator[Annotated | RowError]:
    """Yield one :class:`Annotated` per valid row and one :class:`RowError` per bad row.

    Line numbers are 1-based physical lines of the file (the header is line 1). ``file_names``,
    when given, gets lesionId → ``File_name`` of every valid row, source ids kept or not (what
    the image reader needs, without reading the file a second time).
    """
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
        if file_names is not None:
            file_names[rec.lesion.lesion_id] = row["File_name"].strip()
        yield rec


def file_names(path: str | Path, ids: Pseudonymizer) -> dict[str, str]:
    """lesionId → ``File_name`` of every valid row of a DL_info.csv, pseudonymised with ``ids`` (the
    ingest's key, so the ids are the graph's): how a pseudonymised graph finds its images."""
    out: dict[str, str] = {}
    for _ in read_dl_info(path, ids, file_names=out):
        pass
    return out


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
