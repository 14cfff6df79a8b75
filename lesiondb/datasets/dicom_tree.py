"""Which CT series a folder tree holds, found by their DICOM headers, not by folder names.

PACS exports, viewers and archives name folders as they like (``SE000003``, a study description,
a patient name); cohort folders written by ``lesiondb synth`` use UIDs. A :class:`DicomTree` reads
one header per folder (following symbolic links) and so finds every series however the folders
are named. It also answers the other way round for a pseudonymised graph: which folder holds the
series or study that a ``seriesId`` / ``studyId`` pseudonym stands for (the same keyed hash of the
headers' identifiers), so the graph never needs to store a path or a UID.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ..core.pseudonym import Pseudonymizer, Redactor
from ..errors import ImageError
from ..imaging.dicom import SeriesInfo, is_candidate_name, list_series, read_header, walk_folders

log = logging.getLogger(__name__)

SOURCE = "dicom"
#: Cohort folders keep their series under this sub-folder (cohort folder contract).
DICOM_DIR = "dicom"


class DicomTree:
    """The CT series under ``root`` (headers read on first use, one readable file per folder).

    ``complete=True`` reads every file's header instead, for trees where one folder mixes several
    series (a flat export); a series not found the fast way triggers that full scan once.
    """

    def __init__(self, root: str | Path, *, complete: bool = False):
        self.root = Path(root)
        self._complete = complete
        self._series: dict[str, SeriesInfo] | None = None
        self.problems: dict[str, str] = {}  # folder or file → why nothing was read there
        self._full_scan_done = False

    @property
    def base(self) -> Path:
        """``root/dicom`` for a cohort folder, else ``root``."""
        sub = self.root / DICOM_DIR
        return sub if sub.is_dir() else self.root

    # -- the scan --------------------------------------------------------------------------------
    @property
    def series(self) -> dict[str, SeriesInfo]:
        """SeriesInstanceUID → :class:`SeriesInfo` (its folder, study, patient, date)."""
        if self._series is None:
            self._series = {}
            if self._complete:
                self._scan_all()
            else:
                self._scan_folders()
        return self._series

    def _scan_folders(self) -> None:
        assert self._series is not None
        if not self.base.is_dir():
            return
        for folder, names in walk_folders(self.base):
            cands = [folder / n for n in names if is_candidate_name(n)]
            last_reason = None
            for f in cands:
                try:
                    h = read_header(f, check_pixels=False)
                except ImageError as exc:
                    last_reason = f"{f.name}: {exc.reason}"
                    continue
                self._series.setdefault(h.series_uid, SeriesInfo(
                    h.series_uid, h.study_uid, h.patient_id, h.study_date, h.patient_sex,
                    h.patient_age_years, folder, len(cands)))
                break
            else:
                if cands and last_reason:
                    self.problems[str(folder)] = f"no readable CT file (last: {last_reason})"

    def _scan_all(self) -> None:
        assert self._series is not None
        self._full_scan_done = True
        if not self.base.is_dir():
            return
        found, skipped = list_series(self.base)
        for s in found:
            self._series.setdefault(s.series_uid, s)
        self.problems.update(skipped)

    # -- look-ups by source identifiers -----------------------------------------------------------
    def folder(self, series_uid: str) -> Path | None:
        """The folder of a series (a full header scan once when the fast scan missed it)."""
        info = self.series.get(series_uid)
        if info is None and not self._full_scan_done and self.base.is_dir():
            log.info("series %s not found by one header per folder: reading every header under %s",
                     series_uid, self.base)
            self._scan_all()
            info = self.series.get(series_uid)
        return info.folder if info is not None else None

    def studies(self) -> dict[tuple[str, str], list[SeriesInfo]]:
        """(PatientID, StudyInstanceUID) → its series, largest first."""
        out: dict[tuple[str, str], list[SeriesInfo]] = {}
        for s in self.series.values():
            if s.patient_id and s.study_uid:
                out.setdefault((s.patient_id, s.study_uid), []).append(s)
        for v in out.values():
            v.sort(key=lambda s: (-s.n_files, s.series_uid))
        return out

    # -- look-ups by pseudonym --------------------------------------------------------------------
    def by_series_id(self, ids: Pseudonymizer) -> dict[str, SeriesInfo]:
        """``seriesId`` pseudonym → series, under the graph's key."""
        return {ids.series(SOURCE, s.patient_id or "", s.series_uid): s for s in self.series.values()}

    def redactor(self, ids: Pseudonymizer) -> Redactor:
        """Replaces the identifiers of every series found here by their pseudonyms (see :func:`redactor`)."""
        return redactor(ids, self.series.values())

    def by_study_id(self, ids: Pseudonymizer) -> dict[str, list[SeriesInfo]]:
        """``studyId`` pseudonym → the study's series (largest first), under the graph's key."""
        return {ids.study(SOURCE, p, s): v for (p, s), v in self.studies().items()}


def pick_series(candidates: Iterable[SeriesInfo], wanted: Iterable[str] = ()) -> SeriesInfo | None:
    """Of a study's series, the one whose uid is in ``wanted`` (its annotated series), else the largest."""
    cands = list(candidates)
    want = set(wanted)
    for s in cands:
        if s.series_uid in want:
            return s
    return cands[0] if cands else None


def redactor(ids: Pseudonymizer, series: Iterable[SeriesInfo] = (),
             rows: Iterable[tuple[str, str, str, str | None]] = ()) -> Redactor:
    """A :class:`Redactor` for the identifiers of ``series`` (from headers) and ``rows``
    ((PatientID, StudyInstanceUID, SeriesInstanceUID, ISO study date) from annotations): patient,
    study and series ids by their pseudonyms, dates as ``<date>``."""
    red = Redactor()
    items = [(s.patient_id or "", s.study_uid or "", s.series_uid, s.study_date) for s in series] + list(rows)
    for patient, study, series_uid, date in items:
        red.add(patient, ids.patient(SOURCE, patient))
        red.add(study, ids.study(SOURCE, patient, study))
        red.add(series_uid, ids.series(SOURCE, patient, series_uid))
        if date:
            red.add(date, "<date>")
            red.add(date.replace("-", ""), "<date>")
    return red
