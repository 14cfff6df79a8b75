"""Synthetic CT cohorts with full ground truth: ``lesiondb synth`` and :func:`generate_cohort`.

A cohort is planned first (patients, studies, lesion tracks, every instance's geometry and its
RECIST measurement — pure Python, fast enough for a DeepLesion-scale cohort in seconds), then,
unless ``images=False``, each study is rendered from the analytic phantom
(:mod:`lesiondb.synth.phantom`) and written as one axial DICOM series. The folder layout and
file formats are the *cohort folder contract* of docs/architecture.md; the modelling choices are
in docs/synthetic-cohorts.md.

Everything random comes from ``numpy.random.default_rng`` streams derived from the seed, the
patient's index and (with ``like``) the like-file's content, never from global state: the same
arguments give byte-identical ``annotations.csv``, ``ground_truth.json`` and DICOM files, whatever
the number of worker processes.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import datetime as dt
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from scipy.optimize import linear_sum_assignment

from ..core.progress import Progress, bar
from ..core.results import Result
from ..datasets.cohort import COLUMNS
from ..errors import InputError
from . import dl_stats
from .phantom import (
    KNOTS_T,
    MAX_LONG_MM,
    MIN_LONG_MM,
    Anatomy,
    LesionShape,
    SliceGeometry,
    Transform,
    clamp,
    render_volume,
)

GENERATOR = "lesiondb synth"
FORMAT_VERSION = 1
# The annotations.csv columns are the cohort contract, owned by its reader.
ANNOTATION_COLUMNS = COLUMNS
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
MIN_SLICES = 24
BBOX_PAD_PX = 5.0
#: Courses of a lesion track over a patient's studies.
COURSES = ("grow", "shrink", "stable", "resolve", "new")
_BASELINE_COURSE_P = {"stable": 0.40, "grow": 0.25, "shrink": 0.20, "resolve": 0.15}



# ------------------------------------------------------------------------------- appearance
def _appearance(type_code: int, long_mm: float, rng: np.random.Generator) -> tuple[str, list[list[float]]]:
    """A type-typical look: a name and HU layers ``[relative scale, unenhanced HU, contrast HU]``
    (outermost first; the HU at a study is ``unenhanced + contrast_factor · contrast HU``)."""
    j = lambda s: float(rng.normal(0.0, s))  # noqa: E731
    u = rng.random()
    if type_code == 1:
        if u < 0.6:
            return "lytic", [[1.0, 45 + j(10), 10.0]]
        return "sclerotic", [[1.0, 950 + j(80), 0.0]]
    if type_code == 2:
        if long_mm > 30 and u < 0.4:
            return "necrotic mass", [[1.0, 35 + j(5), 35.0], [0.6, 15 + j(4), 0.0]]
        return "solid mass", [[1.0, 35 + j(5), 35.0]]
    if type_code == 3:
        return "enlarged lymph node", [[1.0, 40 + j(5), 25.0]]
    if type_code == 4:
        if u < 0.25:
            return "rim-enhancing", [[1.0, 60 + j(5), 50.0], [0.8, 25 + j(5), 5.0]]
        if u < 0.45:
            return "cyst", [[1.0, 8 + j(3), 0.0]]
        return "hypodense", [[1.0, 30 + j(6), 15.0]]
    if type_code == 5:
        if u < 0.15:
            return "ground-glass nodule", [[1.0, -450 + j(40), 0.0]]
        return "solid nodule", [[1.0, 30 + j(8), 20.0]]
    if type_code == 6:
        if u < 0.7:
            return "cyst", [[1.0, 7 + j(3), 0.0]]
        return "solid renal mass", [[1.0, 35 + j(5), 45.0]]
    if type_code == 8:
        if u < 0.2:
            return "cystic mass", [[1.0, 10 + j(3), 0.0]]
        return "pelvic mass", [[1.0, 35 + j(5), 30.0]]
    return "soft-tissue mass", [[1.0, 35 + j(5), 20.0]]  # 7


# ------------------------------------------------------------------------------------ plans
@dataclass
class TrackPlan:
    track_id: str
    type_code: int
    course: str
    appearance: str
    layers: list[list[float]]
    uvt: tuple[float, float, float]
    anat_mm: tuple[float, float, float]
    angle_rad: float
    z_ratio: float
    first_study: int  # 1-based study index
    last_study: int
    sizes: dict[int, tuple[float, float]] = field(default_factory=dict)  # study index → (long, short) mm


@dataclass
class InstancePlan:
    annotation_id: str
    track_id: str
    study_index: int
    type_code: int
    center_mm: tuple[float, float, float]
    semi_mm: tuple[float, float, float]
    angle_rad: float
    layers_hu: list[tuple[float, float]]
    key_slice_index: int
    center_px: tuple[float, float]
    recist_px: list[float]
    bbox_px: list[float]
    long_diameter_px: float
    short_diameter_px: float
    long_diameter_mm: float
    short_diameter_mm: float
    location: tuple[float, float, float]
    annotated: bool
    status: str
    appearance: str

    def shape(self) -> LesionShape:
        return LesionShape(self.center_mm, self.semi_mm, self.angle_rad, tuple(self.layers_hu))


@dataclass
class StudyPlan:
    study_index: int
    study_uid: str
    series_uid: str
    frame_uid: str
    study_date: dt.date
    months_from_baseline: float
    patient_age: int
    geometry: SliceGeometry
    transform: Transform
    contrast: float
    noise_hu: float
    rescale_intercept: float
    body_z_mm: tuple[float, float]
    instances: list[InstancePlan] = field(default_factory=list)


@dataclass
class PatientPlan:
    index: int
    patient_id: str
    sex: str
    birth_date: dt.date
    anatomy: Anatomy
    studies: list[StudyPlan]
    tracks: list[TrackPlan]
    uid_salt: str


@dataclass
class CohortPlan:
    seed: int
    patients: list[PatientPlan]
    like: str | None = None
    like_rows_skipped: int = 0
    like_errors: list[str] = field(default_factory=list)

    @property
    def n_studies(self) -> int:
        return sum(len(p.studies) for p in self.patients)

    def instances(self):
        for p in self.patients:
            for s in p.studies:
                for i in s.instances:
                    yield p, s, i


@dataclass
class CohortSummary(Result):
    """What :func:`generate_cohort` wrote."""

    out_dir: str
    seed: int
    patients: int
    studies: int
    tracks: int
    instances: int
    annotated: int
    withheld: int
    images: bool
    slices: int
    seconds: float
    like: str | None = None
    like_rows_skipped: int = 0
    errors: list[str] = field(default_factory=list)
    like_errors: list[str] = field(default_factory=list)

    @property
    def lesions_per_second(self) -> float:
        return self.instances / self.seconds if self.seconds > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "out": self.out_dir, "seed": self.seed, "patients": self.patients, "studies": self.studies,
            "tracks": self.tracks, "lesion_instances": self.instances, "annotated": self.annotated,
            "withheld": self.withheld, "images": self.images, "slices": self.slices,
            "seconds": round(self.seconds, 3), "lesions_per_second": round(self.lesions_per_second, 1),
            "like": self.like, "like_rows_skipped": self.like_rows_skipped,
            "like_row_errors": self.like_errors, "errors": self.errors,
        }


# --------------------------------------------------------------------------------- helpers
#: pydicom's UID root, as ``pydicom.uid.generate_uid`` uses by default.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def _uid(salt: str, *parts: Any) -> str:
    """``pydicom.uid.generate_uid(entropy_srcs=[...])`` with deterministic sources (seed, patient,
    study, …), computed the same way (SHA-512 of the joined sources under pydicom's root) without
    its per-call overhead, which dominated planning (tested equal)."""
    srcs = "".join(["lesiondb-synth", salt, *map(str, parts)])
    return f"{UID_PREFIX}{int(hashlib.sha512(srcs.encode('utf-8')).hexdigest(), 16)}"[:64]


def _r(x: float, nd: int = 4) -> float:
    return float(round(float(x), nd))


def _type_probs(stats: dict[str, Any], override: dict[int, float] | None) -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(1, 9)
    if override:
        w = np.array([float(override.get(int(c), 0.0)) for c in codes])
    else:
        w = np.array([stats["types"].get(str(c), {}).get("n", 0) for c in codes], dtype=float)
    if w.sum() <= 0:
        raise InputError("type_probs gives no weight to any lesion type 1..8")
    return codes, w / w.sum()


_CACHE: dict[Any, Any] = {}


def _hist_draw(rng: np.random.Generator, hist: dict[str, int], lo: int, hi: int) -> int:
    key = ("hist", id(hist), lo, hi)
    cached = _CACHE.get(key)
    if cached is None:
        ks = [int(k) for k in hist if lo <= int(k) <= hi]
        w = np.array([hist[str(k)] for k in ks], dtype=float)
        cached = _CACHE[key] = (ks, np.cumsum(w) / w.sum())
    ks, cdf = cached
    return ks[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(ks) - 1)]


def _draw_location(rng: np.random.Generator, tstats: dict[str, Any]) -> tuple[float, float, float]:
    """A normalised DeepLesion location from the type's per-side Gaussian components."""
    key = ("loc", id(tstats))
    cached = _CACHE.get(key)
    if cached is None:
        comps = tstats["location_components"]
        w = np.array([c["weight"] for c in comps], dtype=float)
        chol = [(np.array(c["mean"]), np.linalg.cholesky(np.array(c["cov"]) + 1e-9 * np.eye(3))) for c in comps]
        cached = _CACHE[key] = (np.cumsum(w) / w.sum(), chol)
    cdf, chol = cached
    mean, lower = chol[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(chol) - 1)]
    x = (mean + lower @ rng.standard_normal(3)).tolist()
    return (clamp(x[0], 0.0, 1.0), clamp(x[1], 0.0, 1.0), clamp(x[2], 0.0, 1.0))


