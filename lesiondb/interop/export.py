"""``lesiondb export sr``: one DICOM SR Measurement Report (TID 1500) per study of the graph.

The graph holds pseudonyms only; the reports need the real identities. Both come together here:
each lesion's ``seriesId`` is looked up among the series found under the image folder the user
passes (:meth:`DicomTree.by_series_id` with the graph's key), the series' headers give the key
slice's SOP Instance UID (``keySliceIndex`` is the 0-based index head first, as
:func:`lesiondb.imaging.dicom.read_series_lazy` orders the slices), and the key slices' headers
give the report its patient and study (and become its evidence). Nothing is written to the graph.

Each lesion is a measurement group (:mod:`lesiondb.interop.sr_write`) whose Tracking Unique
Identifier is its track's ``trackingUid`` (the same in every study of the patient; a lesion not
yet matched gets the UID a track of it alone would get) and whose Tracking Identifier numbers the
patient's tracks in the order they were first seen (``lesion 1``, ``lesion 2``, …). Lesions made
from accepted mining proposals are exported like annotations; pending proposals only with
``include_proposals``, marked not yet reviewed.
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from ..core.progress import Progress, stage
from ..core.pseudonym import Pseudonymizer
from ..core.results import Result
from ..datasets.dicom_tree import DicomTree
from ..errors import ImageError, InputError
from ..graph.engine import Engine
from ..graph.keys import check_pseudonym_key
from ..imaging.dicom import LazySeries, read_series_lazy
from ..mining.review import list_proposals
from ..tracking.match import tracking_uid
from .content import SRMark
from .sr_write import build_report

log = logging.getLogger(__name__)

#: Names of the files an export writes (``<studyId>.dcm``): what ``overwrite`` may replace.
REPORT_NAME = re.compile(r"^S-[0-9a-f]+\.dcm$")


@dataclass
class SRExportResult(Result):
    """What one ``lesiondb export sr`` wrote. Files are named by the study's pseudonym."""

    reports: int = 0
    patients: int = 0
    lesions: int = 0
    accepted_proposals: int = 0
    pending_proposals: int = 0
    unmatched_lesions: int = 0  # not in a track yet (`lesiondb match` not run): own tracking UID
    files: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Item:
    """One lesion (or pending proposal) to export, in the graph's terms."""

    patient_id: str
    study_id: str
    study_index: int
    series_id: str | None
    key_slice: int | None
    long_px: list[float] | None
    short_px: list[float] | None
    long_mm: float | None
    short_mm: float | None
    type_code: int
    tracking_uid: str
    response: str | None
    reviewed: bool
    what: dict[str, str]  # how a skip names it: {"lesionId": …} or {"proposalId": …}


