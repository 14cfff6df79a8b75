"""The data model: patients, studies and lesions, apart from any reader or writer.

Records are plain frozen dataclasses. ``to_props`` turns them into the camelCase property maps
stored on graph nodes; every unit is in the name (``Mm``, ``Px``, ``Hu``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: DeepLesion coarse lesion types (``Coarse_lesion_type``); -1 means not labelled.
LESION_TYPES: dict[int, str] = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}
TYPE_CODES: dict[str, int] = {v: k for k, v in LESION_TYPES.items()}
SPLITS: dict[int, str] = {1: "train", 2: "val", 3: "test"}


def type_name(code: int | None) -> str | None:
    """Name of a coarse type code, ``None`` for unlabelled (-1 or None)."""
    if code is None or code == -1:
        return None
    return LESION_TYPES[code]


@dataclass(frozen=True)
class Patient:
    patient_id: str  # pseudonymous unless the user asked to keep source ids
    sex: str | None = None  # "M" / "F" / None
    source_id: str | None = None  # only set when the user asks to keep it
    source: str = "deeplesion"

    def to_props(self) -> dict[str, Any]:
        return _drop_none({
            "patientId": self.patient_id,
            "sex": self.sex,
            "sourceId": self.source_id,
            "source": self.source,
        })


@dataclass(frozen=True)
class Study:
    study_id: str
    patient_id: str
    study_index: int  # 1-based order within the patient
    patient_age_years: int | None = None
    study_date: str | None = None  # ISO date where the source has one (DICOM); DeepLesion has none
    study_uid: str | None = None
    source_id: str | None = None
    study_day: int | None = None  # days since the patient's first study (the date itself is identifying)

    def to_props(self) -> dict[str, Any]:
        return _drop_none({
            "studyId": self.study_id,
            "studyIndex": self.study_index,
            "studyDay": self.study_day,
            "patientAgeYears": self.patient_age_years,
            "studyDate": self.study_date,
            "studyUid": self.study_uid,
            "sourceId": self.source_id,
        })


@dataclass(frozen=True)
class Lesion:
    """One annotated lesion: a RECIST bookmark on one key slice."""

    lesion_id: str
    study_id: str
    patient_id: str
    series_index: int
    key_slice_index: int
    recist_long_px: tuple[float, float, float, float]  # x1, y1, x2, y2
    recist_short_px: tuple[float, float, float, float]  # x3, y3, x4, y4
    bbox_px: tuple[float, float, float, float]  # x1, y1, x2, y2
    long_diameter_px: float
    short_diameter_px: float
    spacing_mm: tuple[float, float]  # (x, y) mm per pixel
    slice_interval_mm: float
    location: tuple[float, float, float] | None  # normalised x, y, z in [0, 1]
    type_code: int = -1
    possibly_noisy: bool = False
    slice_range: tuple[int, int] | None = None
    image_size: tuple[int, int] | None = None  # rows, cols
    window_hu: tuple[float, float] | None = None
    split: str | None = None
    source: str = "deeplesion"
    series_uid: str | None = None
    position_mm: tuple[float, float, float] | None = None  # patient coordinates (DICOM LPS) of the centre
    source_id: str | None = None  # e.g. the DeepLesion File_name, only when kept
    image_ref: str | None = None  # relative path of the key slice or series, for image readers
    annotation_id: str | None = None  # the source's annotation id (cohort annotations.csv)
    series_id: str | None = None  # pseudonym of the series (finds its images under a folder the user passes)
    source_tracking_uid: str | None = None  # the Tracking Unique Identifier a DICOM SR report gave the lesion

    @property
    def long_diameter_mm(self) -> float:
        return self.long_diameter_px * self.spacing_mm[0]

    @property
    def short_diameter_mm(self) -> float:
        return self.short_diameter_px * self.spacing_mm[0]

    @property
    def center_px(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.bbox_px
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)

    def to_props(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "lesionId": self.lesion_id,
            "source": self.source,
            "seriesIndex": self.series_index,
            "seriesUid": self.series_uid,
            "seriesId": self.series_id,
            "keySliceIndex": self.key_slice_index,
            "recistLongAxisPx": list(self.recist_long_px),
            "recistShortAxisPx": list(self.recist_short_px),
            "bboxPx": list(self.bbox_px),
            "longDiameterPx": self.long_diameter_px,
            "shortDiameterPx": self.short_diameter_px,
            "longDiameterMm": round(self.long_diameter_mm, 4),
            "shortDiameterMm": round(self.short_diameter_mm, 4),
            "spacingXMm": self.spacing_mm[0],
            "spacingYMm": self.spacing_mm[1],
            "sliceIntervalMm": self.slice_interval_mm,
            "typeCode": self.type_code,
            "typeName": type_name(self.type_code),
            "labelled": self.type_code != -1,
            "possiblyNoisy": self.possibly_noisy,
            "split": self.split,
            "sourceId": self.source_id,
            "imageRef": self.image_ref,
            "annotationId": self.annotation_id,
            "sourceTrackingUid": self.source_tracking_uid,
        }
        if self.location is not None:
            props["locationX"], props["locationY"], props["locationZ"] = self.location
        if self.slice_range is not None:
            props["sliceRangeFirst"], props["sliceRangeLast"] = self.slice_range
        if self.image_size is not None:
            props["imageRows"], props["imageCols"] = self.image_size
        if self.window_hu is not None:
            props["windowLowHu"], props["windowHighHu"] = self.window_hu
        if self.position_mm is not None:
            props["positionXMm"], props["positionYMm"], props["positionZMm"] = self.position_mm
        return _drop_none(props)


@dataclass(frozen=True)
class Annotated:
    """A lesion with its study and patient: the unit every reader yields and every writer takes."""

    patient: Patient
    study: Study
    lesion: Lesion
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """The parameter row of the ``upsert_lesions`` query, with a content hash for change detection."""
        row = {
            "patient": self.patient.to_props(),
            "study": self.study.to_props(),
            "lesion": self.lesion.to_props(),
        }
        row["lesion"]["contentHash"] = content_hash(row)
        return row


def content_hash(obj: Any) -> str:
    """A stable hash of a JSON-able object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def as_dict(record: Any) -> dict[str, Any]:
    return asdict(record)
