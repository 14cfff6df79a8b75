"""DICOM cohort ingest: ``annotations.csv`` + DICOM series → the same graph as DeepLesion ingest.

Each annotated series is read once (annotations are grouped per series), so a series with twenty
lesions costs one read. For every annotation the series gives the pixel spacing, the slice interval,
the lesion centre in patient LPS mm (centre of the box on the key slice, through the DICOM
geometry) and the normalised location (:mod:`lesiondb.imaging.location`). Every study found under
``dicom/`` becomes a Study node, also those without annotated lesions (their lesions are the ones
missing-annotation mining looks for).

Series are found by their DICOM headers (:class:`lesiondb.datasets.dicom_tree.DicomTree`), so any
folder layout works (PACS exports, folders reached through symbolic links), not only the cohort
contract's ``dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/``.

Bad input never stops the ingest: a bad CSV row, a bad or missing image, an annotation pointing at
a missing series or slice is reported (``IngestReport.rejected``, each entry with ``kind`` =
``row`` / ``image`` / ``annotation``) and skipped; everything else is written. Then, as for every
ingest, the lesions are embedded and linked to their nearest lesions (``embed=False`` skips it).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.progress import Bar, NullBar, Progress, stage
from ..core.pseudonym import Pseudonymizer
from ..core.records import Annotated
from ..datasets import cohort as C
from ..datasets.deeplesion import RowError
from ..datasets.dicom_tree import DicomTree, redactor
from ..embedding.stage import EmbedOptions, embed_cohort
from ..errors import ImageError, InputError
from ..graph.engine import DEFAULT_BATCH, Engine
from ..graph.keys import claim_pseudonym_key
from ..imaging.dicom import read_series
from ..imaging.location import lesion_location
from .records import IngestReport, embed_after_ingest, write_annotated

log = logging.getLogger(__name__)


def ingest_dicom(
    engine: Engine,
    root: str | os.PathLike,
    ids: Pseudonymizer,
    *,
    annotations: str | os.PathLike | None = None,
    embed: bool = True,
    model: str | Path | None = None,
    embed_options: EmbedOptions = EmbedOptions(),
    keep_source_ids: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest the cohort folder ``root`` (annotations default to ``root/annotations.csv``), then
    embed its lesions with ``model`` (default: the shipped encoder) unless ``embed`` is False.

    A cohort whose ``cohort.json`` says ``"images": false`` is ingested from the CSV alone
    (spacing and location as written, no patient-mm position) and not embedded.
    """
    with stage(progress, "ingest dicom") as b:
        report = _ingest(engine, Path(root), ids, annotations, keep_source_ids, batch_size, b)
    if embed and report.extra.get("images"):
        embed_after_ingest(report, model, lambda enc: embed_cohort(engine, root, enc, ids, options=embed_options,
                                                                   progress=progress))
    return report


def _ingest(engine: Engine, root: Path, ids: Pseudonymizer, annotations: str | os.PathLike | None,
            keep_source_ids: bool, batch_size: int, b: Bar) -> IngestReport:
    """The records: patients, studies and lesions from the annotations and the images' headers."""
    ann_path = Path(annotations) if annotations else root / C.ANNOTATIONS
    if not root.is_dir():
        raise InputError("cohort folder not found", str(root))
    if not ann_path.is_file():
        raise InputError(f"no annotations file; pass --annotations FILE or add {C.ANNOTATIONS}", str(ann_path))
    report = IngestReport(source=str(ann_path))
    claim_pseudonym_key(engine, ids)  # refuses a key other than the graph's, before any write
    rows: list[C.CohortRow] = []
    for item in C.read_rows(ann_path):
        if isinstance(item, RowError):
            report.read += 1
            report.reject(item.reason, item.source, item.line, kind="row")
            log.warning("%s", item)
        else:
            rows.append(item)
    b.set_total(len(rows) + len(report.rejected))
    b.update(len(report.rejected))
    write_rows(engine, root, ids, rows, report, keep_source_ids=keep_source_ids, batch_size=batch_size, bar=b)
    return report