def export_sr(engine: Engine, out_dir: str | os.PathLike, images: str | os.PathLike, ids: Pseudonymizer, *,
              patient: str | None = None, include_proposals: bool = False, overwrite: bool = False,
              progress: Progress | None = None) -> SRExportResult:
    """Write one Measurement Report per study with lesions (of ``patient``, a graph patientId, or
    of everyone) into ``out_dir``, which must be empty or absent (``overwrite``: it may hold a
    previous export's ``S-….dcm`` files, which are replaced). ``images`` is the folder the
    lesions were ingested from (any layout: series are found by their headers). Lesions whose
    images cannot be found are listed in ``skipped`` by their pseudonyms."""
    t0 = time.perf_counter()
    out, root = Path(out_dir), Path(images)
    if not root.is_dir():
        raise InputError("image folder not found", str(root))
    stale = _check_out(out, overwrite)
    check_pseudonym_key(engine, ids)
    rows = engine.run("sr_export_lesions", patientId=patient)
    pending = list_proposals(engine, status="pending", patient=patient) if include_proposals else []
    if patient is not None and not rows and not pending:
        raise InputError(f"no patient {patient!r} with lesions in the graph (list them with "
                         "`lesiondb query patients`)", patient)
    res = SRExportResult()
    items = _items(rows, pending, res)
    tree = DicomTree(root)
    by_series = tree.by_series_id(ids)
    red = tree.redactor(ids)
    series: dict[str, LazySeries | str] = {}
    headers: dict[str, Dataset] = {}
    names = _tracking_ids(items)

    def skip(item: _Item, reason: str) -> None:
        res.skipped.append({**item.what, "studyId": item.study_id, "reason": red(reason)})

    by_study: dict[str, list[_Item]] = {}
    for it in items:
        by_study.setdefault(it.study_id, []).append(it)
    out.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    with stage(progress, "export sr", len(by_study)) as b:
        for study_id, members in sorted(by_study.items()):
            marks: list[SRMark] = []
            images_of: dict[str, Dataset] = {}
            for it in members:
                got = _key_slice(it, by_series, series, headers)
                if isinstance(got, str):
                    skip(it, got)
                    continue
                ds = got
                marks.append(SRMark(
                    sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                    long_axis_px=tuple(it.long_px), short_axis_px=tuple(it.short_px) if it.short_px else None,
                    long_mm=it.long_mm, short_mm=it.short_mm, type_code=it.type_code,
                    tracking_uid=it.tracking_uid, tracking_id=names[(it.patient_id, it.tracking_uid)]
                    + ("" if it.reviewed else " (proposal, not yet reviewed)"),
                    response=it.response, reviewed=it.reviewed, time_point=it.study_index))
                images_of[str(ds.SOPInstanceUID)] = ds
            if marks:
                order = {uid: k for k, uid in enumerate(sorted({m.tracking_uid for m in marks},
                                                              key=lambda u: _number(names, members, u)))}
                marks.sort(key=lambda m: (order[m.tracking_uid], not m.reviewed))
                try:
                    sr = build_report(marks, images_of)
                except ValueError as exc:
                    for it in members:
                        skip(it, f"no report for this study: {exc}")
                else:
                    name = f"{study_id}.dcm"
                    _save(sr, out / name)
                    written.add(name)
                    res.reports += 1
                    res.lesions += sum(1 for m in marks if m.reviewed)
                    res.pending_proposals += sum(1 for m in marks if not m.reviewed)
            b.update(1)
    for f in stale:
        if f.name not in written:
            f.unlink(missing_ok=True)
    res.files = sorted(written)
    res.patients = len({it.patient_id for it in items if f"{it.study_id}.dcm" in written})
    res.seconds = time.perf_counter() - t0
    return res


def _items(rows: Iterable[dict[str, Any]], pending: Iterable[dict[str, Any]], res: SRExportResult) -> list[_Item]:
    items = []
    for r in rows:
        uid = r.get("trackingUid")
        if not uid:
            res.unmatched_lesions += 1
            uid = tracking_uid([r["lesionId"]])  # the UID a track of this lesion alone gets
        if r.get("source") == "proposal":
            res.accepted_proposals += 1
        items.append(_Item(r["patientId"], r["studyId"], int(r.get("studyIndex") or 0), r.get("seriesId"),
                           _int(r.get("keySliceIndex")), _floats(r.get("recistLongAxisPx")),
                           _floats(r.get("recistShortAxisPx")), _num(r.get("longDiameterMm")),
                           _num(r.get("shortDiameterMm")), int(_num(r.get("typeCode")) or -1), uid,
                           r.get("response"), True, {"lesionId": r["lesionId"]}))
    for p in pending:
        if not p.get("trackingUid"):
            continue
        items.append(_Item(p["patientId"], p["studyId"], int(p.get("studyIndex") or 0),
                           p.get("seriesId"), _int(p.get("sliceIndex")), _floats(p.get("recistLongAxisPx")),
                           _floats(p.get("recistShortAxisPx")), _num(p.get("longDiameterMm")),
                           _num(p.get("shortDiameterMm")), int(_num(p.get("typeCode")) or -1), p["trackingUid"],
                           None, False, {"proposalId": p["proposalId"]}))
    return items


