"""Study volumes for ``lesiondb mine``: DICOM series or DeepLesion PNG slices, chosen per study.

DeepLesion (``lesiondb ingest deeplesion``) stores no patient geometry and releases only the
slices around each bookmark (``Images_png/PPPPPP_SS_RR/KKK.png``, HU = value − 32768). A
DeepLesion study is mined on the slices present in the folder of its series, in a frame built
from DL_info: x, y = pixel × ``Spacing_mm_px_`` (first values) from the image centre, z = −KKK ×
the slice interval (third value; higher slice numbers lie lower). The volume holds the present
slices only — nothing is invented for the missing ones — and each slice keeps its true z, so the
search never reaches across a gap as if it were not there, and a track whose predicted position
falls in a gap (no slice within reach of the lesion) is not proposed there.

The study's series is found from what ingest stored: the lesions' ``seriesId`` pseudonyms,
matched against the series folders under ``--images`` (pseudonymised with the graph's key), or
``imageRef`` / ``sourceId`` (with ``--keep-source-ids``), or the DL_info.csv that was ingested
(lesionId → ``File_name``, for graphs from before lesions carried a ``seriesId``). A study whose
lesions sit in several series is mined in the series holding most of its bookmarks.

DICOM studies are found by their headers (:class:`DicomVolumes`): the study's ``studyId`` is the
pseudonym of its (PatientID, StudyInstanceUID), so every study of the graph — annotated or not —
is found under the image folder however its folders are named.

:class:`StudyVolumes` is the :data:`lesiondb.mining.case.VolumeLoader` ``lesiondb mine`` uses: it
decides per study (``prepare_case``) and loads DeepLesion studies with
:func:`lesiondb.imaging.png.read_series_slab`, the others with :class:`DicomVolumes`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core import mining as M
from ..core.pseudonym import Pseudonymizer, Redactor
from ..datasets import deeplesion as DL
from ..datasets.dicom_tree import SOURCE as DICOM
from ..datasets.dicom_tree import DicomTree
from ..errors import ImageError, InputError
from ..imaging.dicom import read_series
from ..imaging.png import read_series_slab, series_slice_numbers
from .case import DEFAULT_MIN_SCORE, MiningStats, PatientCase, ProposalRecord, StudyData, grid_from_volume

FORMATS = ("auto", "dicom", "deeplesion")
#: Beyond the lesion's expected radius, how far the nearest present slice may lie from a
#: prediction for the study to count as imaged there (mm), as the z-coverage margin of mining.
GAP_MARGIN_MM = 2.0


@dataclass(frozen=True)
class SeriesFrame:
    """Where a DeepLesion study's pixels are, and the mm frame of its series."""

    ref: str  # PPPPPP_SS_RR
    spacing_x_mm: float
    spacing_y_mm: float
    slice_interval_mm: float
    rows: int | None = None
    cols: int | None = None

    def origin_xy_mm(self, rows: int, cols: int) -> tuple[float, float]:
        r, c = self.rows or rows, self.cols or cols
        return (-c / 2.0 * self.spacing_x_mm, -r / 2.0 * self.spacing_y_mm)

    def position_mm(self, slice_number: int, row: float, col: float, rows: int = 512, cols: int = 512) -> M.Vec3:
        ox, oy = self.origin_xy_mm(rows, cols)
        return (ox + col * self.spacing_x_mm, oy + row * self.spacing_y_mm, -slice_number * self.slice_interval_mm)

    def grid(self, numbers: list[int], rows: int, cols: int) -> M.Grid:
        return M.Grid(slice_z_mm=-np.asarray(numbers, float) * self.slice_interval_mm, row_mm=self.spacing_y_mm,
                      col_mm=self.spacing_x_mm, origin_xy_mm=self.origin_xy_mm(rows, cols))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