def _draw_size(rng: np.random.Generator, stats: dict[str, Any], type_code: int) -> tuple[float, float]:
    ts = stats["types"][str(type_code)]
    probs = stats["quantile_probs"]
    long_mm = float(dl_stats.sample_from_quantiles(rng, ts["long_mm_quantiles"], probs))
    ratio = float(dl_stats.sample_from_quantiles(rng, ts["short_ratio_quantiles"], probs))
    return long_mm, long_mm * ratio


def _clip_size(type_code: int, long_mm: float, short_mm: float, anatomy: Anatomy) -> tuple[float, float]:
    cap = MAX_LONG_MM.get(type_code, 100.0)
    if type_code == 1:
        cap = min(cap, 1.8 * anatomy.spine_radius_mm)
    long_mm = clamp(float(long_mm), MIN_LONG_MM, cap)
    short_mm = clamp(float(short_mm), min(2.0, long_mm), long_mm)
    return long_mm, short_mm


# --------------------------------------------------------------------------------- planning
def plan_cohort(n_patients: int | None = None, seed: int = 0, like: str | Path | None = None, *,
                withhold: tuple[float, float] = (0.3, 0.5), max_studies: int = 6,
                image_size: int = 256, type_probs: dict[int, float] | None = None,
                workers: int | None = None) -> CohortPlan:
    """Plan a cohort (no files): patients, studies, tracks and every lesion instance.

    ``like``: a DL_info.csv whose structure (patients, studies per patient, lesions per study,
    types, sizes, normalised locations) is mirrored; ``n_patients`` then defaults to its count
    (fewer takes the first ones; more repeats it). ``withhold``: range of the per-study fraction
    of lesion instances whose annotation is withheld (at least one per study stays annotated).
    ``workers``: processes for large cohorts (the plan does not depend on it).
    """
    seed = _check_seed(seed)
    lo, hi = (float(w) for w in withhold)
    if not (0.0 <= lo <= hi < 1.0):
        raise InputError(f"withhold range {withhold} must satisfy 0 ≤ low ≤ high < 1")
    if max_studies < 1:
        raise InputError(f"max_studies must be ≥ 1, got {max_studies}")
    if image_size < 64:
        raise InputError(f"image_size must be ≥ 64 pixels, got {image_size}")
    stats = dl_stats.load_stats()
    codes, probs = _type_probs(stats, type_probs)
    like_struct = None
    salt_int = 0
    salt = str(seed)
    if like is not None:
        like_struct = dl_stats.read_like(like)
        digest = hashlib.sha256(Path(like).read_bytes()).hexdigest()
        salt = f"{seed}:{digest[:16]}"
        salt_int = int(digest[:8], 16)
        if n_patients is None:
            n_patients = len(like_struct.patients)
    if n_patients is None or int(n_patients) < 1:
        raise InputError(f"number of patients must be ≥ 1, got {n_patients}")
    n_patients = int(n_patients)
    width = max(4, len(str(n_patients)))
    common = (seed, salt_int, salt, width, codes, probs, (lo, hi), max_studies, image_size)
    sources = like_struct.patients if like_struct else None
    n_workers = 1 if workers is None or n_patients < 400 else int(workers)
    if n_workers <= 1:
        patients = _plan_range((0, n_patients, common, sources))
    else:

        step = -(-n_patients // (4 * n_workers))
        jobs = [(a, min(a + step, n_patients), common, sources) for a in range(0, n_patients, step)]
        with cf.ProcessPoolExecutor(n_workers, mp_context=_mp_context()) as ex:
            patients = [pp for part in ex.map(_plan_range, jobs) for pp in part]
    _number(patients)
    return CohortPlan(seed, patients, like=str(like) if like is not None else None,
                      like_rows_skipped=like_struct.rows_skipped if like_struct else 0,
                      like_errors=like_struct.errors if like_struct else [])


def _plan_range(job) -> list[PatientPlan]:
    """Plan patients ``a … b−1`` (one worker's share); ids are patient-local until :func:`_number`."""
    a, b, (seed, salt_int, salt, width, codes, probs, withhold, max_studies, image_size), sources = job
    stats = dl_stats.load_stats()
    out = []
    for i in range(a, b):
        rng = np.random.default_rng([seed, i, salt_int])
        source = sources[i % len(sources)] if sources else None
        out.append(_plan_patient(i, f"SYN{i + 1:0{width}d}", rng, stats, codes, probs, source, withhold,
                                 max_studies, image_size, salt, {"annotation": 0, "track": 0}))
    return out


def _number(patients: list[PatientPlan]) -> None:
    """Cohort-wide sequential track and annotation ids, in patient / study / track order."""
    n_track = n_ann = 0
    for p in patients:
        new_ids = {}
        for tr in p.tracks:
            n_track += 1
            new_ids[tr.track_id] = tr.track_id = f"T{n_track:06d}"
        for s in p.studies:
            for inst in s.instances:
                n_ann += 1
                inst.annotation_id = f"A{n_ann:06d}"
                inst.track_id = new_ids[inst.track_id]


def _mp_context():
    # fork: workers inherit the imported modules (fast start; works from notebooks and stdin);
    # the parent holds no locks the workers use.
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _check_seed(seed: Any) -> int:
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be a non-negative integer, got {seed!r}") from None
    if s < 0 or s != seed:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return s


def _track_struct_default(rng, stats, n_studies) -> list[tuple[int, int, str]]:
    """(first, last, course) per track, every study with ≥ 1 visible lesion."""
    n0 = _hist_draw(rng, stats["lesions_per_study"], 1, 10)
    out = []
    courses = list(_BASELINE_COURSE_P)
    cp = np.array([_BASELINE_COURSE_P[c] for c in courses])
    for k in range(n0):
        course = "stable" if n_studies == 1 else str(rng.choice(courses, p=cp / cp.sum()))
        if course == "resolve" and k == 0:
            course = "shrink"  # the first track stays, so no study is empty
        last = int(rng.integers(1, n_studies)) if course == "resolve" else n_studies
        out.append((1, last, course))
    for s in range(2, n_studies + 1):
        if rng.random() < 0.3:
            for _ in range(1 + int(rng.random() < 0.3)):
                out.append((s, n_studies, "new"))
    return out


def _like_tracks(rng, source: dl_stats.LikePatient, codes, probs):
    """Link a real patient's rows across consecutive studies into tracks (same type, nearest
    normalised location, gated) — each row becomes one instance of one track."""
    tracks: list[dict[str, Any]] = []  # {"type", "rows": {study_idx: LikeRow}, "first", "last"}
    active: list[int] = []
    for si, st in enumerate(source.studies, start=1):
        rows = st.rows
        matched_rows: dict[int, int] = {}
        if active and rows:
            cost = np.full((len(active), len(rows)), 1e6)
            for a, ti in enumerate(active):
                tr = tracks[ti]
                last = tr["rows"][tr["last"]]
                for b, r in enumerate(rows):
                    if r.type_code != -1 and tr["type"] != -1 and r.type_code != tr["type"]:
                        continue
                    d = math.dist(last.location, r.location)
                    if d <= 0.12:
                        cost[a, b] = d
            ra, cb = linear_sum_assignment(cost)
            for a, b in zip(ra, cb, strict=True):
                if cost[a, b] < 1e6:
                    matched_rows[int(b)] = active[int(a)]
        new_active = []
        for b, r in enumerate(rows):
            ti = matched_rows.get(b)
            if ti is None:
                tracks.append({"type": r.type_code, "rows": {}, "first": si, "last": si})
                ti = len(tracks) - 1
            tr = tracks[ti]
            tr["rows"][si] = r
            tr["last"] = si
            if tr["type"] == -1 and r.type_code != -1:
                tr["type"] = r.type_code
            new_active.append(ti)
        active = new_active
    for tr in tracks:
        if tr["type"] == -1:
            tr["type"] = int(rng.choice(codes, p=probs))
    return tracks


#: A new lesion is placed at most this many times, until it overlaps no earlier lesion of the
#: patient (at the earlier one's largest size): overlapping lesions would render as one. One that
#: still overlaps at its own largest size is left out (no room for it), except with ``like``,
#: whose lesion counts follow the file.
PLACEMENT_TRIES = 12


def _largest_radius(tr: TrackPlan) -> float:
    return 0.5 * max((long_mm for long_mm, _short in tr.sizes.values()), default=0.0)


def _overlaps(center_mm: tuple[float, float, float], radius_mm: float, tracks: list[TrackPlan]) -> bool:
    """Whether a lesion of ``radius_mm`` at ``center_mm`` (anatomy mm) overlaps one of ``tracks``
    at its largest."""
    return any(math.dist(center_mm, tr.anat_mm) < radius_mm + _largest_radius(tr) for tr in tracks)


def _plan_patient(i, pid, rng, stats, codes, probs, source, withhold, max_studies, image_size,
                  salt, counters) -> PatientPlan:
    anatomy = Anatomy.random(rng)
    # --- demographics and study dates
    if source is not None:
        sex = source.sex or ("M" if rng.random() < 0.58 else "F")
        n_studies = len(source.studies)
        age0 = source.studies[0].age
    else:
        sx_counts = stats.get("patient_sex", {"M": 1, "F": 1})
        p_m = sx_counts.get("M", 1) / max(1, sx_counts.get("M", 1) + sx_counts.get("F", 1))
        sex = "M" if rng.random() < p_m else "F"
        n_studies = _hist_draw(rng, stats["studies_per_patient"], 1, max_studies)
        age0 = None
    if age0 is None:
        q = stats.get("age_at_first_study_quantiles") or [20.0, 90.0]
        age0 = int(round(float(dl_stats.sample_from_quantiles(rng, q, stats["quantile_probs"][:len(q)]))))
    first_date = dt.date(2014, 1, 1) + dt.timedelta(days=int(rng.integers(0, 8 * 365)))
    birth_date = first_date - dt.timedelta(days=int(age0 * 365.25 + rng.integers(0, 365)))
    dates = [first_date]
    for k in range(1, n_studies):
        gap_months = 1.0 + float(rng.gamma(2.0, 2.0))
        if source is not None:
            a_prev, a_now = source.studies[k - 1].age, source.studies[k].age
            if a_prev is not None and a_now is not None and a_now > a_prev:
                gap_months = max(gap_months, 12.0 * (a_now - a_prev) - float(rng.uniform(0, 11)))
        dates.append(dates[-1] + dt.timedelta(days=max(14, int(round(gap_months * 30.44)))))
    months = [(d - first_date).days / 30.44 for d in dates]

    # --- tracks
    dominant = int(rng.choice(codes, p=probs))
    tracks: list[TrackPlan] = []

    def new_track(type_code, first, last, course, target, base_size) -> TrackPlan:
        counters["track"] += 1
        long0, short0 = _clip_size(type_code, *base_size, anatomy)
        appearance, layers = _appearance(type_code, long0, rng)
        radius = 0.5 * long0
        goal = target
        for attempt in range(PLACEMENT_TRIES):
            uvt = anatomy.place_lesion(type_code, goal, radius, rng)
            anat_mm = anatomy.to_mm(*uvt)
            if not _overlaps(anat_mm, radius, tracks):
                break
            # two lesions never share space: move the target a little further each time
            goal = tuple(clamp(x + float(rng.normal(0.0, 0.02 * (attempt + 1))), 0.0, 1.0) for x in target)
        return TrackPlan(
            track_id=f"T{counters['track']:06d}", type_code=type_code, course=course,
            appearance=appearance, layers=layers, uvt=uvt, anat_mm=anat_mm,
            angle_rad=float(rng.uniform(0, math.pi)), z_ratio=float(rng.uniform(0.75, 1.2)),
            first_study=first, last_study=last)

    if source is None:
        for first, last, course in _track_struct_default(rng, stats, n_studies):
            t = dominant if rng.random() < 0.5 else int(rng.choice(codes, p=probs))
            ts = stats["types"][str(t)]
            base = _draw_size(rng, stats, t)
            tr = new_track(t, first, last, course, _draw_location(rng, ts), base)
            long0, short0 = _clip_size(t, *base, anatomy)
            rate = float(rng.uniform(0.01, 0.04))
            f0 = float(rng.uniform(0.35, 0.7))
            for k in range(first, last + 1):
                m = months[k - 1] - months[first - 1]
                if course == "grow":
                    f = min(math.exp(rate * m), 3.0)
                elif course == "shrink":
                    f = max(math.exp(-rate * m), 0.35)
                elif course == "resolve":
                    f = max(math.exp(-2.0 * rate * m), 0.3)
                elif course == "new":
                    f = min(f0 * math.exp(1.5 * rate * m), 1.5)
                else:
                    f = 1.0 + float(rng.normal(0, 0.03))
                lm = long0 * f * float(rng.normal(1, 0.02))
                sm = short0 * f * float(rng.normal(1, 0.02))
                tr.sizes[k] = _clip_size(t, lm, sm, anatomy)
            if not _overlaps(tr.anat_mm, _largest_radius(tr), tracks):  # else no room for it: left out
                tracks.append(tr)
    else:
        for lt in _like_tracks(rng, source, codes, probs):
            first, last = lt["first"], lt["last"]
            r0 = lt["rows"][first]
            if first > 1:
                course = "new"
            elif last < n_studies:
                course = "resolve"
            else:
                g = lt["rows"][last].long_mm / max(r0.long_mm, 1e-6)
                course = "grow" if g > 1.2 else "shrink" if g < 0.8 else "stable"
            tr = new_track(lt["type"], first, last, course, r0.location, (r0.long_mm, r0.short_mm))
            for k, row in lt["rows"].items():
                tr.sizes[k] = _clip_size(tr.type_code, row.long_mm, row.short_mm, anatomy)
            tracks.append(tr)  # the file's structure stays, even where its lesions crowd

    # --- studies: geometry around the visible lesions, then instances
    a_max, b_max = anatomy.max_half_extent_mm()
    need = max(2 * 1.03 * a_max / (0.94 * image_size), 2 * 1.03 * b_max / (0.94 * image_size))
    sx_patient = max(float(rng.uniform(1.4, 1.6)), need)
    table_dz = float(rng.uniform(-300.0, 100.0))
    studies: list[StudyPlan] = []
    for k in range(1, n_studies + 1):
        visible = [tr for tr in tracks if k in tr.sizes]
        scale = clamp(rng.normal(1.0, 0.008), 0.98, 1.02)
        tf = Transform(scale, float(rng.normal(0, 3.0)), float(rng.normal(0, 3.0)),
                       table_dz + float(rng.normal(0, 10.0)))
        shapes = []
        for tr in visible:
            long_mm, short_mm = tr.sizes[k]
            a, b = 0.5 * long_mm, 0.5 * short_mm
            c = max(3.0, tr.z_ratio * 0.5 * (a + b))
            if tr.type_code == 1:
                c = min(c, max(3.0, 1.2 * anatomy.spine_radius_mm))
            x, y, z = tf.apply(*tr.anat_mm)
            drift = rng.normal(0, 0.8, 3)
            center = (_r(x + drift[0], 3), _r(y + drift[1], 3), _r(z + drift[2], 3))
            angle = float(tr.angle_rad + rng.normal(0, 0.05))
            shapes.append((tr, center, (a, b, c), angle))
        geom = _study_geometry(rng, anatomy, tf, shapes, sx_patient, need, image_size)
        t_top, t_bot = 0.0, 1.0
        body_z = (_r(tf.scale * anatomy.z_of_t(t_top) + tf.dz, 3), _r(tf.scale * anatomy.z_of_t(t_bot) + tf.dz, 3))
        contrast = float(rng.uniform(0.55, 1.0))
        date = dates[k - 1]
        age = date.year - birth_date.year - ((date.month, date.day) < (birth_date.month, birth_date.day))
        st = StudyPlan(
            study_index=k,
            study_uid=_uid(salt, i, "study", k), series_uid=_uid(salt, i, "series", k),
            frame_uid=_uid(salt, i, "frame", k), study_date=date,
            months_from_baseline=_r(months[k - 1], 2), patient_age=int(age), geometry=geom,
            transform=tf, contrast=contrast, noise_hu=float(rng.uniform(10.0, 20.0)),
            rescale_intercept=float(rng.choice([-1024.0, -1024.0, -1000.0, 0.0])), body_z_mm=body_z)
        for tr, center, semi, angle in shapes:
            st.instances.append(_instance(tr, k, center, semi, angle, geom, tf, anatomy, body_z,
                                          contrast, counters))
        _withhold(rng, st.instances, withhold)
        studies.append(st)
    _set_status(tracks, studies)
    return PatientPlan(i, pid, sex, birth_date, anatomy, studies, tracks, salt)


#: Room between a lesion's outline and the image's edge, in mm.
LESION_MARGIN_MM = 4.0


def _study_geometry(rng, anatomy: Anatomy, tf: Transform, shapes, sx_patient: float, need: float,
                    image_size: int) -> SliceGeometry:
    """A slab of axial slices that contains every visible lesion with a margin (≥ MIN_SLICES)."""
    z_hi = max(c[2] + s[2] for _, c, s, _ in shapes)
    z_lo = min(c[2] - s[2] for _, c, s, _ in shapes)
    top = z_hi + float(rng.uniform(8.0, 25.0))
    bottom = z_lo - float(rng.uniform(8.0, 25.0))
    span = top - bottom
    interval = 2.5 if (span / 2.5 + 1 <= 48 and rng.random() < 0.35) else 5.0
    n = int(math.ceil(span / interval)) + 1
    if n < MIN_SLICES:
        extra = MIN_SLICES - n
        up = int(rng.integers(0, extra + 1))
        top += up * interval
        n = MIN_SLICES
    z_first = _r(top, 2)
    sx = _r(max(sx_patient * float(rng.uniform(0.985, 1.015)), need), 4)
    # In-plane field of view: centred on the body over the slab's levels (the body's depth is
    # piecewise linear in t: its extremes are at the slab ends or at knots inside).
    t_a = anatomy.t_of_z(tf.z_to_anat(float(z_first)))
    t_b = anatomy.t_of_z(tf.z_to_anat(float(z_first - (n - 1) * interval)))
    secs = [anatomy.section1(tk) for tk in (t_a, t_b, *(k for k in KNOTS_T if t_a < k < t_b))]
    y_lo = min(s[1] - s[5] for s in secs)
    y_hi = max(s[1] + s[5] for s in secs)
    xc = tf.dx + float(rng.normal(0, 3.0))
    yc = tf.scale * 0.5 * (y_lo + y_hi) + tf.dy + float(rng.normal(0, 3.0))
    # every lesion inside the image with a margin (a large one at the body's edge could reach past
    # a field of view fitted to the body: its RECIST points fell outside the image)
    reach = max((max(abs(c[0] - xc), abs(c[1] - yc)) + max(sm[0], sm[1]) for _, c, sm, _ in shapes), default=0.0)
    sx = max(sx, _r((reach + LESION_MARGIN_MM) / (0.5 * (image_size - 1)) + 1e-4, 4))
    half = 0.5 * (image_size - 1) * sx
    return SliceGeometry(image_size, image_size, sx, sx, _r(xc - half, 4), _r(yc - half, 4),
                         z_first, interval, n)


def _instance(tr: TrackPlan, k: int, center, semi, angle, geom: SliceGeometry, tf: Transform,
              anatomy: Anatomy, body_z, contrast: float, counters) -> InstancePlan:
    counters["annotation"] += 1
    x, y, z = center
    a, b, c = semi
    key = int(round((geom.z_first_mm - z) / geom.interval_mm))
    key = min(max(key, 0), geom.n_slices - 1)
    z_key = geom.z_first_mm - key * geom.interval_mm
    f = math.sqrt(max(0.0, 1.0 - ((z_key - z) / c) ** 2))
    a2, b2 = a * f, b * f
    sx, sy = geom.spacing_x_mm, geom.spacing_y_mm
    col, row = (x - geom.x0_mm) / sx, (y - geom.y0_mm) / sy
    ca, sa = math.cos(angle), math.sin(angle)
    pts = [col + a2 * ca / sx, row + a2 * sa / sy, col - a2 * ca / sx, row - a2 * sa / sy,
           col - b2 * sa / sx, row + b2 * ca / sy, col + b2 * sa / sx, row - b2 * ca / sy]
    pts = [_r(p, 3) for p in pts]
    xs, ys = pts[0::2], pts[1::2]
    bbox = [_r(max(0.0, min(xs) - BBOX_PAD_PX), 3), _r(max(0.0, min(ys) - BBOX_PAD_PX), 3),
            _r(min(geom.cols - 1.0, max(xs) + BBOX_PAD_PX), 3),
            _r(min(geom.rows - 1.0, max(ys) + BBOX_PAD_PX), 3)]
    long_px = math.dist(pts[0:2], pts[2:4])
    short_px = math.dist(pts[4:6], pts[6:8])
    # Normalised location on the key slice: x, y from the body outline's bounding box, z from
    # the body extent (docs/architecture.md, cohort folder contract).
    t_key = anatomy.t_of_z(tf.z_to_anat(float(z_key)))
    cxb, cyb, _, _, a_out, b_out = anatomy.section1(t_key)
    bx0 = (tf.scale * (cxb - a_out) + tf.dx - geom.x0_mm) / sx
    bx1 = (tf.scale * (cxb + a_out) + tf.dx - geom.x0_mm) / sx
    by0 = (tf.scale * (cyb - b_out) + tf.dy - geom.y0_mm) / sy
    by1 = (tf.scale * (cyb + b_out) + tf.dy - geom.y0_mm) / sy
    top, bottom = body_z
    loc = (_r(min(1, max(0, (col - bx0) / (bx1 - bx0)))), _r(min(1, max(0, (row - by0) / (by1 - by0)))),
           _r(min(1, max(0, (top - z_key) / (top - bottom)))))
    layers = [(float(sc), _r(base + contrast * enh, 1)) for sc, base, enh in tr.layers]
    return InstancePlan(
        annotation_id=f"A{counters['annotation']:06d}", track_id=tr.track_id, study_index=k,
        type_code=tr.type_code, center_mm=center, semi_mm=(_r(a, 3), _r(b, 3), _r(c, 3)),
        angle_rad=_r(angle, 5), layers_hu=layers, key_slice_index=key,
        center_px=(_r(col, 3), _r(row, 3)), recist_px=pts, bbox_px=bbox,
        long_diameter_px=_r(long_px, 3), short_diameter_px=_r(short_px, 3),
        long_diameter_mm=_r(2 * a2, 3), short_diameter_mm=_r(2 * b2, 3), location=loc,
        annotated=True, status="stable", appearance=tr.appearance)


def _withhold(rng, instances: list[InstancePlan], withhold: tuple[float, float]) -> None:
    if not instances:
        return
    frac = float(rng.uniform(*withhold))
    keep = rng.random(len(instances)) >= frac
    if not keep.any():
        keep[int(rng.integers(0, len(instances)))] = True
    for inst, k in zip(instances, keep, strict=True):
        inst.annotated = bool(k)


def _set_status(tracks: list[TrackPlan], studies: list[StudyPlan]) -> None:
    """new: first seen after the baseline; resolved: last seen, gone from the next study;
    else growing / shrinking / stable by the long diameter vs the previous instance (the first
    instance vs the next) beyond ±10 %."""
    n = len(studies)
    by_track: dict[str, list[InstancePlan]] = {}
    for st in studies:
        for inst in st.instances:
            by_track.setdefault(inst.track_id, []).append(inst)
    for insts in by_track.values():
        for j, inst in enumerate(insts):
            if j == 0 and inst.study_index > 1:
                inst.status = "new"
                continue
            if j == len(insts) - 1 and inst.study_index < n:
                inst.status = "resolved"
                continue
            if len(insts) == 1:
                inst.status = "stable"
                continue
            a, b = (insts[j - 1], inst) if j > 0 else (inst, insts[1])
            g = b.long_diameter_mm / max(a.long_diameter_mm, 1e-6)
            inst.status = "growing" if g > 1.1 else "shrinking" if g < 0.9 else "stable"


# ----------------------------------------------------------------------------- file output
def _series_dir(p: PatientPlan, s: StudyPlan) -> str:
    return f"dicom/{p.patient_id}/{s.study_uid}/{s.series_uid}"


def annotation_rows(plan: CohortPlan) -> list[dict[str, Any]]:
    rows = []
    for p, s, i in plan.instances():
        if not i.annotated:
            continue
        g = s.geometry
        rows.append({
            "annotation_id": i.annotation_id, "patient_id": p.patient_id, "study_uid": s.study_uid,
            "series_uid": s.series_uid, "study_date": s.study_date.isoformat(),
            "key_slice_index": i.key_slice_index,
            **{f"recist_{c}{n}": v for (c, n), v in zip(
                [("x", 1), ("y", 1), ("x", 2), ("y", 2), ("x", 3), ("y", 3), ("x", 4), ("y", 4)], i.recist_px, strict=True)},
            "bbox_x1": i.bbox_px[0], "bbox_y1": i.bbox_px[1], "bbox_x2": i.bbox_px[2], "bbox_y2": i.bbox_px[3],
            "long_diameter_px": i.long_diameter_px, "short_diameter_px": i.short_diameter_px,
            "type_code": i.type_code, "spacing_x_mm": g.spacing_x_mm, "spacing_y_mm": g.spacing_y_mm,
            "slice_interval_mm": g.interval_mm, "location_x": i.location[0], "location_y": i.location[1],
            "location_z": i.location[2], "patient_sex": p.sex, "patient_age": s.patient_age,
        })
    return rows


def ground_truth(plan: CohortPlan) -> dict[str, Any]:
    patients, tracks, instances = [], [], []
    for p in plan.patients:
        studies = []
        for s in p.studies:
            g = s.geometry
            studies.append({
                "study_uid": s.study_uid, "series_uid": s.series_uid, "study_date": s.study_date.isoformat(),
                "study_index": s.study_index, "months_from_baseline": s.months_from_baseline,
                "patient_age": s.patient_age, "n_slices": g.n_slices,
                "z_range_mm": [g.z_first_mm, _r(g.z_first_mm - (g.n_slices - 1) * g.interval_mm, 3)],
                "body_z_mm": list(s.body_z_mm), "slice_interval_mm": g.interval_mm,
                "spacing_mm": [g.spacing_x_mm, g.spacing_y_mm], "rows": g.rows, "cols": g.cols,
                "image_position_mm": [g.x0_mm, g.y0_mm, g.z_first_mm],
                "rescale_intercept": s.rescale_intercept, "noise_hu": _r(s.noise_hu, 2),
                "contrast": _r(s.contrast, 3), "series_dir": _series_dir(p, s),
            })
        patients.append({"patient_id": p.patient_id, "sex": p.sex, "birth_year": p.birth_date.year,
                         "birth_date": p.birth_date.isoformat(), "body_z_mm": list(p.studies[0].body_z_mm),
                         "studies": studies})
        for t in p.tracks:
            ks = sorted(t.sizes)
            tracks.append({"track_id": t.track_id, "patient_id": p.patient_id, "type_code": t.type_code,
                           "course": t.course, "appearance": t.appearance, "first_study_index": ks[0],
                           "last_study_index": ks[-1], "n_instances": len(ks)})
        for s in p.studies:
            for i in s.instances:
                instances.append({
                    "annotation_id": i.annotation_id, "track_id": i.track_id, "patient_id": p.patient_id,
                    "study_uid": s.study_uid, "series_uid": s.series_uid, "study_index": s.study_index,
                    "type_code": i.type_code, "center_mm": list(i.center_mm),
                    "center_voxel": [i.center_px[0], i.center_px[1], i.key_slice_index],
                    "key_slice_index": i.key_slice_index, "recist_px": i.recist_px, "bbox_px": i.bbox_px,
                    "long_diameter_px": i.long_diameter_px, "short_diameter_px": i.short_diameter_px,
                    "long_diameter_mm": i.long_diameter_mm, "short_diameter_mm": i.short_diameter_mm,
                    "semi_axes_mm": list(i.semi_mm), "angle_rad": i.angle_rad,
                    "location": list(i.location), "annotated": i.annotated, "status": i.status,
                    "appearance": i.appearance, "lesion_hu": [[sc, hu] for sc, hu in i.layers_hu],
                })
    return {"generator": GENERATOR, "version": FORMAT_VERSION, "seed": plan.seed, "like": _like_name(plan),
            "patients": patients, "tracks": tracks, "instances": instances}


def _like_name(plan: CohortPlan) -> str | None:
    return Path(plan.like).name if plan.like else None


def cohort_meta(plan: CohortPlan, images: bool) -> dict[str, Any]:
    n_inst = sum(1 for _ in plan.instances())
    n_ann = sum(1 for _, _, i in plan.instances() if i.annotated)
    return {
        "generator": GENERATOR, "version": FORMAT_VERSION, "seed": plan.seed,
        "patients": len(plan.patients), "studies": plan.n_studies,
        "tracks": sum(len(p.tracks) for p in plan.patients), "lesion_instances": n_inst,
        "annotated": n_ann, "withheld": n_inst - n_ann, "images": bool(images), "like": _like_name(plan),
        "coordinates": "DICOM patient LPS mm (+x left, +y posterior, +z head); slices head first",
        "normalised_z": "(top - z) / (top - bottom) with the series' body_z_mm [top, bottom]",
        "series": [{"patient_id": p.patient_id, "study_uid": s.study_uid, "series_uid": s.series_uid,
                    "series_dir": _series_dir(p, s), "n_slices": s.geometry.n_slices,
                    "body_z_mm": list(s.body_z_mm)} for p in plan.patients for s in p.studies],
    }


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_annotations(plan: CohortPlan, path: Path) -> int:
    rows = annotation_rows(plan)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=ANNOTATION_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return len(rows)


# ------------------------------------------------------------------------------ DICOM output
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


def _elem(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian data element (value padded to even length)."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    g, e = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", g, e, vr.encode(), len(value)) + value
    return struct.pack("<HH2sH", g, e, vr.encode(), len(value)) + value


def _ds(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


_PER_SLICE_TAGS = (0x00080018, 0x00200013, 0x00200032, 0x00201041)


class SeriesWriter:
    """Writes the slices of one series fast: the constant elements are encoded once by pydicom,
    the per-slice ones (SOPInstanceUID, InstanceNumber, ImagePositionPatient, SliceLocation,
    PixelData) and the file meta are encoded here, byte-compatible with ``pydicom.dcmwrite``."""

    def __init__(self, const):
        chunks: list[list[bytes]] = [[] for _ in range(len(_PER_SLICE_TAGS) + 1)]
        for elem in const:
            tag = int(elem.tag)
            if tag in _PER_SLICE_TAGS or tag == 0x7FE00010 or tag >> 16 == 0x0002:
                continue
            fp = DicomBytesIO()
            fp.is_little_endian = True
            fp.is_implicit_VR = False
            write_data_element(fp, elem)
            pos = sum(1 for t in _PER_SLICE_TAGS if t < tag)
            chunks[pos].append(fp.getvalue())
        self._chunks = [b"".join(c) for c in chunks]
        self._sop_class = str(const.SOPClassUID)

        self._impl = str(PYDICOM_IMPLEMENTATION_UID)

    def _meta(self, sop_uid: str) -> bytes:
        body = b"".join([
            _elem(0x00020001, "OB", b"\x00\x01"),
            _elem(0x00020002, "UI", self._sop_class.encode()),
            _elem(0x00020003, "UI", sop_uid.encode()),
            _elem(0x00020010, "UI", EXPLICIT_VR_LE.encode()),
            _elem(0x00020012, "UI", self._impl.encode()),
            _elem(0x00020013, "SH", b"LESIONDB_SYNTH"),
        ])
        return b"\0" * 128 + b"DICM" + _elem(0x00020000, "UL", struct.pack("<I", len(body))) + body

    def encode(self, sop_uid: str, instance_number: int, position_mm: tuple[float, float, float],
               pixels: np.ndarray) -> bytes:
        ipp = "\\".join(_ds(v) for v in position_mm).encode()
        c = self._chunks
        data = pixels.astype("<i2", copy=False).tobytes()
        return b"".join([
            self._meta(sop_uid), c[0], _elem(0x00080018, "UI", sop_uid.encode()), c[1],
            _elem(0x00200013, "IS", str(int(instance_number)).encode()), c[2],
            _elem(0x00200032, "DS", ipp), c[3], _elem(0x00201041, "DS", _ds(position_mm[2]).encode()),
            c[4], struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", len(data)), data,
        ])


def series_dataset(p: PatientPlan, s: StudyPlan):
    """The constant part of one study's CT series (everything but the per-slice elements)."""
    g = s.geometry
    ds = Dataset()
    d = s.study_date.strftime("%Y%m%d")
    tsec = 8 * 3600 + (s.study_index * 7919 + p.index * 104729) % (9 * 3600)
    tm = f"{tsec // 3600:02d}{tsec // 60 % 60:02d}{tsec % 60:02d}"
    body_part = _body_part(p, s)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = d
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = tm
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "lesiondb synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"CT {_BODY_PART_WORDS[body_part]} (synthetic)"
    ds.SeriesDescription = f"Axial {_ds(g.interval_mm)} mm (synthetic)"
    ds.PatientName = f"Synthetic^{p.patient_id}"
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date.strftime("%Y%m%d")
    ds.PatientSex = p.sex
    ds.PatientAge = f"{min(s.patient_age, 999):03d}Y"
    ds.BodyPartExamined = body_part
    ds.SliceThickness = _ds(g.interval_mm)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = _ds(g.interval_mm)
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = s.study_uid
    ds.SeriesInstanceUID = s.series_uid
    ds.StudyID = str(s.study_index)
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1  # Type 2 in the CT Image module (dciodvfy checks it)
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = s.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = g.rows
    ds.Columns = g.cols
    ds.PixelSpacing = [_ds(g.spacing_y_mm), _ds(g.spacing_x_mm)]  # row spacing, column spacing
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = _ds(s.rescale_intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _body_part(p: PatientPlan, s: StudyPlan) -> str:
    g = s.geometry
    ts = p.anatomy.t_of_z(s.transform.z_to_anat(np.array([g.z_first_mm, g.z_first_mm - (g.n_slices - 1) * g.interval_mm])))
    lo, hi = float(ts[0]), float(ts[1])
    if hi < THORAX_T:
        return "CHEST"
    if lo > THORAX_T:
        return "ABDOMEN" if hi < 0.78 else "ABDOMENPELVIS"
    return "CHESTABDOMEN" if hi < 0.78 else "CHESTABDPELVIS"


THORAX_T = 0.555
_BODY_PART_WORDS = {"CHEST": "chest", "ABDOMEN": "abdomen", "ABDOMENPELVIS": "abdomen-pelvis",
                    "CHESTABDOMEN": "chest-abdomen", "CHESTABDPELVIS": "chest-abdomen-pelvis"}


def render_study(p: PatientPlan, s: StudyPlan, lesions: bool = True, noise: bool = True) -> np.ndarray:
    """The study's HU volume (slices head first, rows, cols) as float32, exactly as written."""
    rng = np.random.default_rng([abs(hash_int(p.uid_salt)), p.index, s.study_index, 7])
    shapes = [i.shape() for i in s.instances] if lesions else []
    return render_volume(p.anatomy, s.geometry, s.transform, s.contrast, shapes,
                         s.noise_hu if noise else 0.0, rng)


def hash_int(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def hu_to_stored(hu: np.ndarray, intercept: float, slope: float = 1.0, inplace: bool = False) -> np.ndarray:
    """HU → stored int16 values for ``RescaleIntercept``/``RescaleSlope`` (HU clipped to the
    12-bit CT range −1024…3071)."""
    v = hu if inplace else hu.astype(np.float32, copy=True)
    if intercept:
        v -= np.float32(intercept)
    if slope != 1.0:
        v /= np.float32(slope)
    np.rint(v, out=v)
    lo, hi = (-1024.0 - intercept) / slope, (3071.0 - intercept) / slope
    np.clip(v, max(math.ceil(lo), -32768), min(math.floor(hi), 32767), out=v)
    return v.astype(np.int16)


def write_study(out_dir: Path, p: PatientPlan, s: StudyPlan) -> int:
    """Render and write one study's series; returns the number of slices written."""
    stored = hu_to_stored(render_study(p, s), s.rescale_intercept, inplace=True)
    writer = SeriesWriter(series_dataset(p, s))
    d = out_dir / _series_dir(p, s)
    d.mkdir(parents=True, exist_ok=True)
    g = s.geometry
    for k in range(g.n_slices):
        sop = _uid(p.uid_salt, p.index, "sop", s.study_index, k)
        pos = (g.x0_mm, g.y0_mm, _r(g.z_first_mm - k * g.interval_mm, 4))
        (d / f"{k:04d}.dcm").write_bytes(writer.encode(sop, k + 1, pos, stored[k]))
    return g.n_slices


def _render_patient(args) -> tuple[int, int, list[str]]:
    out_dir, p = args
    slices, errors = 0, []
    for s in p.studies:
        try:
            slices += write_study(Path(out_dir), p, s)
        except Exception as exc:  # noqa: BLE001 - one bad study must not stop the cohort
            errors.append(f"{p.patient_id} study {s.study_index}: {type(exc).__name__}: {exc}")
    return len(p.studies), slices, errors


# ---------------------------------------------------------------------------------- driver
_OUTPUTS = ("cohort.json", "annotations.csv", "ground_truth.json")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder; pick a new folder", str(out))
    if out.is_dir() and any(out.iterdir()):
        ours = (out / "cohort.json").exists() or (out / "dicom").is_dir()
        if not overwrite:
            raise InputError("output folder is not empty; pick a new folder"
                             + (" or pass --force (overwrite=True) to replace the cohort there" if ours else ""),
                             str(out))
        if not ours:
            raise InputError("output folder is not empty and holds no lesiondb cohort; "
                             "refusing to overwrite it", str(out))
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "dicom", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def generate_cohort(out_dir: str | Path, n_patients: int | None = None, seed: int = 0,
                    images: bool = True, like: str | Path | None = None, *,
                    workers: int | None = None, withhold: tuple[float, float] = (0.3, 0.5),
                    max_studies: int = 6, image_size: int = 256,
                    type_probs: dict[int, float] | None = None, overwrite: bool = False,
                    progress: Progress | None = None) -> CohortSummary:
    """Write a synthetic cohort to ``out_dir`` (cohort folder contract, docs/architecture.md).

    ``images=False`` writes annotations and ground truth only. ``workers``: processes rendering
    studies (default: up to the CPU count, 1 for small cohorts); output does not depend on it.
    ``progress`` gets a bar counting the studies written (its total set after planning).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    plan = plan_cohort(n_patients, seed, like, withhold=withhold, max_studies=max_studies,
                       image_size=image_size, type_probs=type_probs,
                       workers=_n_workers(workers, 10**6))
    _prepare_out(out, overwrite)
    total = plan.n_studies
    errors: list[str] = []
    slices = 0
    done = 0
    b = bar(progress, "synth")
    b.set_total(total)
    if images:
        n_workers = _n_workers(workers, total)
        jobs = [(str(out), p) for p in plan.patients]
        if n_workers <= 1:
            results = map(_render_patient, jobs)
        else:

            ex = cf.ProcessPoolExecutor(n_workers, mp_context=_mp_context())
            results = ex.map(_render_patient, jobs, chunksize=max(1, len(jobs) // (8 * n_workers)))
        try:
            for n, sl, err in results:
                slices += sl
                errors += err
                done += n
                b.update(n)
        finally:
            if n_workers > 1:
                ex.shutdown()
    else:
        b.update(total)
    b.close()
    n_ann = write_annotations(plan, out / "annotations.csv")
    _write_text_atomic(out / "ground_truth.json", json.dumps(ground_truth(plan), separators=(",", ":")) + "\n")
    meta = cohort_meta(plan, images)
    if errors:
        meta["errors"] = errors
    _write_text_atomic(out / "cohort.json", json.dumps(meta, indent=1) + "\n")
    n_inst = meta["lesion_instances"]
    return CohortSummary(
        out_dir=str(out), seed=plan.seed, patients=len(plan.patients), studies=total,
        tracks=meta["tracks"], instances=n_inst, annotated=n_ann, withheld=n_inst - n_ann,
        images=bool(images), slices=slices, seconds=time.perf_counter() - t0,
        like=plan.like, like_rows_skipped=plan.like_rows_skipped, errors=errors,
        like_errors=plan.like_errors)


def _n_workers(workers: int | None, n_studies: int) -> int:
    if workers is not None:
        if int(workers) < 1:
            raise InputError(f"workers must be ≥ 1, got {workers}")
        return int(workers)
    if n_studies < 12:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))
