"""Reading the lesions of a TID 1500 Measurement Report: lesiondb's own, and other tools'.

Every measurement group (``(125007, DCM, "Measurement Group")`` container, TID 1501 or TID
1410) is read for one lesion:

- its axes: a NUM named Long axis / Short axis (SCT 103339001 / 103340004, or the SRT codes
  G-A185 / G-A186 older tools write) or Length (SCT 410668003, DCM 121227 "Line segment length",
  …) with an open 2-point SCOORD POLYLINE under it (TID 300 INFERRED FROM, as lesiondb and
  OHIF/dcmjs write), or a TID 1410 group's Image Region when it is such a line. Named axes win;
  else the longest line is the long axis and a second line about perpendicular to it
  (within :data:`PERPENDICULAR_COS`) the short one. A group with only one line is a lesion
  whose short axis was not drawn;
- the image the line is drawn on (the SCOORD's SELECTED FROM image), and its series from the
  report's evidence (Current Requested Procedure / Pertinent Other Evidence);
- Tracking Identifier / Tracking Unique Identifier, the finding site (→ lesion type,
  :func:`lesiondb.interop.content.type_of_site`), the Current Response and lesiondb's review
  status.

A file that is not a DICOM SR, cannot be read whole, or holds no measurement group raises
:class:`InputError` naming the file; a group without a usable line is listed in
``SRDocument.problems`` with its number.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from .content import (
    LENGTH_NAMES,
    LONG_NAMES,
    NOT_REVIEWED,
    RESPONSE_NAME,
    REVIEW_STATUS,
    SHORT_NAMES,
    UNIT_MM,
    SRMark,
    from_scoord,
    response_of,
    type_of_site,
)

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
MEASUREMENT_GROUP = ("DCM", "125007")
IMAGE_REGION = ("DCM", "111030")
TRACKING_ID = ("DCM", "112039")
TRACKING_UID = ("DCM", "112040")
FINDING_SITE = ("SCT", "363698007")
#: A second line is a short axis when |cos| of its angle to the long one is at most this (~10°).
PERPENDICULAR_COS = 0.18
#: Larger files are not read (an SR of a few hundred lesions is well under a megabyte).
MAX_SR_BYTES = 64 * 1024 * 1024


@dataclass
class SRDocument:
    """The lesions of one report, with what it says about itself."""

    path: Path
    sop_instance_uid: str | None
    patient_id: str | None
    study_uid: str | None
    marks: list[SRMark] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (group number, why it gave no lesion)
    series_of: dict[str, str] = field(default_factory=dict)  # SOP Instance UID → Series Instance UID (evidence)
    groups: int = 0


@dataclass
class _Line:
    kind: str  # "long", "short", "length"
    px: tuple[float, float, float, float]
    sop_uid: str | None
    sop_class: str | None
    mm: float | None

    @property
    def length_px(self) -> float:
        return math.dist(self.px[:2], self.px[2:])


def read_report(path: str | os.PathLike) -> SRDocument:
    """The lesions of the report in ``path``; :class:`InputError` (naming the file) when it is no
    readable measurement report."""
    p = Path(path)
    ds = _read(p)
    if not str(ds.get("SOPClassUID", "")).startswith(SR_CLASS_PREFIX) and ds.get("Modality") != "SR":
        raise InputError(f"not a DICOM SR document (SOP class {ds.get('SOPClassUID', 'missing')}, "
                         f"modality {ds.get('Modality', 'missing')})", str(p))
    if "ContentSequence" not in ds:
        raise InputError("DICOM SR without content", str(p))
    try:
        doc = SRDocument(p, _str(ds, "SOPInstanceUID"), _str(ds, "PatientID"), _str(ds, "StudyInstanceUID"),
                         series_of=_evidence(ds))
        groups = list(_groups(ds))
        doc.groups = len(groups)
        if not groups:
            raise InputError("no measurement group: not a TID 1500 measurement report, or one without "
                             "measurements", str(p))
        for k, g in enumerate(groups, 1):
            mark = _mark(g, k, doc.series_of)
            if isinstance(mark, str):
                doc.problems.append((k, mark))
            else:
                doc.marks.append(mark)
    except InputError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError(f"malformed SR content ({type(exc).__name__}: {exc})", str(p)) from exc
    return doc


def _read(p: Path) -> Dataset:
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(p)) from exc
    if size > MAX_SR_BYTES:
        raise InputError(f"{size} bytes is too large for a measurement report (limit {MAX_SR_BYTES})", str(p))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(p))
            if len(ds) == 0:
                raise InputError("truncated DICOM file: nothing after the file meta header", str(p))
            short = _cut_short(ds)
            if short:
                raise InputError(f"truncated DICOM file: element {short} ends before its length", str(p))
            ds.walk(lambda _ds, _elem: None)  # decode every element now: a corrupt one fails here
    except InvalidDicomError as exc:
        raise InputError("not a DICOM file (no DICOM file meta header)", str(p)) from exc
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on corrupt input; all mean the same
        raise InputError(f"unreadable DICOM file, probably truncated or corrupt ({type(exc).__name__}: "
                         f"{_last_line(exc)})", str(p)) from exc
    return ds


def _cut_short(ds: Dataset) -> str | None:
    """The tag of a top-level element whose value the file ends before (pydicom reads what is
    there without complaint), else None."""
    for raw in ds._dict.values():  # still raw: dcmread converts on access
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None \
                and len(raw.value) != raw.length:
            return str(raw.tag)
    return None


def _last_line(exc: Exception) -> str:
    """pydicom's messages can carry whole tracebacks: their last line says what went wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and ln.strip() != ")"]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _str(ds: Dataset, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None:
        return None
    return str(v).strip() or None