class DicomVolumes:
    """Loads a study's DICOM series from the folder tree under ``images_root``, found by headers:

    1. the study's ``studyId`` pseudonym under ``ids`` (the graph's key) — of the study's series,
       the one its lesions were annotated on (their ``seriesId``), else the largest;
    2. with ``--keep-source-ids`` graphs, the stored ``imageRef`` (relative to the root, or absolute)
       or StudyInstanceUID."""

    def __init__(self, images_root: str | Path | None = None, ids: Pseudonymizer | None = None):
        self.root = Path(images_root) if images_root is not None else None
        self.ids = ids
        self.tree = DicomTree(self.root) if self.root is not None else None
        self._by_study: dict[str, list] | None = None

    def folder(self, study: StudyData) -> tuple[Path, str | None]:
        """(series folder, SeriesInstanceUID or None) of a study; ImageError saying why not."""
        if study.image_ref:
            p = Path(study.image_ref)
            if p.is_absolute() and p.is_dir():
                return p, study.series_uid
            if self.root is not None and (self.root / p).is_dir():
                return self.root / p, study.series_uid
        if self.tree is None:
            raise ImageError("pass --images: the folder holding the studies' DICOM series (the one "
                             "given to `lesiondb ingest dicom`)", study.study_id)
        cands = []
        if self.ids is not None:
            if self._by_study is None:
                self._by_study = self.tree.by_study_id(self.ids)
            cands = self._by_study.get(study.study_id, [])
        if not cands and study.study_uid:
            cands = next((v for (_, uid), v in self.tree.studies().items() if uid == study.study_uid), [])
        if not cands:
            raise ImageError(f"no DICOM series of this study under {self.root} (is that the folder that was "
                             "ingested, and the pseudonym key the ingest's?)", study.study_id)
        if study.series_id and self.ids is not None:
            mine = [c for c in cands if self.ids.series(DICOM, c.patient_id or "", c.series_uid) == study.series_id]
            cands = mine or cands
        elif study.series_uid:
            cands = [c for c in cands if c.series_uid == study.series_uid] or cands
        return cands[0].folder, cands[0].series_uid

    def __call__(self, study: StudyData):
        folder, series_uid = self.folder(study)
        v = read_series(folder, series_uid, allow_gaps=True)
        if self.ids is not None and v.patient_id is not None:  # proposals name the series mined
            study.series_id = self.ids.series(DICOM, v.patient_id, v.series_uid)
        return v.hu, grid_from_volume(v)


