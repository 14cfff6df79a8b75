"""Per-type statistics of DeepLesion, and the structure of a DL_info.csv for ``synth --like``.

The synthetic cohort generator draws lesion sizes, locations and cohort structure from
*derived* statistics of the real ``DL_info.csv`` (quantiles, means, covariances, histograms),
shipped as ``lesiondb/data/dl_stats.json`` and rebuilt by ``tools/derive_dl_stats.py``. No row
of the real file is shipped.

Sizes are in mm: DeepLesion gives diameters in pixels, times the row's pixel spacing.
"""
from __future__ import annotations

import csv
import functools
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

STATS_PATH = Path(__file__).resolve().parent.parent / "data" / "dl_stats.json"
#: Probabilities at which size quantiles are stored (ends trimmed: extreme rows are outliers).
QUANTILE_PROBS = [0.01] + [round(0.05 * i, 2) for i in range(1, 20)] + [0.99]
_TYPES = range(1, 9)


def _num(cell: str, n: int) -> list[float]:
    parts = [p for p in cell.replace(",", " ").split() if p]
    if len(parts) != n:
        raise ValueError(f"expected {n} numbers in {cell!r}")
    vals = [float(p) for p in parts]
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"non-finite number in {cell!r}")
    return vals


@dataclass
class LikeRow:
    """What ``--like`` keeps of one DL_info row."""

    type_code: int
    long_mm: float
    short_mm: float
    location: tuple[float, float, float]


@dataclass
class LikeStudy:
    study_index: int
    age: int | None
    rows: list[LikeRow] = field(default_factory=list)


@dataclass
class LikePatient:
    source_index: int
    sex: str | None
    studies: list[LikeStudy] = field(default_factory=list)


@dataclass
class LikeStructure:
    """A real cohort's structure: patients → studies → lesion rows (no identifiers kept)."""

    path: str
    patients: list[LikePatient]
    rows_read: int
    rows_skipped: int
    errors: list[str]

    @property
    def n_studies(self) -> int:
        return sum(len(p.studies) for p in self.patients)

    @property
    def n_lesions(self) -> int:
        return sum(len(s.rows) for p in self.patients for s in p.studies)


_NEEDED = ["Patient_index", "Study_index", "Lesion_diameters_Pixel_", "Spacing_mm_px_",
           "Normalized_lesion_location", "Coarse_lesion_type", "Patient_gender", "Patient_age"]


def _parse(row: dict[str, str]) -> tuple[int, int, str | None, int | None, LikeRow]:
    patient = int(float(row["Patient_index"]))
    study = int(float(row["Study_index"]))
    long_px, short_px = _num(row["Lesion_diameters_Pixel_"], 2)
    sx = _num(row["Spacing_mm_px_"], 3)[0]
    if long_px <= 0 or short_px <= 0 or sx <= 0:
        raise ValueError("diameters and spacing must be positive")
    loc = _num(row["Normalized_lesion_location"], 3)
    loc = [min(1.0, max(0.0, v)) for v in loc]
    t = int(float(row["Coarse_lesion_type"]))
    if t != -1 and t not in _TYPES:
        raise ValueError(f"Coarse_lesion_type {t} is not -1 or 1..8")
    sex = (row.get("Patient_gender") or "").strip().upper() or None
    if sex not in (None, "M", "F"):
        sex = None
    age_s = (row.get("Patient_age") or "").strip()
    try:
        age = int(float(age_s)) if age_s and age_s.lower() != "nan" else None
    except ValueError:
        age = None
    lmm, smm = long_px * sx, short_px * sx
    if smm > lmm:
        lmm, smm = smm, lmm
    return patient, study, sex, age, LikeRow(t, lmm, smm, (loc[0], loc[1], loc[2]))


