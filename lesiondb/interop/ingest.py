"""``lesiondb ingest sr``: DICOM SR measurement reports (TID 1500) → annotated lesions.

Each report's measurement groups (:mod:`lesiondb.interop.sr_read`) are turned into the rows
``annotations.csv`` would hold for them, in the images' own terms: the key slice is the image the
long axis is drawn on (found by its SOP Instance UID in the series the report's evidence names,
else in every series under the image folder), its index the slice's place head first; the patient,
study, date, spacing and geometry come from the images' headers, never from the report. The rows
then go through exactly what ``lesiondb ingest dicom`` does with a CSV
(:func:`lesiondb.ingest.dicom.write_rows`): position in patient mm, normalised location, the same
lesion ids (so a report of lesions ingested from a CSV gives the same lesions), then embedding.

Coordinates are read back as :mod:`lesiondb.interop.content` describes (SCOORD − 0.5); a lesion's
box is its RECIST end points widened by :data:`~lesiondb.interop.content.BBOX_PAD_PX` (as
DeepLesion's). A measurement with only a length (no short axis) is a lesion whose short axis is
empty (0 mm, both end points at the long axis' middle).

Tracking: a group's Tracking Unique Identifier is stored on its lesion (``sourceTrackingUid``: a
keyed pseudonym of it, ``2.25.…``, unless ``keep_source_ids``), and lesions of different studies
with one UID get a ``SAME_LESION {method: 'tracking-uid'}`` edge; ``lesiondb match`` keeps them in
one track (a must-link) and gives the track that UID. Two lesions of one study with one UID keep
only the first's (the other is listed in ``warnings``).

Bad input never stops the batch: a file that is no readable measurement report, a group without
a usable line, one whose image is not under the image folder or whose points fall outside it is
listed (file, group number) and skipped. Groups lesiondb marked "not yet reviewed" (pending mining
proposals) are not annotations: they are counted in ``unreviewedSkipped`` and skipped.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.progress import Progress, stage
from ..core.pseudonym import Pseudonymizer, Redactor
from ..datasets import cohort as C
from ..datasets.dicom_tree import SOURCE, DicomTree
from ..embedding.stage import EmbedOptions, embed_cohort
from ..errors import ImageError, InputError
from ..graph.engine import DEFAULT_BATCH, Engine
from ..graph.keys import claim_pseudonym_key
from ..imaging.dicom import LazySeries, SeriesInfo, read_series_lazy
from ..ingest.dicom import write_rows
from ..ingest.records import IngestReport, embed_after_ingest
from ..tracking.match import METHOD_TRACKING_UID
from .content import BBOX_PAD_PX, PX_DECIMALS, UID_RE, SRMark
from .sr_read import SRDocument, read_report

log = logging.getLogger(__name__)

#: Files never read as reports.
_SKIP_NAMES = {"DICOMDIR", "README", "README.md", "LICENSE"}


def ingest_sr(engine: Engine, sr_dir: str | os.PathLike, images: str | os.PathLike, ids: Pseudonymizer, *,
              keep_source_ids: bool = False, embed: bool = True, model: str | Path | None = None,
              embed_options: EmbedOptions = EmbedOptions(), batch_size: int = DEFAULT_BATCH,
              progress: Progress | None = None) -> IngestReport:
    """Ingest the measurement reports in ``sr_dir`` (a folder, searched recursively, or one file)
    over the CT series under ``images``; then embed the new lesions with ``model`` (default: the
    shipped encoder) unless ``embed`` is False."""
    src, root = Path(sr_dir), Path(images)
    if not src.exists():
        raise InputError("report folder not found", str(src))
    if not root.is_dir():
        raise InputError("image folder not found", str(root))
    files = _report_files(src)
    report = IngestReport(source=str(src))
    claim_pseudonym_key(engine, ids)  # refuses a key other than the graph's, before any write
    with stage(progress, "ingest sr", len(files)) as b:
        reader = _Reader(root, ids, keep_source_ids, report)
        for f in files:
            reader.read(f)
            b.update(1)
        rows = reader.rows
        write_rows(engine, root, ids, rows, report, keep_source_ids=keep_source_ids, batch_size=batch_size,
                   where=lambda r: reader.where[r.line],
                   lesion_fields=lambda r: {"source_tracking_uid": reader.uids.get(r.line)},
                   patients_only={r.patient_id for r in rows}, tree=reader.tree)
    edges = _tracking_edges(engine, sorted({ids.patient(SOURCE, r.patient_id) for r in rows}))
    if not keep_source_ids:  # report files may be named by their SOP Instance UID, as PACS exports do
        red = Redactor()
        for uid in reader.sr_uids:
            red.add(uid, ids.uid(SOURCE, uid))
        report.rejected = [{k: red(v) for k, v in e.items()} for e in report.rejected]
        reader.warnings = [red(w) for w in reader.warnings]
    report.extra.update({
        "reports": reader.n_reports, "measurementGroups": reader.n_groups,
        "unreviewedSkipped": reader.n_unreviewed, "trackingUidEdges": edges, "warnings": reader.warnings,
    })
    if embed and report.written:
        embed_after_ingest(report, model, lambda enc: embed_cohort(engine, root, enc, ids, options=embed_options,
                                                                   progress=progress))
    return report


def _report_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".") and n not in _SKIP_NAMES)
    return out


@dataclass
class _Located:
    info: SeriesInfo
    series: LazySeries
    index: int


class _Images:
    """Finds the image a report measures on: by SOP Instance UID, in the series its evidence names
    (headers only), else in every series under the folder (read once, when first needed)."""

    def __init__(self, tree: DicomTree):
        self.tree = tree
        self._series: dict[str, LazySeries | None] = {}
        self._all: dict[str, tuple[str, int]] | None = None

    def _lazy(self, series_uid: str) -> LazySeries | None:
        if series_uid not in self._series:
            folder = self.tree.folder(series_uid)
            lazy = None
            if folder is not None:
                try:
                    lazy = read_series_lazy(folder, series_uid, allow_gaps=True)
                except ImageError as exc:
                    log.warning("series under %s unusable: %s", folder, exc.reason)
            self._series[series_uid] = lazy
        return self._series[series_uid]

    def locate(self, sop_uid: str, series_hint: str | None) -> _Located | None:
        if series_hint:
            got = self._in(series_hint, sop_uid)
            if got is not None:
                return got
        if self._all is None:
            self._all = {}
            for uid in self.tree.series:
                lazy = self._lazy(uid)
                for k, s in enumerate(lazy.volume.sop_uids if lazy is not None else []):
                    if s:
                        self._all.setdefault(s, (uid, k))
        hit = self._all.get(sop_uid)
        return self._in(hit[0], sop_uid) if hit else None

    def _in(self, series_uid: str, sop_uid: str) -> _Located | None:
        lazy = self._lazy(series_uid)
        info = self.tree.series.get(series_uid)
        if lazy is None or info is None:
            return None
        try:
            k = lazy.volume.sop_uids.index(sop_uid)
        except ValueError:
            return None
        return _Located(info, lazy, k)


class _Reader:
    """Reports → annotation rows (:class:`lesiondb.datasets.cohort.CohortRow`), with where each
    row came from and its tracking UID."""

    def __init__(self, root: Path, ids: Pseudonymizer, keep_source_ids: bool, report: IngestReport):
        self.tree = DicomTree(root)
        self.images = _Images(self.tree)
        self.ids, self.keep, self.report = ids, keep_source_ids, report
        self.rows: list[C.CohortRow] = []
        self.where: dict[int, tuple[str, int]] = {}  # row line → (file, group number)
        self.uids: dict[int, str] = {}  # row line → the lesion's sourceTrackingUid
        self.warnings: list[str] = []
        self.sr_uids: set[str] = set()  # the reports' own SOP Instance UIDs (redacted from the report)
        self.n_reports = self.n_groups = self.n_unreviewed = 0
        self._uid_owner: dict[str, str] = {}  # tracking UID → PatientID (keep_source_ids: one patient per UID)
        self._uid_studies: set[tuple[str, str, str]] = set()  # (PatientID, UID, StudyInstanceUID)

    def reject(self, reason: str, f: Path, group: int | None = None) -> None:
        self.report.read += 1
        self.report.reject(reason, str(f), group, kind="report" if group is None else "measurement")
        log.warning("%s%s: %s", f, f" group {group}" if group else "", reason)

    def read(self, f: Path) -> None:
        try:
            doc = read_report(f)
        except InputError as exc:
            self.reject(exc.reason, f)
            return
        self.n_reports += 1
        self.n_groups += doc.groups
        if doc.sop_instance_uid:
            self.sr_uids.add(doc.sop_instance_uid)
        for group, why in doc.problems:
            self.reject(f"no usable measurement: {why}", f, group)
        for m in doc.marks:
            if not m.reviewed:
                self.n_unreviewed += 1
                continue
            row = self._row(doc, m)
            if isinstance(row, str):
                self.reject(row, f, m.group)
                continue
            self.rows.append(row)
            self.where[row.line] = (str(f), m.group)
            uid = self._tracking_uid(row, m, f)
            if uid:
                self.uids[row.line] = uid

    def _row(self, doc: SRDocument, m: SRMark) -> C.CohortRow | str:
        hit = self.images.locate(m.sop_instance_uid, m.series_uid)
        if hit is None:
            what = f" {m.sop_instance_uid}" if self.keep else ""
            return f"its image{what} is not among the DICOM series under the image folder"
        info, vol = hit.info, hit.series.volume
        if not info.patient_id or not info.study_uid:
            return "its image has no PatientID or StudyInstanceUID"
        n_rows, n_cols = hit.series.shape[1:]
        long = m.long_axis_px
        short = m.short_axis_px
        if short is None:  # only a length was drawn: an empty short axis at the long axis' middle
            mx, my = round((long[0] + long[2]) / 2, PX_DECIMALS), round((long[1] + long[3]) / 2, PX_DECIMALS)
            short = (mx, my, mx, my)
        pts = tuple(long) + tuple(short)
        xs, ys = pts[0::2], pts[1::2]
        if min(xs) < -0.5 or max(xs) > n_cols - 0.5 or min(ys) < -0.5 or max(ys) > n_rows - 0.5:
            return f"its points lie outside the {n_rows}×{n_cols} image"
        bbox = (round(max(0.0, min(xs) - BBOX_PAD_PX), PX_DECIMALS), round(max(0.0, min(ys) - BBOX_PAD_PX), PX_DECIMALS),
                round(min(n_cols - 1.0, max(xs) + BBOX_PAD_PX), PX_DECIMALS),
                round(min(n_rows - 1.0, max(ys) + BBOX_PAD_PX), PX_DECIMALS))
        if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
            return "its box is empty"
        interval = vol.slice_interval_mm or vol.slice_thickness_mm or 1.0
        line = len(self.rows) + 1
        return C.CohortRow(
            line=line, annotation_id=f"{doc.sop_instance_uid or doc.path.name}#{m.group}",
            patient_id=info.patient_id, study_uid=info.study_uid, series_uid=info.series_uid,
            study_date=info.study_date, key_slice_index=hit.index, recist_px=pts, bbox_px=bbox,
            long_diameter_px=round(math.dist(long[:2], long[2:]), 3),
            short_diameter_px=round(math.dist(short[:2], short[2:]), 3),
            type_code=m.type_code, spacing_xy_mm=tuple(vol.spacing_xy_mm), slice_interval_mm=float(interval),
            location=None, patient_sex=info.patient_sex, patient_age=info.patient_age_years)

    def _tracking_uid(self, row: C.CohortRow, m: SRMark, f: Path) -> str | None:
        uid = (m.tracking_uid or "").strip()
        if not uid:
            return None
        where = f"{f.name} group {m.group}"
        if not UID_RE.match(uid) or len(uid) > 64:
            self.warnings.append(f"{where}: the Tracking Unique Identifier is not a UID; the lesion is not tracked by it")
            return None
        if (row.patient_id, uid, row.study_uid) in self._uid_studies:
            self.warnings.append(f"{where}: another lesion of this study has the same Tracking Unique Identifier; "
                                 "the first keeps it")
            return None
        if self.keep and self._uid_owner.setdefault(uid, row.patient_id) != row.patient_id:
            self.warnings.append(f"{where}: the Tracking Unique Identifier is another patient's; not used")
            return None
        self._uid_studies.add((row.patient_id, uid, row.study_uid))
        return uid if self.keep else self.ids.uid(SOURCE, f"{row.patient_id}:{uid}")


def _tracking_edges(engine: Engine, patient_ids: list[str]) -> int:
    """SAME_LESION {method: 'tracking-uid'} from each lesion to every later lesion (another study)
    with its sourceTrackingUid, for these patients (lesions ingested earlier included)."""
    if not patient_ids:
        return 0
    rows = engine.run("tracking_uid_lesions", patientIds=patient_ids)
    edges = list(_pairs(rows))
    if edges:
        engine.write("write_same_lesion", edges)
    return len(edges)


def _pairs(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for r in rows:
        groups.setdefault((r["patientId"], r["sourceTrackingUid"]), []).append((int(r.get("studyIndex") or 0),
                                                                                r["lesionId"]))
    for members in groups.values():
        members.sort()
        for x, (ka, a) in enumerate(members):
            for kb, b in members[x + 1:]:
                if kb != ka:
                    yield {"src": a, "dst": b, "cost": None, "confidence": 1.0, "probability": 1.0,
                           "method": METHOD_TRACKING_UID}


__all__ = ["ingest_sr"]