class StudyVolumes:
    """The :data:`lesiondb.mining.case.VolumeLoader` of ``lesiondb mine`` (see the module doc).

    ``images``: the Images_png folder (or the folder above it) for DeepLesion studies, the folder
    holding the DICOM series for DICOM ones. ``ids``: the graph's pseudonym key (finds series by
    their ``seriesId`` / ``studyId``). ``file_names``: lesionId → File_name
    (:func:`lesiondb.datasets.deeplesion.file_names`) for DeepLesion graphs whose lesions carry no
    ``seriesId``. ``image_format``: ``auto`` decides per study from the graph (DeepLesion lesions or
    PNG references → PNG), ``deeplesion`` / ``dicom`` force one.
    """

    def __init__(self, images: str | Path | None = None, ids: Pseudonymizer | None = None,
                 file_names: dict[str, str] | None = None, image_format: str = "auto"):
        if image_format not in FORMATS:
            raise InputError(f"unknown image format {image_format!r}; use one of {', '.join(FORMATS)}",
                             "--image-format")
        self.images = Path(images) if images is not None else None
        self.ids = ids
        self.file_names = file_names or {}
        self.image_format = image_format
        self._dicom = DicomVolumes(images, ids)
        self._series_ids: dict[str, str] | None = None
        self._redactor: Redactor | None = None
        self._frames: dict[str, SeriesFrame | str] = {}  # studyId -> frame, or why there is none
        self._numbers: dict[str, list[int] | None] = {}  # studyId -> present slice numbers

    # -- deciding ------------------------------------------------------------------------------
    def _lesion_ref(self, lesion_id: str, props: dict) -> str | None:
        sid = props.get("seriesId")
        if sid and props.get("source") == DL.SOURCE and self.images is not None and self.ids is not None:
            if self._series_ids is None:
                self._series_ids = DL.series_ids(self.images, self.ids)
            if sid in self._series_ids:
                return self._series_ids[sid]
        return (DL.series_ref_of(props.get("imageRef")) or DL.series_ref_of(props.get("sourceId"))
                or DL.series_ref_of(self.file_names.get(lesion_id)))

    def _frame_of(self, case: PatientCase, study: StudyData) -> SeriesFrame | str | None:
        """The study's series frame, a reason it has none (a DeepLesion study), or None (not DeepLesion)."""
        lesions = [(o, case.lesion_props.get(o.lesion_id, {})) for o in case.lesions.get(study.study_id, [])]
        refs = Counter(r for r in (self._lesion_ref(o.lesion_id, p) for o, p in lesions) if r)
        study_ref = DL.series_ref_of(study.image_ref)
        deeplesion = (self.image_format == "deeplesion" or bool(refs) or study_ref is not None
                      or any(p.get("source") == "deeplesion" for _, p in lesions))
        if self.image_format == "dicom" or not deeplesion:
            return None
        if not refs and study_ref:
            refs[study_ref] += 1
        if not refs:
            if self.images is not None and any(p.get("seriesId") for _, p in lesions):
                return (f"its DeepLesion series is not among the series folders under {self.images} (is that "
                        "the Images_png folder, and the pseudonym key the ingest's?)")
            return ("its DeepLesion series is unknown: pass --images Images_png (and the ingest's pseudonym key), "
                    "or --dl-info DL_info.csv for graphs whose lesions carry no seriesId")
        ref = sorted(refs.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        props = [p for o, p in lesions if self._lesion_ref(o.lesion_id, p) in (ref, None)]
        def first(key):
            return next((v for v in (_num(p.get(key)) for p in props) if v is not None), None)
        sx, dz = first("spacingXMm"), first("sliceIntervalMm")
        sy = first("spacingYMm") or sx
        if sx is None or dz is None:
            return (f"series {ref}: no lesion of the study records its pixel spacing and slice interval "
                    "(Spacing_mm_px_); re-ingest its DL_info rows")
        rows, cols = first("imageRows"), first("imageCols")
        return SeriesFrame(ref, sx, sy, dz, int(rows) if rows else None, int(cols) if cols else None)

    def _folder(self, frame: SeriesFrame) -> Path:
        if self.images is None:
            raise ImageError(f"DeepLesion series {frame.ref}: pass --images pointing at the Images_png folder "
                             "(the one given to `lesiondb ingest deeplesion --images`)", frame.ref)
        return DL.series_folder(self.images, frame.ref)

    def numbers(self, study_id: str) -> list[int] | None:
        """Slice numbers present for a prepared DeepLesion study (None: unknown or not DeepLesion)."""
        if study_id not in self._numbers:
            frame = self._frames.get(study_id)
            nums = None
            if isinstance(frame, SeriesFrame):
                try:
                    nums = series_slice_numbers(self._folder(frame))
                except ImageError:
                    nums = None  # reported when the study is loaded
            self._numbers[study_id] = nums
        return self._numbers[study_id]

    def redact(self, text: str) -> str:
        """``text`` (a skip reason) with the studies' source identifiers — DICOM UIDs and patient ids,
        DeepLesion folder names — replaced by their pseudonyms, as the graph names them."""
        if self.ids is None or self.images is None:
            return text
        if self._redactor is None:
            self._redactor = self._dicom.tree.redactor(self.ids) if self._dicom.tree is not None else Redactor()
            for sid, ref in DL.series_ids(self.images, self.ids).items():
                self._redactor.add(ref, sid)
        return self._redactor(text)

    # -- hooks of lesiondb.mining.mine ------------------------------------------------------------
    def check_case(self, case: PatientCase) -> None:
        """InputError when the graph holds DeepLesion studies and no images folder was given."""
        if self.images is None and any(self._frame_of(case, s) is not None for s in case.studies):
            raise InputError(
                "the graph holds DeepLesion studies: pass --images PATH/Images_png (the folder with the "
                "PPPPPP_SS_RR/KKK.png slices)", "--images")

    def prepare_case(self, case: PatientCase, stats: MiningStats | None = None) -> PatientCase:
        """Decide each study's images; for DeepLesion studies give the lesions positions in their
        series frame and slice indices into the volume of present slices (None where absent)."""
        new: dict[str, M.Observation] = {}
        for s in case.studies:
            frame = self._frame_of(case, s)
            if frame is None:
                self._frames.pop(s.study_id, None)
                continue
            self._frames[s.study_id] = frame
            self._numbers.pop(s.study_id, None)
            if isinstance(frame, str):
                continue
            # proposals record the series mined: by its pseudonym, and by its folder only where the
            # graph keeps source references (--keep-source-ids)
            if self.ids is not None:
                s.series_id = DL.series_id(self.ids, frame.ref)
            props = [case.lesion_props.get(o.lesion_id, {}) for o in case.lesions.get(s.study_id, [])]
            if any(p.get("imageRef") or p.get("sourceId") for p in props):
                s.image_ref = frame.ref
            nums = self.numbers(s.study_id)
            index = {k: i for i, k in enumerate(nums)} if nums else {}
            for o in case.lesions.get(s.study_id, []):
                p = case.lesion_props.get(o.lesion_id, {})
                ref = self._lesion_ref(o.lesion_id, p)
                in_series = ref == frame.ref or (ref is None and p.get("source") != "deeplesion")
                pos = o.position_mm
                k = p.get("keySliceIndex")
                if pos is None and in_series and k is not None and o.center_px is not None:
                    pos = frame.position_mm(int(k), o.center_px[1], o.center_px[0])
                idx = index.get(int(k)) if (in_series and k is not None) else None
                new[o.lesion_id] = replace(o, position_mm=pos, slice_index=idx)
        if not new:
            return case
        def swap(obs):
            return [new.get(o.lesion_id, o) for o in obs]
        return replace(case, tracks={u: swap(v) for u, v in case.tracks.items()},
                       lesions={sid: swap(v) for sid, v in case.lesions.items()})

    def __call__(self, study: StudyData):
        frame = self._frames.get(study.study_id)
        if frame is None and self.image_format == "deeplesion":
            frame = "it was not prepared (no DeepLesion lesion of the study was read)"
        if frame is None:
            return self._dicom(study)
        if isinstance(frame, str):
            raise ImageError(frame, study.study_id)
        hu, nums = read_series_slab(self._folder(frame))
        self._numbers[study.study_id] = nums
        return hu, frame.grid(nums, hu.shape[1], hu.shape[2])

    def finish_records(self, case: PatientCase, records: list[ProposalRecord],
                       stats: MiningStats | None = None, min_score: float = DEFAULT_MIN_SCORE
                       ) -> list[ProposalRecord]:
        """DeepLesion proposals: slice index back to the series' slice number; a proposal whose
        prediction lies in a gap of the present slices (none within the lesion's reach) dropped."""
        out = []
        for rec in records:
            frame = self._frames.get(rec.study_id)
            nums = self._numbers.get(rec.study_id)
            if not isinstance(frame, SeriesFrame) or not nums:
                out.append(rec)
                continue
            z = np.asarray(rec.grid.slice_z_mm, float)
            pz = rec.prediction.position_mm[2]
            reach = max(rec.prediction.expected_long_mm / 2.0 + GAP_MARGIN_MM, 1.01 * frame.slice_interval_mm)
            if float(np.min(np.abs(z - pz))) > reach:
                if stats is not None:
                    stats.candidate_studies -= 1
                    if rec.passes(min_score):
                        stats.proposals -= 1
                    else:
                        stats.below_threshold -= 1
                    k = -pz / frame.slice_interval_mm
                    below = max((n for n in nums if n < k), default=None)
                    above = min((n for n in nums if n > k), default=None)
                    where = " and ".join(f"{n:03d}.png" for n in (below, above) if n is not None)
                    stats.skip(f"track {rec.tracking_uid} in study {rec.study_id}",
                               f"predicted at slice ≈{k:.0f} of series {frame.ref}, in a gap of its PNG slices "
                               f"(between {where}; DeepLesion released only the slices around bookmarks): "
                               "not proposed")
                continue
            out.append(replace(rec, candidate=replace(rec.candidate, slice_index=nums[rec.candidate.slice_index])))
        return out


def has_deeplesion_studies(cases, image_format: str = "auto") -> bool:
    """Does any of these cases hold a study ``StudyVolumes`` would load from DeepLesion PNGs?"""
    probe = StudyVolumes(None, image_format=image_format)
    return any(probe._frame_of(c, s) is not None for c in cases for s in c.studies)