def _evidence(ds: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    for kw in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(kw) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                uid = _str(series, "SeriesInstanceUID")
                for inst in series.get("ReferencedSOPSequence") or []:
                    sop = _str(inst, "ReferencedSOPInstanceUID")
                    if sop and uid:
                        out.setdefault(sop, uid)
    return out


def _concept(item: Dataset, kw: str = "ConceptNameCodeSequence") -> tuple[str, str, str]:
    """(scheme, value, meaning) of a code sequence's first item; empty strings when absent."""
    seq = item.get(kw)
    if not seq:
        return "", "", ""
    c = seq[0]
    value = c.get("CodeValue") or c.get("LongCodeValue") or c.get("URNCodeValue") or ""
    return str(c.get("CodingSchemeDesignator", "")).strip(), str(value).strip(), str(c.get("CodeMeaning", ""))


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _groups(ds: Dataset) -> Iterator[Dataset]:
    stack = list(reversed(_children(ds)))
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "CONTAINER" and _concept(item)[:2] == MEASUREMENT_GROUP:
            yield item
            continue
        stack.extend(reversed(_children(item)))


def _image_ref(scoord: Dataset) -> tuple[str | None, str | None]:
    """(SOP Instance UID, SOP Class UID) of the image a SCOORD is selected from."""
    for c in _children(scoord):
        if c.get("ValueType") == "IMAGE":
            refs = c.get("ReferencedSOPSequence") or []
            if refs:
                return _str(refs[0], "ReferencedSOPInstanceUID"), _str(refs[0], "ReferencedSOPClassUID")
    return None, None


def _line(scoord: Dataset) -> tuple[float, float, float, float] | str:
    """The two end points of an open 2-point POLYLINE, else why it is not a line."""
    gtype = str(scoord.get("GraphicType", ""))
    data = [float(v) for v in (scoord.get("GraphicData") or [])]
    if gtype != "POLYLINE":
        return f"a {gtype or 'SCOORD without graphic type'} region, not a line"
    if len(data) != 4:
        closed = len(data) >= 6 and data[:2] == data[-2:]
        return "a closed polygon (an area), not a line" if closed else f"a polyline of {len(data) // 2} points, not a line"
    if not all(math.isfinite(v) for v in data):
        return "a line with coordinates that are not numbers"
    return tuple(from_scoord(v) for v in data)  # type: ignore[return-value]


def _mm(num: Dataset) -> float | None:
    seq = num.get("MeasuredValueSequence")
    if not seq:
        return None
    try:
        value = float(seq[0].NumericValue)
    except (AttributeError, TypeError, ValueError):
        return None
    unit = _concept(seq[0], "MeasurementUnitsCodeSequence")[1]
    factor = UNIT_MM.get(unit)
    return value * factor if factor is not None and math.isfinite(value) else None


def _mark(group: Dataset, number: int, series_of: dict[str, str]) -> SRMark | str:
    """One lesion of a measurement group, or why the group gives none."""
    lines: list[_Line] = []
    why: list[str] = []
    tracking_id = tracking_uid = response = None
    reviewed = True
    type_code = -1
    region_mm = None  # a TID 1410 group's length: its NUM has no coordinates of its own
    items = _children(group)
    for item in items:
        vt = item.get("ValueType")
        name = _concept(item)[:2]
        if vt == "TEXT" and name == TRACKING_ID:
            tracking_id = _str(item, "TextValue")
        elif vt == "UIDREF" and name == TRACKING_UID:
            tracking_uid = _str(item, "UID")
        elif vt == "CODE" and name == (RESPONSE_NAME.scheme_designator, RESPONSE_NAME.value):
            response = response_of(*_concept(item, "ConceptCodeSequence")[:2])
        elif vt == "CODE" and name == (REVIEW_STATUS.scheme_designator, REVIEW_STATUS.value):
            reviewed = _concept(item, "ConceptCodeSequence")[:2] != (NOT_REVIEWED.scheme_designator, NOT_REVIEWED.value)
        elif vt == "SCOORD" and name == IMAGE_REGION:
            px = _line(item)
            if isinstance(px, str):
                why.append(f"image region: {px}")
            else:
                lines.append(_Line("length", px, *_image_ref(item), None))
        elif vt == "NUM":
            kind = ("long" if name in LONG_NAMES else "short" if name in SHORT_NAMES
                    else "length" if name in LENGTH_NAMES else None)
            if kind is None:
                continue
            scoords = [c for c in _children(item) if c.get("ValueType") == "SCOORD"]
            if not scoords:
                region_mm = _mm(item) if region_mm is None else region_mm
                continue
            px = _line(scoords[0])
            if isinstance(px, str):
                why.append(f"{kind}: {px}")
            else:
                lines.append(_Line(kind, px, *_image_ref(scoords[0]), _mm(item)))
    for item in items + [c for i in items if i.get("ValueType") == "NUM" for c in _children(i)]:
        if item.get("ValueType") == "CODE" and _concept(item)[:2] == FINDING_SITE and type_code == -1:
            type_code = type_of_site(*_concept(item, "ConceptCodeSequence"))
    if not lines:
        return "no length measurement with a 2-point polyline" + (f" ({'; '.join(why)})" if why else "")
    long, short = _axes(lines)
    if long.length_px <= 0:
        return "the long axis has zero length"
    if long.sop_uid is None:
        return "the measurement names no image"
    if short is not None and short.sop_uid not in (None, long.sop_uid):
        return "the long and short axes are drawn on different images"
    return SRMark(
        sop_instance_uid=long.sop_uid, long_axis_px=long.px, short_axis_px=short.px if short else None,
        sop_class_uid=long.sop_class, series_uid=series_of.get(long.sop_uid),
        long_mm=long.mm if long.mm is not None else region_mm, short_mm=short.mm if short else None,
        type_code=type_code, tracking_uid=tracking_uid, tracking_id=tracking_id, response=response,
        reviewed=reviewed, group=number)


def _axes(lines: list[_Line]) -> tuple[_Line, _Line | None]:
    longs = [ln for ln in lines if ln.kind == "long"]
    shorts = [ln for ln in lines if ln.kind == "short"]
    if longs:
        return longs[0], shorts[0] if shorts else None
    ordered = sorted(lines, key=lambda ln: -ln.length_px)
    long = ordered[0]
    for other in ordered[1:] + shorts:
        if other is not long and other.length_px > 0 and _cos(long, other) <= PERPENDICULAR_COS:
            return long, other
    return long, None


def _cos(a: _Line, b: _Line) -> float:
    ax, ay = a.px[2] - a.px[0], a.px[3] - a.px[1]
    bx, by = b.px[2] - b.px[0], b.px[3] - b.px[1]
    return abs(ax * bx + ay * by) / (math.hypot(ax, ay) * math.hypot(bx, by))


__all__ = ["SRDocument", "read_report"]
