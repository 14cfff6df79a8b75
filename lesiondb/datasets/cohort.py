"""Reader of cohort folders (synthetic cohorts and DICOM ingest): ``annotations.csv``,
``ground_truth.json`` and ``cohort.json``, per the cohort folder contract in docs/architecture.md.

Rows are validated cell by cell; a bad row becomes a :class:`~lesiondb.datasets.deeplesion.RowError`
with its line number, never an exception that stops the batch.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.pseudonym import Pseudonymizer
from ..core.records import LESION_TYPES, Annotated, Lesion, Patient, Study
from ..errors import InputError
from .csvrows import RowError, iter_rows
from .deeplesion import CONTAIN_SLACK_PX, check_diameters, check_spacing

SOURCE = "dicom"
ANNOTATIONS = "annotations.csv"
GROUND_TRUTH = "ground_truth.json"
COHORT_META = "cohort.json"
DICOM_DIR = "dicom"
COLUMNS = [
    "annotation_id", "patient_id", "study_uid", "series_uid", "study_date", "key_slice_index",
    "recist_x1", "recist_y1", "recist_x2", "recist_y2", "recist_x3", "recist_y3", "recist_x4", "recist_y4",
    "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "long_diameter_px", "short_diameter_px", "type_code",
    "spacing_x_mm", "spacing_y_mm", "slice_interval_mm", "location_x", "location_y", "location_z",
    "patient_sex", "patient_age",
]
_LOC_SLACK = 0.05
_UID_RE = re.compile(r"^[0-9A-Za-z._\-]{1,64}$")
_DATE_RE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


@dataclass(frozen=True)
class CohortRow:
    """One valid ``annotations.csv`` row, in the file's own terms (source ids, pixels)."""

    line: int
    annotation_id: str
    patient_id: str  # the DICOM PatientID (pseudonymous in synthetic cohorts)
    study_uid: str
    series_uid: str
    study_date: str | None  # ISO
    key_slice_index: int
    recist_px: tuple[float, ...]  # x1, y1, x2, y2 (long axis), x3, y3, x4, y4 (short axis)
    bbox_px: tuple[float, float, float, float]
    long_diameter_px: float
    short_diameter_px: float
    type_code: int
    spacing_xy_mm: tuple[float, float]
    slice_interval_mm: float
    location: tuple[float, float, float] | None
    patient_sex: str | None
    patient_age: int | None

    @property
    def center_px(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.bbox_px
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0

    @property
    def series_ref(self) -> str:
        """The series folder relative to the cohort root (contract layout)."""
        return f"{DICOM_DIR}/{self.patient_id}/{self.study_uid}/{self.series_uid}"

    def lesion_key(self) -> str:
        """Stable identity of the bookmark: series, key slice and RECIST points."""
        return f"{self.series_uid}@{self.key_slice_index}@" + ",".join(f"{c:.2f}" for c in self.recist_px)


def _num(value: str, col: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{col}: {value!r} is not a number") from None
    if not math.isfinite(f):
        raise ValueError(f"{col}: {value!r} is not finite")
    return f


def _int(value: str, col: str) -> int:
    f = _num(value, col)
    if f != int(f):
        raise ValueError(f"{col}: {value!r} is not an integer")
    return int(f)


def iso_date(value: str, col: str = "study_date") -> str | None:
    """``2019-03-02`` or DICOM ``20190302`` → ``2019-03-02``; empty → None."""
    s = (value or "").strip()
    if not s:
        return None
    m = _DATE_RE.match(s)
    if not m:
        raise ValueError(f"{col} is not a date (YYYY-MM-DD or YYYYMMDD)")  # the value is not echoed: a date
    y, mo, d = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        raise ValueError(f"{col} is not a valid date (month 1–12, day 1–31)")
    return f"{y:04d}-{mo:02d}-{d:02d}"


def parse_row(row: dict[str, str], line: int) -> CohortRow:
    """Validate one row. Raises ``ValueError`` naming the bad cell."""
    missing = [c for c in COLUMNS if row.get(c) is None]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    txt = {k: (v or "").strip() for k, v in row.items() if k is not None}
    for col in ("annotation_id", "patient_id", "study_uid", "series_uid"):
        if not txt[col]:
            raise ValueError(f"{col} is empty")
    for col in ("study_uid", "series_uid"):
        if not _UID_RE.match(txt[col]):
            raise ValueError(f"{col} is not a UID (1–64 characters: digits, letters, '.', '_', '-')")
    if "/" in txt["patient_id"] or txt["patient_id"] in (".", ".."):
        raise ValueError("patient_id cannot name a folder (holds '/' or is '.' or '..')")
    key = _int(txt["key_slice_index"], "key_slice_index")
    if key < 0:
        raise ValueError(f"key_slice_index: {key} is negative")
    recist = tuple(_num(txt[f"recist_{a}{i}"], f"recist_{a}{i}") for i in range(1, 5) for a in "xy")
    bbox = tuple(_num(txt[c], c) for c in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
    if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise ValueError(f"bbox: x2 ≤ x1 or y2 ≤ y1 in {bbox}")
    if min(recist + bbox) < 0:
        raise ValueError("recist/bbox: negative pixel coordinate")
    xs, ys = recist[0::2], recist[1::2]
    t = CONTAIN_SLACK_PX
    if min(xs) < bbox[0] - t or max(xs) > bbox[2] + t or min(ys) < bbox[1] - t or max(ys) > bbox[3] + t:
        raise ValueError(f"bbox {bbox} does not contain the RECIST points {recist}")
    long_px = _num(txt["long_diameter_px"], "long_diameter_px")
    short_px = _num(txt["short_diameter_px"], "short_diameter_px")
    if long_px <= 0 or short_px <= 0:
        raise ValueError(f"diameters must be positive, got {long_px}, {short_px}")
    check_diameters(recist, long_px, short_px, "long_diameter_px/short_diameter_px")
    type_code = _int(txt["type_code"], "type_code")
    if type_code != -1 and type_code not in LESION_TYPES:
        raise ValueError(f"type_code: unknown code {type_code} (expected -1 or 1..8)")
    sx, sy, sz = (_num(txt[c], c) for c in ("spacing_x_mm", "spacing_y_mm", "slice_interval_mm"))
    if sx <= 0 or sy <= 0 or sz <= 0:
        raise ValueError(f"spacing must be positive, got {sx}, {sy}, {sz}")
    check_spacing(sx, sy, sz, "spacing_x_mm/spacing_y_mm/slice_interval_mm")
    loc_cells = [txt[c] for c in ("location_x", "location_y", "location_z")]
    if all(not c for c in loc_cells):
        loc = None
    else:
        loc = tuple(_num(c, n) for c, n in zip(loc_cells, ("location_x", "location_y", "location_z"), strict=True))
        if any(v < -_LOC_SLACK or v > 1 + _LOC_SLACK for v in loc):
            raise ValueError(f"location: {loc} outside [0, 1]")
    sex = txt["patient_sex"].upper() or None
    if sex not in (None, "M", "F"):
        raise ValueError(f"patient_sex: {txt['patient_sex']!r} is not M or F")
    age = None if txt["patient_age"].lower() in ("", "nan") else _int(txt["patient_age"], "patient_age")
    if age is not None and not 0 <= age <= 130:
        raise ValueError(f"patient_age: {age} out of range")
    return CohortRow(
        line=line, annotation_id=txt["annotation_id"], patient_id=txt["patient_id"],
        study_uid=txt["study_uid"], series_uid=txt["series_uid"], study_date=iso_date(txt["study_date"]),
        key_slice_index=key, recist_px=recist, bbox_px=bbox,  # type: ignore[arg-type]
        long_diameter_px=long_px, short_diameter_px=short_px, type_code=type_code,
        spacing_xy_mm=(sx, sy), slice_interval_mm=sz, location=loc,  # type: ignore[arg-type]
        patient_sex=sex, patient_age=age,
    )


def read_rows(path: str | Path) -> Iterator[CohortRow | RowError]:
    """Yield one :class:`CohortRow` per valid row and one :class:`RowError` per bad one.

    Besides cell checks, a row is rejected when its annotation_id repeats an earlier row's, when
    its study_uid was already seen with another patient or date, or when it marks the same lesion
    (series, key slice, RECIST points) as an earlier row with other values. The same lesion with
    the same values under another annotation_id is an exact duplicate: yielded, and counted as one
    by the writer. Errors name lines, never the patient ids or dates they hold (they would end up
    in logs and ``--json`` reports). Line numbers are 1-based (header = 1).
    """
    path = Path(path)
    seen_ids: dict[str, int] = {}
    studies: dict[str, tuple[str, str | None, int]] = {}
    lesions: dict[str, CohortRow] = {}
    for item in iter_rows(path, COLUMNS, "cohort annotations.csv"):
        if isinstance(item, RowError):
            yield item
            continue
        line, cells = item
        try:
            row = parse_row(cells, line)
        except ValueError as exc:
            yield RowError(line, str(exc), str(path))
            continue
        if row.annotation_id in seen_ids:
            yield RowError(line, f"annotation_id {row.annotation_id!r} repeats line {seen_ids[row.annotation_id]}",
                           str(path))
            continue
        first = studies.get(row.study_uid)
        if first is not None and (first[0], first[1]) != (row.patient_id, row.study_date):
            what = " and ".join(n for n, a, b in (("patient_id", first[0], row.patient_id),
                                                   ("study_date", first[1], row.study_date)) if a != b)
            yield RowError(line, f"study_uid is the same as on line {first[2]} but {what} differs", str(path))
            continue
        twin = lesions.get(row.lesion_key())
        if twin is not None:
            differ = [f for f in _COMPARED if getattr(twin, f) != getattr(row, f)]
            if differ:
                yield RowError(line, f"conflicting duplicate of line {twin.line}: same series_uid, key_slice_index "
                                     f"and RECIST points, different {', '.join(differ)}; line {twin.line} is kept, "
                                     f"line {line} is rejected", str(path))
                continue
        seen_ids[row.annotation_id] = line
        studies.setdefault(row.study_uid, (row.patient_id, row.study_date, line))
        lesions.setdefault(row.lesion_key(), row)
        yield row


#: What two rows marking the same lesion must agree on (all but line and annotation_id).
_COMPARED = ("patient_id", "study_uid", "study_date", "bbox_px", "long_diameter_px", "short_diameter_px",
             "type_code", "spacing_xy_mm", "slice_interval_mm", "location", "patient_sex", "patient_age")


def study_indices(studies: Iterable[tuple[str, str | None, str]]) -> dict[tuple[str, str], int]:
    """1-based order of each patient's studies by date (then UID): ``{(patient, study_uid): index}``.

    ``studies`` holds ``(patient_id, study_date, study_uid)``; duplicates are fine.
    """
    per: dict[str, set[tuple[str, str]]] = {}
    for pid, date, uid in studies:
        per.setdefault(pid, set()).add((date or "9999-99-99", uid))
    out: dict[tuple[str, str], int] = {}
    for pid, items in per.items():
        k = 0
        for _, uid in sorted(items):
            if (pid, uid) not in out:  # a UID seen with two dates keeps its first place
                k += 1
                out[(pid, uid)] = k
    return out


def make_patient(ids: Pseudonymizer, patient_id: str, sex: str | None, keep_source_ids: bool = False) -> Patient:
    return Patient(ids.patient(SOURCE, patient_id), sex=sex,
                   source_id=patient_id if keep_source_ids else None, source=SOURCE)


def make_study(ids: Pseudonymizer, patient_id: str, study_uid: str, study_index: int,
               study_date: str | None, age: int | None, first_date: str | None = None,
               keep_source_ids: bool = False) -> Study:
    """A study's record: its date kept as days since the patient's ``first_date`` (the date and the
    UID themselves only with ``keep_source_ids``), an age over 89 kept as 90 (HIPAA Safe Harbor)."""
    return Study(ids.study(SOURCE, patient_id, study_uid), ids.patient(SOURCE, patient_id), study_index,
                 patient_age_years=None if age is None else min(int(age), 90),
                 study_date=study_date if keep_source_ids else None,
                 study_uid=study_uid if keep_source_ids else None, study_day=days_between(first_date, study_date))


def days_between(first: str | None, date: str | None) -> int | None:
    """Days from ISO date ``first`` to ``date`` (None when either is unknown)."""
    if not first or not date:
        return None
    return (_dt.date.fromisoformat(date) - _dt.date.fromisoformat(first)).days


def first_dates(studies: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Each patient's earliest study date, from ``(patient_id, iso_date)`` pairs."""
    out: dict[str, str] = {}
    for pid, date in studies:
        if date and (pid not in out or date < out[pid]):
            out[pid] = date
    return out


def to_annotated(row: CohortRow, ids: Pseudonymizer, study: Study, patient: Patient,
                 keep_source_ids: bool = False, **lesion_fields: Any) -> Annotated:
    """The records of one row; ``lesion_fields`` override what the images recompute
    (``spacing_mm``, ``slice_interval_mm``, ``location``, ``position_mm``, ``image_size``, …).
    The series UID, its folder and the annotation id are kept only with ``keep_source_ids``; the
    series is always named by its pseudonym (``seriesId``)."""
    fields: dict[str, Any] = dict(
        lesion_id=ids.lesion(SOURCE, row.lesion_key()), study_id=study.study_id, patient_id=patient.patient_id,
        series_index=1, key_slice_index=row.key_slice_index,
        recist_long_px=row.recist_px[:4], recist_short_px=row.recist_px[4:], bbox_px=row.bbox_px,
        long_diameter_px=row.long_diameter_px, short_diameter_px=row.short_diameter_px,
        spacing_mm=row.spacing_xy_mm, slice_interval_mm=row.slice_interval_mm, location=row.location,
        type_code=row.type_code, source=SOURCE, series_id=ids.series(SOURCE, row.patient_id, row.series_uid),
    )
    if keep_source_ids:
        fields.update(series_uid=row.series_uid, image_ref=row.series_ref, annotation_id=row.annotation_id)
    fields.update(lesion_fields)
    if not keep_source_ids:
        fields.update(image_ref=None)
    return Annotated(patient=patient, study=study, lesion=Lesion(**fields),
                     extra={"line": row.line, "patientSourceId": row.patient_id})


def read_annotations(path: str | Path, ids: Pseudonymizer,
                     keep_source_ids: bool = False) -> list[Annotated | RowError]:
    """Every row as :class:`Annotated` (values as written in the CSV) or :class:`RowError`.

    Study indices order each patient's studies in the file by date. DICOM ingest
    (:mod:`lesiondb.ingest.dicom`) recomputes spacing, location and position from the images.
    """
    items = list(read_rows(path))
    rows = [r for r in items if isinstance(r, CohortRow)]
    index = study_indices((r.patient_id, r.study_date, r.study_uid) for r in rows)
    # One record per patient and per study, whichever row carries sex / age.
    sex: dict[str, str | None] = {}
    age: dict[tuple[str, str], int | None] = {}
    for r in rows:
        sex[r.patient_id] = sex.get(r.patient_id) or r.patient_sex
        if age.get((r.patient_id, r.study_uid)) is None:
            age[(r.patient_id, r.study_uid)] = r.patient_age
    patients = {p: make_patient(ids, p, s, keep_source_ids) for p, s in sex.items()}
    first = first_dates((r.patient_id, r.study_date) for r in rows)
    studies = {(r.patient_id, r.study_uid): make_study(ids, r.patient_id, r.study_uid, index[(r.patient_id, r.study_uid)],
                                                       r.study_date, age[(r.patient_id, r.study_uid)],
                                                       first.get(r.patient_id), keep_source_ids) for r in rows}
    out: list[Annotated | RowError] = []
    for r in items:
        if isinstance(r, RowError):
            out.append(r)
        else:
            out.append(to_annotated(r, ids, studies[(r.patient_id, r.study_uid)], patients[r.patient_id],
                                    keep_source_ids))
    return out


# -- ground truth and cohort metadata ------------------------------------------------------------


@dataclass
class GroundTruth:
    """``ground_truth.json``: every lesion instance with its track, and which were annotated."""

    seed: int | None
    patients: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def studies(self) -> list[dict[str, Any]]:
        return [dict(s, patient_id=p["patient_id"]) for p in self.patients for s in p.get("studies", [])]

    def annotated(self) -> list[dict[str, Any]]:
        return [i for i in self.instances if i.get("annotated")]

    def withheld(self) -> list[dict[str, Any]]:
        return [i for i in self.instances if not i.get("annotated")]

    def by_annotation_id(self) -> dict[str, dict[str, Any]]:
        return {i["annotation_id"]: i for i in self.instances if i.get("annotation_id")}

    def tracks(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for i in self.instances:
            out.setdefault(i["track_id"], []).append(i)
        return out


def read_ground_truth(path: str | Path) -> GroundTruth:
    """Read and check ``ground_truth.json`` (a folder means ``folder/ground_truth.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH
    data = _read_json(path, "ground truth")
    if not isinstance(data, dict) or not isinstance(data.get("patients"), list) \
            or not isinstance(data.get("instances"), list):
        raise InputError("not a ground_truth.json: expected an object with 'patients' and 'instances' lists",
                         str(path))
    for k, p in enumerate(data["patients"]):
        if not isinstance(p, dict) or "patient_id" not in p or not isinstance(p.get("studies", []), list):
            raise InputError(f"patients[{k}]: expected an object with patient_id and studies", str(path))
    need = ("track_id", "patient_id", "study_uid", "annotated")
    for k, inst in enumerate(data["instances"]):
        if not isinstance(inst, dict) or any(n not in inst for n in need):
            raise InputError(f"instances[{k}]: missing one of {', '.join(need)}", str(path))
    return GroundTruth(seed=data.get("seed"), patients=data["patients"], instances=data["instances"], raw=data)


def read_cohort_meta(root: str | Path) -> dict[str, Any]:
    """``cohort.json`` of a cohort folder, or ``{}`` when there is none."""
    path = Path(root) / COHORT_META
    if not path.is_file():
        return {}
    data = _read_json(path, "cohort metadata")
    if not isinstance(data, dict):
        raise InputError("cohort.json must hold a JSON object", str(path))
    return data


def body_z_ranges(meta: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{SeriesInstanceUID: (z_top, z_bottom)}``: each series' body extent (patient mm) from
    cohort.json's ``series[].body_z_mm``, where the cohort records it (synthetic cohorts do)."""
    out: dict[str, tuple[float, float]] = {}
    for s in meta.get("series") or []:
        if isinstance(s, dict) and s.get("series_uid"):
            rng = _pair(s.get("body_z_mm"))
            if rng:
                out[str(s["series_uid"])] = rng
    return out


def _pair(v: Any) -> tuple[float, float] | None:
    if isinstance(v, list | tuple) and len(v) == 2:
        try:
            a, b = float(v[0]), float(v[1])
        except (TypeError, ValueError):
            return None
        if math.isfinite(a) and math.isfinite(b) and a != b:
            return max(a, b), min(a, b)
    return None


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise InputError(f"cannot open {what}: {exc.strerror}", str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc.msg})", str(path), exc.lineno) from exc