def _tracking_ids(items: list[_Item]) -> dict[tuple[str, str], str]:
    """``lesion N`` per (patient, trackingUid): the patient's tracks numbered by the study they
    are first seen in, then by UID, so a track has the same number in every report; tracks seen
    only in pending proposals come last, so they do not renumber the others."""
    first: dict[tuple[str, str], tuple[bool, int]] = {}
    for it in items:
        key = (it.patient_id, it.tracking_uid)
        first[key] = min(first.get(key, (not it.reviewed, it.study_index)), (not it.reviewed, it.study_index))
    out: dict[tuple[str, str], str] = {}
    by_patient: dict[str, list[tuple[tuple[bool, int], str]]] = {}
    for (pid, uid), k in first.items():
        by_patient.setdefault(pid, []).append((k, uid))
    for pid, tracks in by_patient.items():
        for n, (_k, uid) in enumerate(sorted(tracks), 1):
            out[(pid, uid)] = f"lesion {n}"
    return out


def _number(names: dict[tuple[str, str], str], members: list[_Item], uid: str) -> int:
    pid = members[0].patient_id
    return int(names[(pid, uid)].split()[1])


def _key_slice(it: _Item, by_series: dict[str, Any], series: dict[str, LazySeries | str],
               headers: dict[str, Dataset]) -> Dataset | str:
    """The key slice's header, or why it cannot be had."""
    if not it.series_id:
        return "no DICOM series (not a lesion of `lesiondb ingest dicom`)"
    if it.key_slice is None or not it.long_px or len(it.long_px) != 4:
        return "no key slice or RECIST long axis"
    info = by_series.get(it.series_id)
    if info is None:
        return f"series {it.series_id} not found under the image folder"
    if it.series_id not in series:
        try:
            series[it.series_id] = read_series_lazy(info.folder, info.series_uid, allow_gaps=True)
        except ImageError as exc:
            series[it.series_id] = f"series {it.series_id} is unusable: {exc.reason}"
    lazy = series[it.series_id]
    if isinstance(lazy, str):
        return lazy
    vol = lazy.volume
    problem = vol.slice_problem(it.key_slice)
    if problem:
        return f"key slice of series {it.series_id}: {problem}"
    rows, cols = lazy.shape[1:]
    pts = list(it.long_px) + list(it.short_px or [])
    if any(not -0.5 <= x <= cols - 0.5 for x in pts[0::2]) or any(not -0.5 <= y <= rows - 0.5 for y in pts[1::2]):
        return f"RECIST points outside the {rows}×{cols} key slice"
    sop = vol.sop_uids[it.key_slice]
    if sop is None or vol.files[it.key_slice] is None:
        return f"key slice {it.key_slice} of series {it.series_id} has no SOP Instance UID"
    if sop not in headers:
        try:
            headers[sop] = pydicom.dcmread(str(vol.files[it.key_slice]), stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable header skips this lesion, not the export
            return f"key slice {it.key_slice} of series {it.series_id} unreadable ({type(exc).__name__})"
    return headers[sop]


def _check_out(out: Path, overwrite: bool) -> list[Path]:
    """Refuses an output folder that is not empty (``overwrite``: unless it holds only a previous
    export's reports, returned to be replaced)."""
    if out.exists() and not out.is_dir():
        raise InputError("the output must be a folder", str(out))
    if not out.is_dir():
        return []
    entries = list(out.iterdir())
    ours = [e for e in entries if e.is_file() and REPORT_NAME.match(e.name)]
    if len(ours) != len(entries):
        raise InputError(f"output folder is not empty ({len(entries)} entries, not all of them reports of a "
                         "previous export): choose an empty or new folder", str(out))
    if ours and not overwrite:
        raise InputError(f"output folder holds {len(ours)} reports of a previous export; pass --overwrite to "
                         "replace them, or choose an empty folder", str(out))
    return ours


def _save(sr: Dataset, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    sr.save_as(str(tmp), enforce_file_format=True)
    os.replace(tmp, path)


def _floats(v: Any) -> list[float] | None:
    if v is None:
        return None
    try:
        return [float(x) for x in v]
    except (TypeError, ValueError):
        return None


def _num(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None else None


__all__ = ["SRExportResult", "export_sr"]