def write_rows(engine: Engine, root: Path, ids: Pseudonymizer, rows: list[C.CohortRow], report: IngestReport, *,
               keep_source_ids: bool = False, batch_size: int = DEFAULT_BATCH, bar: Bar | None = None,
               where: Callable[[C.CohortRow], tuple[str, int | None]] | None = None,
               lesion_fields: Callable[[C.CohortRow], dict[str, Any]] | None = None,
               patients_only: set[str] | None = None, tree: DicomTree | None = None,
               written: list[Annotated] | None = None) -> IngestReport:
    """Annotation rows (``annotations.csv``'s, or any reader's in its terms) with the DICOM series
    under ``root`` → patients, studies and lesions in the graph; updates ``report``.

    ``where(row)`` names a row's source and line in rejections (default: the report's source and
    the row's line); ``lesion_fields(row)`` adds lesion fields; ``patients_only`` limits the
    studies written to those of these PatientIDs (default: every study found under ``root``);
    ``written`` collects the lesions written.
    """
    b = bar if bar is not None else NullBar()
    locate_row = where or (lambda r: (report.source, r.line))
    meta = C.read_cohort_meta(root)
    with_images = meta.get("images", True) is not False
    z_ranges = C.body_z_ranges(meta)
    tree = tree if tree is not None else DicomTree(root)
    series_found: dict[str, Any] = {}
    if with_images:
        series_found = {uid: s for uid, s in tree.series.items()
                        if patients_only is None or s.patient_id in patients_only}
        for folder, reason in tree.problems.items():
            report.reject(reason, folder, kind="image")

    # -- patients and studies: from the images, completed by the CSV --------------------------------
    study_info: dict[tuple[str, str], dict[str, Any]] = {}
    for s in series_found.values():
        if s.patient_id and s.study_uid:
            study_info.setdefault((s.patient_id, s.study_uid), {
                "date": s.study_date, "sex": s.patient_sex, "age": s.patient_age_years, "series": set()})
            study_info[(s.patient_id, s.study_uid)]["series"].add(s.series_uid)
    for r in rows:
        info = study_info.setdefault((r.patient_id, r.study_uid),
                                     {"date": r.study_date, "sex": None, "age": None, "series": set()})
        info["date"] = info["date"] or r.study_date
        info["sex"] = r.patient_sex or info["sex"]
        info["age"] = r.patient_age if r.patient_age is not None else info["age"]
    index = C.study_indices((p, i["date"], s) for (p, s), i in study_info.items())
    first = C.first_dates((p, i["date"]) for (p, _s), i in study_info.items())
    sex: dict[str, str | None] = {}
    for (p, _s), i in study_info.items():
        sex[p] = sex.get(p) or i["sex"]
    patients = {p: C.make_patient(ids, p, sex.get(p), keep_source_ids) for p in sex}
    studies = {(p, s): C.make_study(ids, p, s, index[(p, s)], i["date"], i["age"], first.get(p), keep_source_ids)
               for (p, s), i in study_info.items()}

    counts = {"rejectedAnnotations": 0, "seriesRead": 0}
    rejected_rows: set[int] = set()

    def reject(r: C.CohortRow, reason: str) -> None:
        report.read += 1
        counts["rejectedAnnotations"] += 1
        rejected_rows.add(r.line)
        source, line = locate_row(r)
        report.reject(reason, source, line, kind="annotation",
                      **({"annotationId": r.annotation_id} if keep_source_ids else {}))
        log.warning("%s:%s: %s", source, line, reason)
        b.update(1)

    def accepted() -> Iterator[Annotated]:
        by_series: dict[str, list[C.CohortRow]] = {}
        for r in rows:
            by_series.setdefault(r.series_uid, []).append(r)
        for series_uid, members in by_series.items():
            if not with_images:
                for r in members:
                    b.update(1)
                    yield _kept(C.to_annotated(r, ids, studies[(r.patient_id, r.study_uid)], patients[r.patient_id],
                                               keep_source_ids, **_more(r)))
                continue
            for item in _series_items(series_uid, members):
                yield _kept(item)

    def _more(r: C.CohortRow) -> dict[str, Any]:
        return lesion_fields(r) if lesion_fields is not None else {}

    def _kept(item: Annotated) -> Annotated:
        if written is not None:
            written.append(item)
        return item

    def locate(series_uid: str, series_ref: str) -> Path | None:
        """The contract folder, else the folder the headers say holds the series."""
        folder = root / series_ref
        return folder if folder.is_dir() else tree.folder(series_uid)

    def _series_items(series_uid: str, members: list[C.CohortRow]) -> Iterator[Annotated]:
        folder = locate(series_uid, members[0].series_ref)
        if folder is None:
            for r in members:
                reject(r, f"series {series_uid} not found among the DICOM series under {root}")
            return
        try:
            volume = read_series(folder, series_uid, allow_gaps=True)
        except ImageError as exc:
            report.reject(exc.reason, exc.source or str(folder), kind="image")
            for r in members:
                reject(r, f"series {series_uid} is unusable: {exc}")
            return
        counts["seriesRead"] += 1
        for path, reason in volume.skipped_files.items():
            report.reject(reason, path, kind="image")
        for k, reason in sorted(volume.bad_slices.items()):
            f = volume.files[k]
            report.reject(reason.split(": ", 1)[-1], str(f) if f else str(folder), kind="image")
        rel = _relative(folder, root)
        for r in members:
            item = _annotate(r, volume, rel)
            if isinstance(item, str):
                reject(r, item)
                continue
            b.update(1)
            yield item

    def _annotate(r: C.CohortRow, volume: Any, rel: str) -> Annotated | str:
        if volume.patient_id and volume.patient_id != r.patient_id:
            return f"series {r.series_uid} belongs to patient {volume.patient_id!r}, the row says {r.patient_id!r}"
        if volume.study_uid and volume.study_uid != r.study_uid:
            return f"series {r.series_uid} belongs to study {volume.study_uid}, the row says {r.study_uid}"
        problem = volume.slice_problem(r.key_slice_index)
        if problem:
            return f"key slice missing or unreadable in series {r.series_uid}: {problem}"
        rows_px, cols_px = volume.hu.shape[1:]
        x1, y1, x2, y2 = r.bbox_px
        if x2 > cols_px or y2 > rows_px:
            return f"box {r.bbox_px} lies outside the {rows_px}×{cols_px} image"
        col, row = r.center_px
        pos = volume.voxel_to_patient(col, row, r.key_slice_index)
        position = tuple(round(float(v), 4) for v in pos)
        loc = lesion_location(volume, r.key_slice_index, col, row, z_ranges.get(r.series_uid), pos)
        if loc is None:  # no body on the key slice: keep what the annotation says
            loc = r.location
        else:
            loc = tuple(round(v, 6) for v in loc)
        interval = volume.slice_interval_mm or r.slice_interval_mm
        sid = studies[(r.patient_id, r.study_uid)]
        in_study = sorted(study_info[(r.patient_id, r.study_uid)]["series"] | {r.series_uid})
        series_index = in_study.index(r.series_uid) + 1
        return C.to_annotated(
            r, ids, sid, patients[r.patient_id], keep_source_ids,
            spacing_mm=(round(volume.spacing_xy_mm[0], 6), round(volume.spacing_xy_mm[1], 6)),
            slice_interval_mm=round(float(interval), 6), location=loc, position_mm=position,
            image_size=(int(rows_px), int(cols_px)), slice_range=(0, volume.n_slices - 1),
            image_ref=rel if keep_source_ids else None, series_index=series_index, **_more(r),
        )

    write_annotated(engine, accepted(), report, batch_size=batch_size)

    # Studies: every one found in the images, plus those that got a lesion.
    written_studies = {(s.patient_id, s.study_uid) for s in series_found.values() if s.patient_id and s.study_uid}
    written_studies |= {(r.patient_id, r.study_uid) for r in rows} if not with_images else set()
    written_studies |= {(r.patient_id, r.study_uid) for r in rows if r.line not in rejected_rows}
    study_rows = [{"patient": patients[p].to_props(), "study": studies[(p, s)].to_props()}
                  for p, s in sorted(written_studies)]
    if study_rows:
        engine.write("upsert_studies", study_rows, batch_size=batch_size)
    n_rows = sum(1 for e in report.rejected if e.get("kind") == "row")
    n_images = sum(1 for e in report.rejected if e.get("kind") == "image")
    report.extra.update({
        "images": with_images, "seriesRead": counts["seriesRead"], "studies": len(study_rows),
        "patients": len({p for p, _ in written_studies}), "rejectedRows": n_rows, "badImages": n_images,
        "rejectedAnnotations": counts["rejectedAnnotations"],
        "locationZ": "cohort body extent" if z_ranges else "estimated from each series",
    })
    if not keep_source_ids:  # the report names patients, studies and series as the graph does
        red = redactor(ids, series_found.values(), ((r.patient_id, r.study_uid, r.series_uid, r.study_date) for r in rows))
        report.rejected = [{k: red(v) for k, v in e.items()} for e in report.rejected]
    return report


def _relative(folder: Path, root: Path) -> str:
    try:
        return folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(folder)


__all__ = ["ingest_dicom", "write_rows"]