def read_like(path: str | Path, max_errors: int = 20) -> LikeStructure:
    """Read a DL_info.csv into patients → studies → rows; bad rows are counted and skipped."""
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot open DL_info file: {exc.strerror}", str(path)) from exc
    patients: dict[int, LikePatient] = {}
    studies: dict[tuple[int, int], LikeStudy] = {}
    errors: list[str] = []
    read = skipped = 0
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in _NEEDED if c not in header]
        if missing:
            raise InputError(f"not a DL_info.csv file: missing column(s) {', '.join(missing)}; "
                             "pass DeepLesion's DL_info.csv (or a file with its columns)", str(path), 1)
        reader.fieldnames = header
        for row in reader:
            read += 1
            try:
                pi, si, sex, age, lr = _parse(row)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                skipped += 1
                if len(errors) < max_errors:
                    errors.append(f"{path}:{reader.line_num}: {exc}")
                continue
            p = patients.get(pi)
            if p is None:
                p = patients[pi] = LikePatient(pi, sex)
            s = studies.get((pi, si))
            if s is None:
                s = studies[(pi, si)] = LikeStudy(si, age)
                p.studies.append(s)
            s.rows.append(lr)
    if not patients:
        raise InputError("no usable rows in DL_info file", str(path))
    out = [patients[k] for k in sorted(patients)]
    for p in out:
        p.studies.sort(key=lambda s: s.study_index)
    return LikeStructure(str(path), out, read, skipped, errors)


def _r(x: float, nd: int = 5) -> float:
    return float(round(float(x), nd))


def derive_stats(path: str | Path) -> dict[str, Any]:
    """Derived statistics of a DL_info.csv (no rows): the content of ``dl_stats.json``."""
    like = read_like(path)
    by_type: dict[int, list[LikeRow]] = defaultdict(list)
    for p in like.patients:
        for s in p.studies:
            for r in s.rows:
                by_type[r.type_code].append(r)
    types: dict[str, Any] = {}
    for t in [-1, *_TYPES]:
        rows = by_type.get(t, [])
        if not rows:
            continue
        long_mm = np.array([r.long_mm for r in rows])
        ratio = np.array([r.short_mm / r.long_mm for r in rows])
        loc = np.array([r.location for r in rows])
        comps = []
        for side_mask in (loc[:, 0] < 0.5, loc[:, 0] >= 0.5):
            sub = loc[side_mask]
            if len(sub) < 5:
                continue
            cov = np.cov(sub.T) + np.eye(3) * 1e-6
            comps.append({"weight": _r(len(sub) / len(loc), 4),
                          "mean": [_r(v) for v in sub.mean(axis=0)],
                          "cov": [[_r(v, 6) for v in rowv] for rowv in cov]})
        types[str(t)] = {
            "n": len(rows),
            "long_mm_quantiles": [_r(v, 3) for v in np.quantile(long_mm, QUANTILE_PROBS)],
            "short_ratio_quantiles": [_r(v, 4) for v in np.quantile(ratio, QUANTILE_PROBS)],
            "location_components": comps,
        }
    sp = Counter(len(p.studies) for p in like.patients)
    ls = Counter(len(s.rows) for p in like.patients for s in p.studies)
    sex = Counter(p.sex for p in like.patients if p.sex)
    ages = [s.age for p in like.patients for s in p.studies[:1] if s.age is not None]
    return {
        "source": Path(path).name,
        "rows": like.n_lesions,
        "patients": len(like.patients),
        "studies": like.n_studies,
        "quantile_probs": QUANTILE_PROBS,
        "types": types,
        "studies_per_patient": {str(k): sp[k] for k in sorted(sp)},
        "lesions_per_study": {str(k): ls[k] for k in sorted(ls)},
        "patient_sex": {k: sex[k] for k in sorted(sex)},
        "age_at_first_study_quantiles": [_r(v, 2) for v in np.quantile(ages, QUANTILE_PROBS)] if ages else [],
    }


@functools.lru_cache(maxsize=1)
def load_stats() -> dict[str, Any]:
    """The shipped derived statistics (``lesiondb/data/dl_stats.json``)."""
    try:
        return json.loads(STATS_PATH.read_text())
    except OSError as exc:  # pragma: no cover - a broken install
        raise InputError(f"missing shipped statistics ({exc.strerror}); rebuild them with "
                         "tools/derive_dl_stats.py", str(STATS_PATH)) from exc


def sample_from_quantiles(rng: np.random.Generator, quantiles: list[float], probs: list[float],
                          size: int | None = None) -> Any:
    """Inverse-CDF sampling between stored quantiles (linear in the value, clamped to the ends)."""
    u = rng.uniform(probs[0], probs[-1], size=size)
    return np.interp(u, probs, quantiles)
