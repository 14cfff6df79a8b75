"""Missing-annotation mining maths (numpy; scipy to fit the ranking): which studies to search,
where, what to propose.

A *track* is one lesion followed over a patient's studies; its annotated instances are
:class:`Observation`. For a study of the patient without an annotation of the track, mining

1. decides whether the lesion should be visible there (:func:`candidate_studies`, rule below);
2. predicts its position (:func:`predict_position`): every observation's patient-mm position
   mapped into the study through a robust translation between the two studies
   (:func:`estimate_translation`: the median of the displacements of lesions matched in both
   studies, else the body geometry of the two volumes, :func:`body_translation`), the median over
   observations; normalised location when no geometry exists;
3. detects blob candidates in the study's HU volume around the prediction
   (:func:`detect_candidates`: multi-scale, scale-normalised Laplacian of Gaussian per slice over
   the slices near the prediction, polarity from the track's contrast, non-maximum suppression);
4. measures each candidate on its best slice the same way the track's lesions are measured
   (:func:`measure_blob`: region grown from the centre at the half-contrast level; mean HU,
   contrast, RECIST long/short axes from the region's 2D extent, :func:`recist_from_mask`);
5. scores candidates by similarity to the track (:func:`score_candidate`: distance to the
   prediction, size, mean HU, contrast, the pattern — NCC of the HU patch around the candidate
   with those around the track's annotated lesions, :func:`pattern_similarity` — and, when an
   encoder is available, embedding distance),
   reports each centre combined with the prediction by inverse variance (:func:`fuse_position`)
   and proposes the best one at or above ``min_score`` (:func:`mine_study`); the caller may
   demote look-alike anatomy first (:func:`anatomy_echo`: the same structure is in a study where
   the track's lesion is annotated, clear of the lesion).

Rule for "should be visible" (:func:`candidate_studies`), for a study S without an annotation of
the track, studies ordered by time:

- S lies between two annotated studies of the track: always (the lesion existed before and after);
- S comes after the last annotated study: unless the diameter, extrapolated linearly from the
  last two observations to S's time, falls below ``min_visible_mm`` even with the measurement
  noise margin of :func:`extrapolation_margin` (a lesion shrinking to zero has resolved); with
  one observation there is no trend and S is searched;
- S comes before the first annotated study: the same extrapolation backwards (a growing "new"
  lesion was smaller or absent before);
- and the study's scan covers the predicted position (z within its slice range, with a margin of
  ``cover_margin_mm``); studies whose coverage is unknown are searched.
- and no lesion already annotated in S (of another track: a matching miss) lies within the
  expected radius of the prediction (it is annotated, only not linked).

How much evidence a proposal in S needs (:func:`evidence_factor`, a factor on the score
threshold): less between two annotated studies (the lesion certainly exists), more before the
first observation (a "new" lesion may not exist yet), the plain threshold after the last.

Coordinates: ``Grid`` maps voxels (slice k, row r, col c) to patient mm for axial series:
``x = x0 + c * col_mm``, ``y = y0 + r * row_mm``, ``z = slice_z_mm[k]``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Vec3 = tuple[float, float, float]


# -- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """Voxel ↔ patient-mm mapping of an axial volume ``hu[slice, row, col]``."""

    slice_z_mm: np.ndarray  # (n_slices,) position of each slice along z, ascending or descending
    row_mm: float
    col_mm: float
    origin_xy_mm: tuple[float, float] = (0.0, 0.0)  # x, y of pixel (row 0, col 0)

    @property
    def slice_interval_mm(self) -> float:
        z = np.asarray(self.slice_z_mm, float)
        return float(np.median(np.abs(np.diff(z)))) if len(z) > 1 else 1.0

    def to_mm(self, k: float, r: float, c: float) -> Vec3:
        return (self.origin_xy_mm[0] + c * self.col_mm, self.origin_xy_mm[1] + r * self.row_mm,
                float(np.interp(k, np.arange(len(self.slice_z_mm)), self.slice_z_mm)))

    def to_voxel(self, p: Sequence[float]) -> tuple[float, float, float]:
        """(slice, row, col) — fractional; the slice by interpolation along z (clamped)."""
        z = np.asarray(self.slice_z_mm, float)
        idx = np.arange(len(z), dtype=float)
        order = np.argsort(z)
        k = float(np.interp(p[2], z[order], idx[order]))
        return (k, (p[1] - self.origin_xy_mm[1]) / self.row_mm, (p[0] - self.origin_xy_mm[0]) / self.col_mm)

    def z_range(self) -> tuple[float, float]:
        z = np.asarray(self.slice_z_mm, float)
        return float(z.min()), float(z.max())


@dataclass(frozen=True)
class Observation:
    """One annotated instance of a track."""

    lesion_id: str
    study_id: str
    time: float  # days (or study index) — only the order and the spacing matter
    long_diameter_mm: float
    short_diameter_mm: float = 0.0
    position_mm: Vec3 | None = None
    location: Vec3 | None = None  # normalised (x, y, z)
    slice_index: int | None = None
    center_px: tuple[float, float] | None = None  # (col, row)
    embedding: np.ndarray | None = None
    mean_hu: float | None = None  # filled by measure_reference
    contrast_hu: float | None = None
    band_hu: tuple[float, float] | None = None  # (centre HU, half-width) its region was grown with


@dataclass(frozen=True)
class StudyInfo:
    study_id: str
    time: float
    z_range_mm: tuple[float, float] | None = None
    annotated_mm: tuple[Vec3, ...] = ()  # centres of every lesion annotated in the study
    annotated_radius_mm: tuple[float, ...] = ()  # their radii (half the long diameter), same order


@dataclass(frozen=True)
class Candidate:
    slice_index: int
    row: float
    col: float
    position_mm: Vec3
    radius_mm: float
    response: float
    polarity: int  # +1 brighter than the surroundings, -1 darker
    mean_hu: float = float("nan")
    contrast_hu: float = float("nan")
    bbox_px: tuple[float, float, float, float] = (0, 0, 0, 0)  # x1, y1, x2, y2
    recist_long_px: tuple[float, float, float, float] = (0, 0, 0, 0)
    recist_short_px: tuple[float, float, float, float] = (0, 0, 0, 0)
    long_diameter_mm: float = 0.0
    short_diameter_mm: float = 0.0
    area_px: int = 0
    embedding: np.ndarray | None = None
    score: float = 0.0
    terms: dict = field(default_factory=dict)
    level: tuple[float, float] | None = None  # imposed HU band (centre, half-width), else found
    #: normalised cross-correlation of the HU patch around the candidate with the track's own
    #: lesion patches (:func:`pattern_similarity`); None when no reference patch exists
    pattern_ncc: float | None = None


@dataclass(frozen=True)
class Prediction:
    position_mm: Vec3
    sigma_mm: float  # expected error of the prediction
    method: str  # "matched-lesions", "body", "location", "identity"
    expected_long_mm: float
    reference: tuple[Observation, ...] = ()


# -- 1. which studies ----------------------------------------------------------------------------
def extrapolate_diameter(obs: Sequence[Observation], t: float) -> float | None:
    """Long diameter at time ``t`` extrapolated linearly from the two nearest observations on
    that side; ``None`` with a single observation (no trend)."""
    o = sorted(obs, key=lambda x: x.time)
    if len(o) < 2:
        return None
    a, b = (o[-2], o[-1]) if t >= o[-1].time else (o[0], o[1])
    if b.time == a.time:
        return None
    slope = (b.long_diameter_mm - a.long_diameter_mm) / (b.time - a.time)
    ref = b if t >= o[-1].time else a
    return ref.long_diameter_mm + slope * (t - ref.time)


def extrapolation_margin(obs: Sequence[Observation], t: float, rel_noise: float = 0.1,
                         min_noise_mm: float = 1.0) -> float:
    """How far (mm) the extrapolated diameter at ``t`` may be off through measurement noise alone:
    each RECIST diameter is uncertain by max(``min_noise_mm``, ``rel_noise`` · diameter), so the
    slope of two observations Δt apart by the two combined / Δt, carried over the time
    extrapolated, plus the reference observation's own uncertainty."""
    o = sorted(obs, key=lambda x: x.time)
    if len(o) < 2:
        return 0.0
    a, b = (o[-2], o[-1]) if t >= o[-1].time else (o[0], o[1])
    ref = b if t >= o[-1].time else a
    na, nb = (max(min_noise_mm, rel_noise * x.long_diameter_mm) for x in (a, b))
    n_ref = nb if ref is b else na
    dt = abs(b.time - a.time)
    if dt <= 0:
        return n_ref
    return n_ref + math.hypot(na, nb) * abs(t - ref.time) / dt


def should_be_visible(obs: Sequence[Observation], study: StudyInfo, min_visible_mm: float = 5.0) -> bool:
    """The temporal part of the rule (see the module docstring): a lesion is taken for resolved
    (or not yet there) only when its extrapolated diameter stays under ``min_visible_mm`` even
    allowing for the measurement noise of the observations it is extrapolated from."""
    times = sorted(o.time for o in obs)
    if any(o.study_id == study.study_id for o in obs):
        return False
    if times[0] < study.time < times[-1]:
        return True
    d = extrapolate_diameter(obs, study.time)
    # a lesion as small as radiologists annotated in this very track is visible to them
    floor = min(min_visible_mm, min(o.long_diameter_mm for o in obs))
    return d is None or d + extrapolation_margin(obs, study.time) >= floor


#: Factor on the score threshold for a study between two annotated studies of the track: the
#: lesion certainly existed there (seen before and after), only where it is and what it looks
#: like are uncertain.
BETWEEN_EVIDENCE = 0.7
#: Factor for a study before the first annotated study: whether the lesion existed yet is itself
#: unknown ("new" lesion), so a proposal needs stronger evidence than where existence is known.
NEW_LESION_EVIDENCE = 2.0


def evidence_factor(obs: Sequence[Observation], t: float) -> float:
    """How much evidence a proposal at time ``t`` needs, as a factor on the score threshold.

    ``BETWEEN_EVIDENCE`` strictly between the first and last observation (existence known);
    ``NEW_LESION_EVIDENCE`` before the first one (the lesion may be new there: a backward trend
    says how large it would have been, not whether it existed); 1 after the last one."""
    times = sorted(o.time for o in obs)
    if not times:
        return 1.0
    if times[0] < t < times[-1]:
        return BETWEEN_EVIDENCE
    if t < times[0]:
        return NEW_LESION_EVIDENCE
    return 1.0


def candidate_studies(obs: Sequence[Observation], studies: Sequence[StudyInfo],
                      predict: Callable[[StudyInfo], Prediction | None],
                      min_visible_mm: float = 5.0, cover_margin_mm: float = 2.0) -> list[tuple[StudyInfo, Prediction]]:
    """The studies to search for this track, each with its prediction (rule in the module doc)."""
    out = []
    for s in studies:
        if not should_be_visible(obs, s, min_visible_mm):
            continue
        pred = predict(s)
        if pred is None:
            continue
        if s.z_range_mm is not None:
            z0, z1 = sorted(s.z_range_mm)
            if not (z0 - cover_margin_mm <= pred.position_mm[2] <= z1 + cover_margin_mm):
                continue
        if any(_dist(pred.position_mm, a) <= 0.5 * r for a, r in annotated_with_radius(s, pred)):
            continue
        out.append((s, pred))
    return out


def annotated_with_radius(s: StudyInfo, pred: Prediction | None = None) -> list[tuple[Vec3, float]]:
    """(centre, radius) of the study's annotated lesions (radius unknown: the expected one, ≥ 3 mm)."""
    default = max((pred.expected_long_mm if pred else 10.0) / 2.0, 3.0)
    radii = list(s.annotated_radius_mm) + [default] * (len(s.annotated_mm) - len(s.annotated_radius_mm))
    return [(a, max(r, 3.0)) for a, r in zip(s.annotated_mm, radii, strict=True)]


# -- 2. alignment and prediction ------------------------------------------------------------------
def estimate_translation(src_mm: np.ndarray, dst_mm: np.ndarray, tol_mm: float = 10.0) -> tuple[np.ndarray, float] | None:
    """Robust translation ``dst ≈ src + t`` from matched points (n, 3): the coordinate-wise median,
    refined as the mean of the pairs within ``tol_mm`` of it. Returns (t, spread_mm) or None."""
    src = np.asarray(src_mm, float).reshape(-1, 3)
    dst = np.asarray(dst_mm, float).reshape(-1, 3)
    if len(src) == 0:
        return None
    d = dst - src
    t = np.median(d, axis=0)
    res = np.linalg.norm(d - t, axis=1)
    inl = res <= tol_mm
    if inl.sum() >= 2:
        t = d[inl].mean(axis=0)
        res = np.linalg.norm(d - t, axis=1)
    spread = float(np.median(res)) if len(src) > 1 else tol_mm / 2.0
    return t, spread


def estimate_alignment(src_mm: np.ndarray, dst_mm: np.ndarray, tol_mm: float = 10.0,
                       max_scale_dev: float = 0.06) -> tuple[float, np.ndarray, float] | None:
    """Robust ``dst ≈ s · src + t`` (isotropic scale, no rotation: patient size and breathing
    between scans) from ≥ 3 matched points; with fewer, or when the scale fit is not better than
    the translation, ``s = 1`` (:func:`estimate_translation`). Returns (s, t, spread_mm) or None."""
    src = np.asarray(src_mm, float).reshape(-1, 3)
    dst = np.asarray(dst_mm, float).reshape(-1, 3)
    tr = estimate_translation(src, dst, tol_mm)
    if tr is None:
        return None
    t0, spread0 = tr
    if len(src) < 3:
        return 1.0, t0, spread0
    inl = np.linalg.norm(dst - src - t0, axis=1) <= tol_mm
    if inl.sum() < 3:
        return 1.0, t0, spread0
    a, b = src[inl], dst[inl]
    am, bm = a.mean(axis=0), b.mean(axis=0)
    den = float(((a - am) ** 2).sum())
    if den <= 1e-6:
        return 1.0, t0, spread0
    sc = float(((a - am) * (b - bm)).sum()) / den
    if not abs(sc - 1.0) <= max_scale_dev:
        return 1.0, t0, spread0
    t = bm - sc * am
    res = np.linalg.norm(dst - (sc * src + t), axis=1)
    spread = float(np.median(res))
    if spread >= spread0:
        return 1.0, t0, spread0
    return sc, t, spread


def body_profile(hu: np.ndarray, body_hu: float = -500.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slice: body area (px), body centroid row and col (NaN on empty slices)."""
    body = hu > body_hu
    area = body.sum(axis=(1, 2)).astype(float)
    rows = np.arange(hu.shape[1], dtype=float)
    cols = np.arange(hu.shape[2], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        cr = (body.sum(axis=2) * rows).sum(axis=1) / area
        cc = (body.sum(axis=1) * cols).sum(axis=1) / area
    return area, cr, cc


def body_translation(hu_a: np.ndarray, grid_a: Grid, hu_b: np.ndarray, grid_b: Grid,
                     max_shift_mm: float = 60.0) -> np.ndarray:
    """Translation ``b ≈ a + t`` from body geometry: z from the best normalised cross-correlation of
    the two body-area profiles along z (resampled to 1 mm), x/y from the body centroids of the
    overlapping slices. Cheap and robust to lesions; only as good as the body's shape varies."""
    pa, ra, ca = body_profile(hu_a)
    pb, rb, cb = body_profile(hu_b)
    za, zb = np.asarray(grid_a.slice_z_mm, float), np.asarray(grid_b.slice_z_mm, float)
    step = 1.0
    ga = np.arange(za.min(), za.max() + step / 2, step)
    gb = np.arange(zb.min(), zb.max() + step / 2, step)
    oa, ob = np.argsort(za), np.argsort(zb)
    fa = np.interp(ga, za[oa], pa[oa])
    fb = np.interp(gb, zb[ob], pb[ob])
    best, best_t = -np.inf, 0.0
    # shift s (mm): b(z + s) ≈ a(z)
    for s in np.arange(-max_shift_mm, max_shift_mm + step / 2, step):
        zz = ga + s
        ok = (zz >= gb[0]) & (zz <= gb[-1])
        if ok.sum() < max(5, 0.3 * len(ga)):
            continue
        x = fa[ok]
        y = np.interp(zz[ok], gb, fb)
        x = x - x.mean()
        y = y - y.mean()
        den = math.sqrt(float((x * x).sum() * (y * y).sum()))
        if den <= 0:
            continue
        c = float((x * y).sum()) / den - 1e-4 * abs(s)  # prefer small shifts on flat profiles
        if c > best:
            best, best_t = c, float(s)
    tz = best_t if np.isfinite(best) else 0.0
    # in-plane: centroids of the slices that overlap after the z shift
    xa = grid_a.origin_xy_mm[0] + ca * grid_a.col_mm
    ya = grid_a.origin_xy_mm[1] + ra * grid_a.row_mm
    xb = np.interp(za + tz, zb[ob], (grid_b.origin_xy_mm[0] + cb * grid_b.col_mm)[ob])
    yb = np.interp(za + tz, zb[ob], (grid_b.origin_xy_mm[1] + rb * grid_b.row_mm)[ob])
    ok = np.isfinite(xa) & np.isfinite(xb) & (za + tz >= zb.min()) & (za + tz <= zb.max())
    if ok.sum() == 0:
        return np.array([0.0, 0.0, tz])
    return np.array([float(np.median(xb[ok] - xa[ok])), float(np.median(yb[ok] - ya[ok])), tz])


def expected_long_mm(obs: Sequence[Observation], t: float) -> float:
    """Diameter expected at time ``t``: linear interpolation between observations, the nearest
    observation outside their time span (extrapolation is too noisy to search by)."""
    o = sorted(obs, key=lambda x: x.time)
    ts = np.array([x.time for x in o], float)
    ds = np.array([x.long_diameter_mm for x in o], float)
    return float(np.interp(t, ts, ds))


def predict_position(obs: Sequence[Observation], target: StudyInfo,
                     translations: dict[str, tuple[np.ndarray, float, str]],
                     base_sigma_mm: float = 5.0) -> Prediction | None:
    """Predicted centre in ``target``: each observation's position mapped from its study to the
    target (``translations[study_id] = (t, spread_mm, method)`` or ``(scale, t, spread_mm, method)``:
    ``p' = scale · p + t``), median over observations. Observations without a mapping or a
    position are skipped."""
    pts, sig, methods, used = [], [], [], []
    for o in obs:
        if o.position_mm is None or o.study_id not in translations:
            continue
        m = translations[o.study_id]
        sc, t, spread, method = m if len(m) == 4 else (1.0, *m)
        pts.append(sc * np.asarray(o.position_mm, float) + t)
        # the centre of a big lesion is less sharply defined (and grows unevenly)
        sig.append(math.sqrt(base_sigma_mm ** 2 + spread ** 2 + (0.15 * o.long_diameter_mm) ** 2))
        methods.append(method)
        used.append(o)
    if not pts:
        return None
    p = np.median(np.array(pts), axis=0)
    # prefer the best-aligned method in the label
    method = "matched-lesions" if "matched-lesions" in methods else methods[0]
    return Prediction(tuple(float(v) for v in p), float(min(sig)), method,
                      expected_long_mm(obs, target.time), tuple(used))


def location_to_position(location: Vec3, body_box_mm: tuple[Vec3, Vec3]) -> Vec3:
    """Normalised location → mm inside a body bounding box (min corner, max corner): the fallback
    when a study has no geometry linking it to the others."""
    lo, hi = np.asarray(body_box_mm[0], float), np.asarray(body_box_mm[1], float)
    return tuple(float(v) for v in lo + np.asarray(location, float) * (hi - lo))


# -- 3. blob detection ----------------------------------------------------------------------------
def _kernel_matrix(n: int, sigma: float, order: int) -> np.ndarray:
    """(n, n) matrix applying a 1-D Gaussian (order 0) or its 2nd derivative (order 2), reflect
    boundary, so that ``K @ x`` filters along the first axis (cached: the sizes repeat)."""
    return _kernel_matrix_cached(int(n), round(float(sigma), 3), int(order))


@functools.lru_cache(maxsize=256)
def _kernel_matrix_cached(n: int, sigma: float, order: int) -> np.ndarray:
    rad = max(1, int(math.ceil(3.5 * sigma)))
    x = np.arange(-rad, rad + 1, dtype=float)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    if order == 2:
        k = g * (x * x - sigma * sigma) / sigma ** 4
        k -= k.mean()  # zero response to a constant
    else:
        k = g
    m = np.zeros((n, n))
    idx = np.arange(n)
    for off, w in zip(x.astype(int), k, strict=True):
        j = idx + off
        j = np.where(j < 0, -j - 1, j)
        j = np.where(j >= n, 2 * n - j - 1, j)
        j = np.clip(j, 0, n - 1)
        np.add.at(m, (idx, j), w)
    return m


def log_stack(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Scale-normalised Laplacian of Gaussian σ²(Lxx + Lyy) of each slice of ``img`` (s, h, w)."""
    s, h, w = img.shape
    gh, gw = _kernel_matrix(h, sigma_px, 0), _kernel_matrix(w, sigma_px, 0)
    dh, dw = _kernel_matrix(h, sigma_px, 2), _kernel_matrix(w, sigma_px, 2)
    # separable: Lyy = Dh · I · Gwᵀ, Lxx = Gh · I · Dwᵀ (BLAS matmuls over the slice stack)
    lyy = np.matmul(np.matmul(dh, img), gw.T)
    lxx = np.matmul(np.matmul(gh, img), dw.T)
    return sigma_px ** 2 * (lxx + lyy)


def _local_max(a: np.ndarray) -> np.ndarray:
    """3x3 local maxima (per slice) of a (s, h, w) array, borders excluded."""
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)), mode="constant", constant_values=-np.inf)
    m = np.ones(a.shape, bool)
    h, w = a.shape[1:]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            m &= a >= p[:, dy:dy + h, dx:dx + w]
    m[:, 0, :] = m[:, -1, :] = False
    m[:, :, 0] = m[:, :, -1] = False
    return m


def detect_candidates(hu: np.ndarray, grid: Grid, center_mm: Vec3, expected_long_mm: float,
                      search_mm: float = 20.0, z_search_mm: float | None = None,
                      polarity: int = 0, max_candidates: int = 8,
                      hu_clip: tuple[float, float] = (-1000.0, 1000.0)) -> list[Candidate]:
    """Blob candidates near ``center_mm``: multi-scale LoG on the slices within ``z_search_mm``
    (default: max(expected radius, 1.5 slices, 6 mm)) and an in-plane window of ``search_mm`` around the
    prediction. ``polarity`` +1 finds bright blobs, -1 dark ones, 0 both. Returns up to
    ``max_candidates`` after non-maximum suppression, strongest first (not yet measured)."""
    n_s, n_r, n_c = hu.shape
    k0, r0, c0 = grid.to_voxel(center_mm)
    radius_mm = max(expected_long_mm / 2.0, 1.5)
    if z_search_mm is None:
        z_search_mm = max(radius_mm, 1.5 * grid.slice_interval_mm, 6.0)
    z = np.asarray(grid.slice_z_mm, float)
    ks = np.where(np.abs(z - center_mm[2]) <= z_search_mm)[0]
    if len(ks) == 0:
        ks = np.array([int(np.clip(round(k0), 0, n_s - 1))])
    # big lesions on thin slices: every slice is not needed to find the blob (a third of a radius)
    kstep = max(1, int(0.35 * radius_mm / max(grid.slice_interval_mm, 1e-6)))
    if kstep > 1:
        kc = int(np.argmin(np.abs(z[ks] - center_mm[2])))
        ks = np.concatenate([ks[kc::-kstep][::-1], ks[kc + kstep::kstep]])
    px_mm = math.sqrt(grid.row_mm * grid.col_mm)
    radii = radius_mm * np.array([0.55, 0.75, 1.0, 1.35])
    radii = np.unique(np.maximum(radii, 1.5 * px_mm))
    # work at a pixel size where the smallest filter still spans ≥ 1.5 px (block averaging)
    f = max(1, int(radii.min() / math.sqrt(2.0) / px_mm / 1.5))
    half_r = int(math.ceil((search_mm + 2.5 * radius_mm) / grid.row_mm / f)) * f
    half_c = int(math.ceil((search_mm + 2.5 * radius_mm) / grid.col_mm / f)) * f
    ra, rb = max(0, int(round(r0)) - half_r), min(n_r, int(round(r0)) + half_r + f)
    ca, cb = max(0, int(round(c0)) - half_c), min(n_c, int(round(c0)) + half_c + f)
    rb -= (rb - ra) % f
    cb -= (cb - ca) % f
    if (rb - ra) // f < 5 or (cb - ca) // f < 5:
        return []
    crop = np.clip(hu[ks, ra:rb, ca:cb].astype(np.float64), *hu_clip)
    if f > 1:
        crop = crop.reshape(len(ks), (rb - ra) // f, f, (cb - ca) // f, f).mean(axis=(2, 4))
    work_mm = px_mm * f
    best = np.full(crop.shape, -np.inf)
    best_r = np.zeros(crop.shape)
    best_pol = np.zeros(crop.shape, int)
    for rad in radii:
        L = log_stack(crop, rad / work_mm / math.sqrt(2.0))
        for pol in ((1, -1) if polarity == 0 else (polarity,)):
            resp = -pol * L  # bright blob → negative LoG
            upd = resp > best
            best = np.where(upd, resp, best)
            best_r = np.where(upd, rad, best_r)
            best_pol = np.where(upd, pol, best_pol)
    # only peaks inside the search window (the margin exists for the filters' support)
    rr, cc = np.mgrid[0:crop.shape[1], 0:crop.shape[2]]
    rr = ra + (rr + 0.5) * f - 0.5  # centre of each work pixel in source pixels
    cc = ca + (cc + 0.5) * f - 0.5
    inside = ((rr - r0) * grid.row_mm) ** 2 + ((cc - c0) * grid.col_mm) ** 2 <= search_mm ** 2
    peaks = _local_max(best) & inside[None] & (best > 0)
    idx = np.argwhere(peaks)
    if len(idx) == 0:
        return []
    vals = best[peaks]
    order = np.argsort(-vals)
    kept: list[Candidate] = []
    for i in order:
        s, r, c = idx[i]
        row, col = float(rr[r, c]), float(cc[r, c])
        pos = grid.to_mm(int(ks[s]), row, col)
        rad = float(best_r[s, r, c])
        # one blob seen on several slices, or at neighbouring pixels: keep the strongest
        if any(math.hypot(pos[0] - q.position_mm[0], pos[1] - q.position_mm[1]) < 0.75 * max(rad, q.radius_mm)
               and abs(pos[2] - q.position_mm[2]) <= 2.0 * max(rad, q.radius_mm) + grid.slice_interval_mm
               for q in kept):
            continue
        kept.append(Candidate(int(ks[s]), row, col, pos, rad, float(vals[i]), int(best_pol[s, r, c])))
        if len(kept) >= max_candidates:
            break
    return kept


# -- 4. measurement -------------------------------------------------------------------------------
def _flood(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of ``mask`` containing ``seed`` (empty when the seed is off)."""
    out = np.zeros_like(mask, bool)
    if not mask[seed]:
        return out
    out[seed] = True
    frontier = out.copy()
    while frontier.any():
        grown = frontier.copy()
        grown[1:, :] |= frontier[:-1, :]
        grown[:-1, :] |= frontier[1:, :]
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        new = grown & mask & ~out
        out |= new
        frontier = new
    return out


def recist_from_mask(mask: np.ndarray, row_mm: float = 1.0, col_mm: float = 1.0
                     ) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float], float, float]:
    """RECIST estimate from a 2D region: the long axis is the longest chord between region pixels
    (mm), the short axis the longest extent perpendicular to it. Returns
    ``(long_px (x1, y1, x2, y2), short_px (x3, y3, x4, y4), long_mm, short_mm)``."""
    pts = np.argwhere(mask)
    if len(pts) == 0:
        z = (0.0, 0.0, 0.0, 0.0)
        return z, z, 0.0, 0.0
    # boundary pixels suffice for the longest chord
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    b = np.argwhere(mask & ~inner)
    if len(b) > 400:
        b = b[np.linspace(0, len(b) - 1, 400).astype(int)]
    mm = b * np.array([row_mm, col_mm])
    d2 = ((mm[:, None, :] - mm[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    pa, pb = b[i].astype(float), b[j].astype(float)
    # extend to the pixel edges: a region of n pixels spans n pixel widths
    u_mm = (pb - pa) * np.array([row_mm, col_mm])
    long_mm = float(np.linalg.norm(u_mm))
    if long_mm == 0:
        long_mm = float(min(row_mm, col_mm))
        u = np.array([0.0, 1.0])
    else:
        u = u_mm / long_mm
        long_mm += abs(u[0]) * row_mm + abs(u[1]) * col_mm  # the half pixel at each end
    v = np.array([-u[1], u[0]])
    all_mm = pts * np.array([row_mm, col_mm])
    a0 = pa * np.array([row_mm, col_mm])
    along = (all_mm - a0) @ u
    perp = (all_mm - a0) @ v
    step = min(row_mm, col_mm)
    bins = np.round(along / step).astype(int)
    short_mm, s_ends = 0.0, None
    for bval in np.unique(bins):
        sel = bins == bval
        lo, hi = perp[sel].min(), perp[sel].max()
        if hi - lo > short_mm or s_ends is None:
            short_mm = float(hi - lo)
            s_ends = (bval * step, lo, hi)
    short_mm += abs(v[0]) * row_mm + abs(v[1]) * col_mm
    t, lo, hi = s_ends
    q1 = a0 + t * u + lo * v
    q2 = a0 + t * u + hi * v
    q1 = q1 / np.array([row_mm, col_mm])
    q2 = q2 / np.array([row_mm, col_mm])
    long_px = (float(pa[1]), float(pa[0]), float(pb[1]), float(pb[0]))
    short_px = (float(q1[1]), float(q1[0]), float(q2[1]), float(q2[0]))
    return long_px, short_px, long_mm, min(short_mm, long_mm)


def measure_blob(img: np.ndarray, row: float, col: float, radius_px: float, polarity: int = 0,
                 row_mm: float = 1.0, col_mm: float = 1.0, level: tuple[float, float] | None = None) -> dict | None:
    """Measure the blob centred near (row, col) on one slice.

    The region is grown from the centre over the pixels whose (3×3 smoothed) HU lies within a band
    around the centre's HU, limited to 2.5 radii. The band's half-width is half the HU difference
    to the *nearest* surroundings (the 40th percentile of the ring's differences), 15–200 HU:
    a lymph node between lung and fat stops at the fat, a nodule in lung at the lung, a hypodense
    liver lesion at the liver. ``level = (centre HU, half-width)`` imposes the band (used on the
    neighbouring slices). ``polarity`` 0 takes the sign of centre − ring median. Returns mean HU,
    contrast, box, RECIST, area and the band used (``level``)."""
    h, w = img.shape
    R = int(math.ceil(3.0 * radius_px)) + 2
    r0, c0 = int(round(row)), int(round(col))
    ra, rb, ca, cb = max(0, r0 - R), min(h, r0 + R + 1), max(0, c0 - R), min(w, c0 + R + 1)
    sub = img[ra:rb, ca:cb].astype(np.float64)
    if sub.size == 0 or not (0 <= r0 < h and 0 <= c0 < w):
        return None
    # light smoothing (3x3 box) against noise before thresholding
    p = np.pad(sub, 1, mode="edge")
    sm = sum(p[dy:dy + sub.shape[0], dx:dx + sub.shape[1]] for dy in range(3) for dx in range(3)) / 9.0
    yy, xx = np.mgrid[ra:rb, ca:cb]
    dist = np.hypot(yy - row, xx - col)
    core = dist <= max(1.0, 0.5 * radius_px)
    # the surroundings: a ring just outside the blob (1.6–2.4 radii for small blobs; for big ones
    # no farther than 8–18 mm beyond the edge, or it samples other organs, even air)
    px_mm = math.sqrt(row_mm * col_mm)
    ring_in = radius_px + min(0.6 * radius_px, max(8.0 / px_mm, 2.0))
    ring_out = ring_in + min(0.8 * radius_px, max(10.0 / px_mm, 3.0))
    ring = (dist >= ring_in) & (dist <= ring_out)
    if core.sum() == 0 or ring.sum() < 4:
        return None
    b_val = float(np.median(sm[ring]))
    if level is None:
        c_val = float(np.median(sm[core]))
        near = float(np.percentile(np.abs(sm[ring] - c_val), 40))
        h0 = float(np.clip(0.5 * near, 15.0, 200.0))
        halves = [h0]
        while halves[-1] > 15.0:  # narrower bands, tried in turn while the region leaks
            halves.append(max(15.0, halves[-1] / 2.0))
        # wider bands, tried last, for a noisy or partial-volume lesion that came out as a speck
        halves += [h for h in (1.5 * h0, 2.0 * h0, 3.0 * h0) if h <= 200.0]
    else:
        c_val, halves = float(level[0]), [float(level[1])]
    contrast = c_val - b_val
    pol = polarity if polarity else (1 if contrast >= 0 else -1)
    seed0 = (int(np.clip(r0 - ra, 0, sub.shape[0] - 1)), int(np.clip(c0 - ca, 0, sub.shape[1] - 1)))
    reg = None
    fallback = leaked = None
    for half in halves:
        m = (np.abs(sm - c_val) <= half) & (dist <= 2.5 * radius_px)
        seed = seed0
        if not m[seed]:
            # the centre pixel may sit on noise: start from the nearest core pixel in the band
            cand = np.argwhere(core & m)
            if len(cand) == 0:
                continue
            seed = tuple(cand[np.argmin(np.hypot(cand[:, 0] - seed[0], cand[:, 1] - seed[1]))])
        reg = _flood(m, seed)
        ys, xs = np.nonzero(reg)
        extent = max(np.ptp(ys), np.ptp(xs)) + 1
        # a region much wider than the blob has leaked into a neighbour of similar HU; one much
        # narrower is a speck of noise: keep looking, remembering the first that did not leak
        if level is not None:  # an imposed band (neighbour slices): the 2.5-radius disc bounds it
            break
        if extent <= 3.0 * radius_px:
            if extent >= 0.8 * radius_px:
                break
            if fallback is None:
                fallback = (reg, half)
        if leaked is None or half < leaked[2]:
            leaked = (m, seed, half)
        reg = None
    if reg is None and fallback is not None:
        reg, half = fallback
    if reg is None and leaked is not None:
        # every band leaked (a lesion touching tissue of its own HU): cut the narrowest band's
        # region at 1.5 radii, where a blob of the detected scale ends
        m, seed, half = leaked
        reg = _flood(m & (dist <= 1.5 * radius_px), seed)
    if reg is None or reg.sum() == 0:
        return None
    thr = (c_val, half)
    long_px, short_px, long_mm, short_mm = recist_from_mask(reg, row_mm, col_mm)
    ys, xs = np.nonzero(reg)
    shift = np.array([ca, ra, ca, ra], float)
    return {
        "mean_hu": float(sub[reg].mean()),
        "contrast_hu": float(sub[reg].mean() - b_val),
        "polarity": pol,
        "area_px": int(reg.sum()),
        "center_rc": (float(ys.mean() + ra), float(xs.mean() + ca)),
        "bbox_px": (float(xs.min() + ca), float(ys.min() + ra), float(xs.max() + ca), float(ys.max() + ra)),
        "recist_long_px": tuple(float(v) for v in np.array(long_px) + shift),
        "recist_short_px": tuple(float(v) for v in np.array(short_px) + shift),
        "long_diameter_mm": long_mm,
        "short_diameter_mm": short_mm,
        "level": thr,
    }


def measure_candidate(hu: np.ndarray, grid: Grid, cand: Candidate, neighbours: bool = True) -> Candidate | None:
    """Measure ``cand`` on the slice (its own or, with ``neighbours``, any within a lesion radius)
    where its region is largest — RECIST's key slice — and move its centre to the region's centroid."""
    best = None
    rad_px = cand.radius_mm / math.sqrt(grid.row_mm * grid.col_mm)
    # the level found on the candidate's own slice measures the neighbours too: partial-volume
    # slices then come out smaller, as they are, instead of as blurred, larger regions
    own = measure_blob(hu[cand.slice_index], cand.row, cand.col, rad_px, cand.polarity, grid.row_mm, grid.col_mm,
                       cand.level)
    level = own["level"] if own is not None else None
    if neighbours:
        # scale-normalised LoG answers about equally on every slice through a sphere: the key
        # slice is the one with the largest region among those within a lesion radius
        z = np.asarray(grid.slice_z_mm, float)
        reach = max(1.2 * cand.radius_mm, 1.01 * grid.slice_interval_mm)
        ks = np.nonzero(np.abs(z - z[cand.slice_index]) <= reach)[0]
        if len(ks) > 7:  # thin slices through a big lesion: every other one (or sparser) suffices
            step = int(math.ceil(len(ks) / 7))
            ks = np.unique(np.concatenate([ks[::step], [cand.slice_index]]))
        ks = tuple(int(k) for k in ks)
    else:
        ks = (cand.slice_index,)
    found = []
    for k in ks:
        if not 0 <= k < hu.shape[0]:
            continue
        if k == cand.slice_index:
            m = own
        elif level is None:
            continue
        else:
            m = measure_blob(hu[k], cand.row, cand.col, rad_px, cand.polarity, grid.row_mm, grid.col_mm, level)
        if m is None or m["polarity"] != cand.polarity:
            continue
        # a region that fills the whole search disc is background, not a blob
        if m["long_diameter_mm"] > 4.8 * cand.radius_mm:
            continue
        if k != cand.slice_index and own is not None:
            # on a neighbouring slice the region may have merged with a structure that slice cuts
            # (a nodule's edge slice touching a vessel): its centre then jumps away from the own
            # slice's — not the same blob, and no key slice
            orr, occ = own["center_rc"]
            shift_mm = math.hypot((m["center_rc"][0] - orr) * grid.row_mm, (m["center_rc"][1] - occ) * grid.col_mm)
            if shift_mm > max(0.5 * own["long_diameter_mm"] / 2.0, 0.5 * cand.radius_mm, 1.5 * grid.row_mm):
                continue
        key = m["area_px"] * (1.0 if k == cand.slice_index else 0.999)
        found.append((k, m))
        if best is None or key > best[0]:
            best = (key, k, m)
    if best is None:
        return None
    _, k, m = best
    r, c = m["center_rc"]
    pos = grid.to_mm(k, r, c)
    if len(found) > 1:
        # the centre along z: the area-weighted mean of the slices through the same region
        # (slices are thick next to small lesions: the key slice alone is up to half a slice off)
        lim = max(0.5 * m["long_diameter_mm"] / 2.0, 1.0)
        same = [(kk, mm["area_px"]) for kk, mm in found
                if math.hypot((mm["center_rc"][0] - r) * grid.row_mm, (mm["center_rc"][1] - c) * grid.col_mm) <= lim]
        w = np.array([a for _, a in same], float)
        zs = np.array([grid.slice_z_mm[kk] for kk, _ in same], float)
        pos = (pos[0], pos[1], float((w * zs).sum() / w.sum()))
    return replace(cand, slice_index=k, row=r, col=c, position_mm=pos,
                   mean_hu=m["mean_hu"], contrast_hu=m["contrast_hu"], bbox_px=m["bbox_px"],
                   recist_long_px=m["recist_long_px"], recist_short_px=m["recist_short_px"],
                   long_diameter_mm=m["long_diameter_mm"], short_diameter_mm=m["short_diameter_mm"],
                   area_px=m["area_px"])


def measure_reference(hu: np.ndarray, grid: Grid, obs: Observation) -> Observation:
    """Measure an annotated lesion the way candidates are measured (mean HU, contrast)."""
    if obs.slice_index is None or obs.center_px is None or not 0 <= obs.slice_index < hu.shape[0]:
        return obs
    rad_px = max(obs.long_diameter_mm / 2.0, 1.5) / math.sqrt(grid.row_mm * grid.col_mm)
    m = measure_blob(hu[obs.slice_index], obs.center_px[1], obs.center_px[0], rad_px, 0,
                     grid.row_mm, grid.col_mm)
    if m is None:
        return obs
    return replace(obs, mean_hu=m["mean_hu"], contrast_hu=m["contrast_hu"], band_hu=m["level"])


# -- 5. scoring -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreParams:
    """Tolerances of the score terms (each term is a squared z-score; score = exp(-Σ/2))."""

    size_log_tol: float = 0.45  # |log(diameter ratio)|
    hu_tol: float = 35.0  # mean HU difference
    hu_rel_tol: float = 0.25  # ... or this fraction of the reference contrast, if larger
    contrast_rel_tol: float = 0.5  # contrast difference relative to the reference contrast
    contrast_min_tol: float = 25.0
    embedding_tol: float = 1.0  # Euclidean distance of unit embeddings
    #: 1 − NCC of the candidate's HU patch with the track's lesion patches (:func:`pattern_similarity`)
    pattern_tol: float = 0.5
    min_long_mm: float = 3.0
    #: the reported centre combines the measured centre with the prediction, each weighted by the
    #: inverse of its variance (:func:`fuse_position`)
    fuse: bool = True


def reference_stats(obs: Sequence[Observation]) -> dict:
    def med(vals):
        v = [x for x in vals if x is not None and np.isfinite(x)]
        return float(np.median(v)) if v else None

    embs = [o.embedding for o in obs if o.embedding is not None]
    emb = None
    if embs:
        emb = np.mean(np.asarray(embs, float), axis=0)
        n = np.linalg.norm(emb)
        emb = emb / n if n > 0 else None
    bands = [o.band_hu for o in obs if o.band_hu is not None]
    band = (float(np.median([b[0] for b in bands])), float(np.median([b[1] for b in bands]))) if bands else None
    return {"mean_hu": med(o.mean_hu for o in obs), "contrast_hu": med(o.contrast_hu for o in obs),
            "embedding": emb, "band": band}


def score_candidate(c: Candidate, pred: Prediction, ref: dict, p: ScoreParams = ScoreParams()) -> Candidate:
    """Similarity of a measured candidate to the track, in (0, 1]: exp(-½ Σ z²) over position,
    size, mean HU, contrast, pattern (1 − NCC) and embedding distance (terms without data are
    left out)."""
    terms = {}
    terms["position"] = (_dist(c.position_mm, pred.position_mm) / max(pred.sigma_mm, 1.0)) ** 2
    if c.long_diameter_mm < p.min_long_mm:
        terms["size"] = 25.0
    else:
        terms["size"] = (math.log(c.long_diameter_mm / max(pred.expected_long_mm, p.min_long_mm)) / p.size_log_tol) ** 2
    if ref.get("mean_hu") is not None and np.isfinite(c.mean_hu):
        # the mean HU of a high-contrast lesion depends on partial volume: tolerance grows with it
        rel = p.hu_rel_tol * (2.0 if pred.expected_long_mm < 10.0 else 1.0)  # small: partial volume
        tol = max(p.hu_tol, rel * abs(ref.get("contrast_hu") or 0.0))
        terms["hu"] = ((c.mean_hu - ref["mean_hu"]) / tol) ** 2
    if ref.get("contrast_hu") is not None and np.isfinite(c.contrast_hu):
        tol = max(p.contrast_min_tol, p.contrast_rel_tol * abs(ref["contrast_hu"]))
        terms["contrast"] = ((c.contrast_hu - ref["contrast_hu"]) / tol) ** 2
    if ref.get("embedding") is not None and c.embedding is not None:
        terms["embedding"] = (float(np.linalg.norm(np.asarray(c.embedding) - ref["embedding"])) / p.embedding_tol) ** 2
    if c.pattern_ncc is not None:
        terms["pattern"] = ((1.0 - c.pattern_ncc) / p.pattern_tol) ** 2
    score = math.exp(-0.5 * sum(terms.values()))
    return replace(c, score=score, terms={k: round(v, 4) for k, v in terms.items()})


#: Terms whose ranking weight :func:`fit_rank_weights` learns (a term without a weight counts 1).
RANK_TERMS = ("position", "size", "hu", "contrast", "pattern", "embedding", "anatomy")


def rank_value(c: Candidate, weights: dict[str, float] | None = None) -> float:
    """Σ w_k · term_k of a scored candidate: its rank within its study, smallest first. Without
    weights, −score (the score's own order: every term counts 1).

    Ranking (which candidate of a study is the track's lesion) and the decision (is it there at
    all: the candidate's score against the threshold) are separate questions: within one study
    the look-alikes near the prediction tend to match the lesion's size and HU as well as the
    lesion does, so those terms tell less there than where and in what surroundings a candidate
    lies (:func:`fit_rank_weights` measures this per cohort)."""
    if not weights:
        return -c.score
    return float(sum(weights.get(k, 1.0) * v for k, v in c.terms.items()))


def fit_rank_weights(choice_sets: Sequence[tuple[Sequence[dict], Sequence[bool]]], prior: float = 1.0,
                     terms: Sequence[str] = RANK_TERMS, min_sets: int = 20) -> dict[str, float] | None:
    """Ranking weights from studies where the right candidate is known (leave-one-observation-out
    mining of the cohort's own tracks: :func:`lesiondb.mining.run.calibrate_ranking`).

    Conditional logit: P(candidate j is the lesion | its study's candidates) ∝ exp(−½ Σ_k w_k t_jk)
    over each study's candidates' terms t, with w_k = exp(θ_k) and a Gaussian prior θ_k ~ N(0,
    1 / ``prior``) that keeps a term with little evidence at weight 1. ``choice_sets`` are
    (terms of each candidate, right flags); sets without a right candidate or with a single
    candidate tell nothing and are skipped. Returns None with fewer than ``min_sets`` usable sets."""
    from scipy.optimize import minimize  # 0.7 s to import: only when a ranking is fitted

    sets = []
    for cand_terms, right in choice_sets:
        y = np.asarray(right, float)
        if len(y) < 2 or y.sum() == 0:
            continue
        X = np.array([[float(t.get(k, 0.0)) for k in terms] for t in cand_terms])
        sets.append((X, y / y.sum()))
    if len(sets) < min_sets:
        return None
    used = np.array([any(np.ptp(X[:, i]) > 0 for X, _ in sets) for i in range(len(terms))])

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(theta)
        f = 0.5 * prior * float(theta @ theta)
        g = prior * theta
        for X, y in sets:
            u = -0.5 * (X @ w)
            u -= u.max()
            p = np.exp(u)
            p /= p.sum()
            f -= float(y @ np.log(p + 1e-300))
            g = g + 0.5 * (y @ X - p @ X) * w
        return f, g

    res = minimize(nll, np.zeros(len(terms)), jac=True, method="L-BFGS-B")
    w = np.where(used, np.exp(res.x), 1.0)
    return {k: round(float(v), 4) for k, v in zip(terms, w, strict=True)}


#: Samples per side of a pattern patch, and the HU window it is compared in, ± around the
#: lesion's own HU (a soft-tissue lesion: fat to contrast-enhanced vessels; a ground-glass
#: nodule: lung to soft tissue — a fixed soft-tissue window would flatten a lung patch to a
#: constant and tell nothing).
PATTERN_SAMPLES = 21
PATTERN_WINDOW_HU = 400.0
PATTERN_CLIP_HU = (-PATTERN_WINDOW_HU, PATTERN_WINDOW_HU)
#: Half-width of a pattern patch in lesion radii: the lesion and the anatomy around it.
PATTERN_HALF_RADII = 2.5
#: Add the best template-match position of each lesion patch as a candidate (:func:`template_match`).
TEMPLATE_SEARCH = True


def sample_patch(hu: np.ndarray, grid: Grid, k: int, row: float, col: float, half_mm: float,
                 n: int = PATTERN_SAMPLES, clip_hu: tuple[float, float] = PATTERN_CLIP_HU) -> np.ndarray:
    """``n`` × ``n`` bilinear samples of slice ``k`` on a square mm grid ±``half_mm`` around
    (row, col), HU clipped to ``clip_hu`` (edges clamp): studies of different pixel sizes
    compare sample for sample."""
    img = hu[int(np.clip(k, 0, hu.shape[0] - 1))]
    off = np.linspace(-half_mm, half_mm, n)
    rr = row + off[:, None] / grid.row_mm + np.zeros((1, n))
    cc = col + off[None, :] / grid.col_mm + np.zeros((n, 1))
    return np.clip(_sample_grid(img, rr, cc).astype(np.float64), *clip_hu)


def pattern_template(hu: np.ndarray, grid: Grid, obs: Observation, expected_long_mm: float
                     ) -> tuple[np.ndarray, float, tuple[float, float]] | None:
    """(patch, half_mm, HU window) of an annotated lesion on its own key slice: the lesion and
    its surroundings, ``PATTERN_HALF_RADII`` radii (of the larger of its and the expected
    diameter, ≥ 3 mm) either side, in a window of ± ``PATTERN_WINDOW_HU`` around the lesion's
    centre HU; None without a key slice and centre, or when the patch is flat in that window."""
    if obs.slice_index is None or obs.center_px is None or not 0 <= obs.slice_index < hu.shape[0]:
        return None
    half = PATTERN_HALF_RADII * max(max(obs.long_diameter_mm, expected_long_mm) / 2.0, 3.0)
    raw = sample_patch(hu, grid, obs.slice_index, obs.center_px[1], obs.center_px[0], half,
                       clip_hu=(-3000.0, 3000.0))
    n = raw.shape[0]
    centre = float(np.median(raw[n // 2 - 1:n // 2 + 2, n // 2 - 1:n // 2 + 2]))
    window = (centre - PATTERN_WINDOW_HU, centre + PATTERN_WINDOW_HU)
    patch = np.clip(raw, *window)
    if float(patch.std()) < 1.0:
        return None
    return patch, half, window


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation; 0 when either patch is flat (nothing to correlate)."""
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float((da * da).sum() * (db * db).sum()))
    return float((da * db).sum() / den) if den > 1e-6 else 0.0


def pattern_similarity(hu: np.ndarray, grid: Grid, c: Candidate,
                       templates: Sequence[tuple[np.ndarray, float, tuple[float, float]]]) -> float | None:
    """Best normalised cross-correlation of the candidate's patch (its key slice, centred on it)
    with the track's lesion patches (:func:`pattern_template`). The same lesion in another study
    correlates with its own patch — its shape, its inside, the organ around it — where a look-alike
    next to it, or the place where a lesion does not exist yet, does not (development seeds
    9601–9604: median 0.86 for right candidates against 0.26–0.27 for wrong ones)."""
    if not templates:
        return None
    return max(_ncc(t, sample_patch(hu, grid, c.slice_index, c.row, c.col, half, clip_hu=window))
               for t, half, window in templates)


def _sample_grid(img: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at (rr, cc) (fractional pixel indices; edges clamp)."""
    h, w = img.shape
    rr = np.clip(rr, 0, h - 1.001)
    cc = np.clip(cc, 0, w - 1.001)
    r0, c0 = np.floor(rr).astype(int), np.floor(cc).astype(int)
    fr, fc = rr - r0, cc - c0
    return (img[r0, c0] * (1 - fr) * (1 - fc) + img[r0 + 1, c0] * fr * (1 - fc)
            + img[r0, c0 + 1] * (1 - fr) * fc + img[r0 + 1, c0 + 1] * fr * fc)


def template_match(hu: np.ndarray, grid: Grid, center_mm: Vec3,
                   templates: Sequence[tuple[np.ndarray, float, tuple[float, float]]],
                   search_mm: float, z_search_mm: float, max_slices: int = 7) -> list[tuple[float, int, float, float]]:
    """Where each of the track's lesion patches (:func:`pattern_template`) correlates best with
    the study near ``center_mm``: (NCC, slice, row, col) per template, over the slices within
    ``z_search_mm`` (at most ``max_slices``) and centres within ``search_mm`` in-plane. A lesion
    whose region leaks into a neighbour of its own HU gives no clean blob, but its patch — the
    lesion in its surroundings — still matches where it is."""
    z = np.asarray(grid.slice_z_mm, float)
    k0, r0, c0 = grid.to_voxel(center_mm)
    ks = np.where(np.abs(z - center_mm[2]) <= z_search_mm)[0]
    if len(ks) == 0:
        ks = np.array([int(np.clip(round(k0), 0, hu.shape[0] - 1))])
    if len(ks) > max_slices:
        ks = ks[np.argsort(np.abs(z[ks] - center_mm[2]))[:max_slices]]
    out = []
    for tpl, half, window in templates:
        n = tpl.shape[0]
        step = 2.0 * half / (n - 1)
        m = int(math.ceil((search_mm + half) / step))
        off = np.arange(-m, m + 1) * step
        rr = r0 + off[:, None] / grid.row_mm + np.zeros((1, len(off)))
        cc = c0 + off[None, :] / grid.col_mm + np.zeros((len(off), 1))
        t = tpl - tpl.mean()
        tn = math.sqrt(float((t * t).sum()))
        if tn <= 1e-6:
            continue
        co = off[(n - 1) // 2: len(off) - (n - 1) // 2]  # centre offsets of the valid windows
        inside = co[:, None] ** 2 + co[None, :] ** 2 <= search_mm ** 2
        best = None
        for k in ks:
            img = np.clip(_sample_grid(hu[int(k)], rr, cc).astype(np.float64), *window)
            win = sliding_window_view(img, (n, n))
            num = np.tensordot(win, t, axes=((2, 3), (0, 1)))
            s1 = win.sum(axis=(2, 3))
            s2 = (win * win).sum(axis=(2, 3))
            var = np.maximum(s2 - s1 * s1 / (n * n), 1e-6)
            ncc = np.where(inside, num / (tn * np.sqrt(var)), -1.0)
            i, j = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
            if best is None or ncc[i, j] > best[0]:
                best = (float(ncc[i, j]), int(k), float(r0 + co[i] / grid.row_mm), float(c0 + co[j] / grid.col_mm))
        if best is not None:
            out.append(best)
    return out


def fuse_position(c: Candidate, pred: Prediction, grid: Grid) -> Candidate:
    """The candidate's centre combined with the prediction, per axis, each weighted by the inverse
    of its variance: the measured centre is sharp in-plane (about a pixel, or a tenth of the
    diameter) but along z only to about half a slice — and worse when the lesion runs on into a
    structure of its own HU over several slices, where the area profile has no clear peak; the
    prediction's error (measured on development cohorts: about half ``sigma_mm`` per axis) then
    decides. Only for a candidate that is plausibly the predicted lesion (within 2 σ)."""
    if _dist(c.position_mm, pred.position_mm) > 2.0 * pred.sigma_mm:
        return c
    px = math.sqrt(grid.row_mm * grid.col_mm)
    s_xy = max(px, 0.1 * c.long_diameter_mm)
    s_z = max(0.5 * grid.slice_interval_mm, 0.1 * c.long_diameter_mm, px)
    s_p = 0.5 * pred.sigma_mm
    out = []
    for i, s_m in enumerate((s_xy, s_xy, s_z)):
        wm = s_p ** 2 / (s_p ** 2 + s_m ** 2)
        out.append(float(pred.position_mm[i] + wm * (c.position_mm[i] - pred.position_mm[i])))
    return replace(c, position_mm=tuple(out))


def mine_study(hu: np.ndarray, grid: Grid, pred: Prediction, ref: dict | None = None,
               min_score: float = 0.1, params: ScoreParams = ScoreParams(),
               embed: Callable[[list[Candidate]], list[np.ndarray]] | None = None,
               search_mm: float | None = None, max_candidates: int = 16,
               refine: int = 3, exclude: Sequence[tuple[Vec3, float]] = (),
               templates: Sequence[tuple[np.ndarray, float, tuple[float, float]]] = (),
               rank_weights: dict[str, float] | None = None
               ) -> tuple[Candidate | None, list[Candidate]]:
    """Detect, measure and score candidates in one study; returns (proposal or None, all scored
    candidates best first). ``embed`` maps measured candidates to unit embeddings when an
    encoder is available (the ``refine`` best by appearance are embedded). Candidates whose centre
    lies within half the radius of a lesion annotated in the study (``exclude``: (centre, radius))
    are dropped: they are annotated already. ``templates`` are the track's lesion patches
    (:func:`pattern_template`) for the pattern term (:func:`pattern_similarity`). Candidates are
    ranked by :func:`rank_value` under ``rank_weights``; the first is proposed when its score
    reaches ``min_score``."""
    ref = ref if ref is not None else reference_stats(pred.reference)

    def rank(c: Candidate) -> float:
        return rank_value(c, rank_weights)

    def score(m: Candidate) -> Candidate:
        if templates:
            m = replace(m, pattern_ncc=pattern_similarity(hu, grid, m, templates))
        return score_candidate(m, pred, ref, params)

    pol = 0
    if ref.get("contrast_hu") is not None and abs(ref["contrast_hu"]) >= 15.0:
        pol = 1 if ref["contrast_hu"] > 0 else -1
    if search_mm is None:
        search_mm = max(2.5 * pred.sigma_mm, 10.0)
    # along z too the search reaches two prediction errors (thick slices: a small lesion may show
    # on one slice only, beyond the nearest ones)
    z_search = max(pred.expected_long_mm / 2.0, 1.5 * grid.slice_interval_mm, 2.0 * pred.sigma_mm)
    raw = detect_candidates(hu, grid, pred.position_mm, pred.expected_long_mm, search_mm=search_mm,
                            z_search_mm=z_search, polarity=pol, max_candidates=max_candidates)
    # the prediction itself is a candidate too: a lesion that touches tissue of similar HU may
    # give no LoG peak of its own, yet the region grown from the predicted point is the lesion
    k0, r0, c0 = grid.to_voxel(pred.position_mm)
    k0 = int(np.clip(round(k0), 0, hu.shape[0] - 1))
    if 0 <= r0 < hu.shape[1] and 0 <= c0 < hu.shape[2]:
        for p_ in ((pol,) if pol else (1, -1)):
            raw.append(Candidate(k0, float(r0), float(c0), grid.to_mm(k0, r0, c0),
                                 max(pred.expected_long_mm / 2.0, 1.5), 0.0, p_))
    if templates and TEMPLATE_SEARCH:
        # and where the track's own lesion patch matches best (:func:`template_match`)
        for _, k, r, c in template_match(hu, grid, pred.position_mm, templates, search_mm, z_search):
            for p_ in ((pol,) if pol else (1, -1)):
                raw.append(Candidate(k, r, c, grid.to_mm(k, r, c), max(pred.expected_long_mm / 2.0, 1.5), 0.0, p_))
    # measure every candidate on its own slice, then the best few on their neighbours too (the
    # slice with the largest region is the key slice); cheap first, exact where it matters
    measured = [m for m in (measure_candidate(hu, grid, c, neighbours=False) for c in raw) if m is not None]
    if exclude:
        # a candidate centred on an annotated lesion (within half its radius) *is* that lesion
        measured = [m for m in measured if not any(_dist(m.position_mm, a) <= 0.5 * r for a, r in exclude)]
    scored = sorted((score(m) for m in measured), key=rank)
    top = [m for m in (measure_candidate(hu, grid, c, neighbours=True) for c in scored[:refine]) if m is not None]
    scored = sorted([score(m) for m in top] + scored[refine:], key=rank)
    if embed is not None and scored and ref.get("embedding") is not None:
        head = scored[:refine]
        embs = embed(head)
        head = [score_candidate(replace(m, embedding=np.asarray(e, float)), pred, ref, params)
                for m, e in zip(head, embs, strict=True)]
        # candidates without an embedding keep their appearance-only score but rank after
        scored = sorted(head, key=rank) + scored[refine:]
    if params.fuse:
        scored = [fuse_position(c, pred, grid) for c in scored]
    best = scored[0] if scored and scored[0].score >= min_score else None
    return best, scored


def anatomy_echo(hu_ref: np.ndarray, grid_ref: Grid, candidate_in_ref_mm: Vec3, cand: Candidate,
                 lesion_ref_mm: Vec3, lesion_ref_radius_mm: float, params: ScoreParams = ScoreParams()) -> bool:
    """Is the candidate's structure also in a reference study — one where the track's lesion is
    annotated — at the candidate's position mapped there, clear of the lesion? Then it is normal
    anatomy that looks like the lesion (a vessel, a bowel loop, an organ's corner), not the lesion:
    the lesion is what differs between the studies. ``candidate_in_ref_mm`` is the candidate's
    centre mapped into the reference study by the studies' alignment."""
    r_c = max(cand.long_diameter_mm / 2.0, 1.5)
    clear = max(lesion_ref_radius_mm, r_c) + 2.0
    if _dist(candidate_in_ref_mm, lesion_ref_mm) <= clear:
        return False  # the candidate maps onto the lesion itself
    k, r, c = grid_ref.to_voxel(candidate_in_ref_mm)
    if not (0 <= r < hu_ref.shape[1] and 0 <= c < hu_ref.shape[2]):
        return False
    z0, z1 = grid_ref.z_range()
    if not z0 - 1.0 <= candidate_in_ref_mm[2] <= z1 + 1.0:
        return False
    k = int(np.clip(round(k), 0, hu_ref.shape[0] - 1))
    px = math.sqrt(grid_ref.row_mm * grid_ref.col_mm)
    m = measure_blob(hu_ref[k], r, c, r_c / px, cand.polarity, grid_ref.row_mm, grid_ref.col_mm)
    if m is None or m["polarity"] != cand.polarity or m["long_diameter_mm"] < params.min_long_mm:
        return False
    rr, cc = m["center_rc"]
    centre = (grid_ref.origin_xy_mm[0] + cc * grid_ref.col_mm, grid_ref.origin_xy_mm[1] + rr * grid_ref.row_mm)
    if math.hypot(centre[0] - lesion_ref_mm[0], centre[1] - lesion_ref_mm[1]) <= clear:
        return False  # what was found there is the lesion
    if math.hypot(centre[0] - candidate_in_ref_mm[0], centre[1] - candidate_in_ref_mm[1]) > max(0.5 * r_c, 4.0):
        return False
    same_size = abs(math.log(m["long_diameter_mm"] / max(cand.long_diameter_mm, params.min_long_mm))) <= params.size_log_tol
    same_hu = abs(m["mean_hu"] - cand.mean_hu) <= max(params.hu_tol, params.hu_rel_tol * abs(cand.contrast_hu))
    return bool(same_size and same_hu)


def _dist(a: Sequence[float], b: Sequence[float]) -> float:
    return float(math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True))))


def search_similar(hu: np.ndarray, grid: Grid, refs: Sequence[Observation], max_candidates: int = 300,
                   params: ScoreParams = ScoreParams()) -> list[Candidate]:
    """Candidates anywhere in the volume, scored by appearance only (size, mean HU, contrast of
    the measured ``refs``; no position term): "find lesions like these" when no track predicts a
    position — e.g. another lesion of the same study. Best first."""
    ref = reference_stats(refs)
    expected = float(np.median([o.long_diameter_mm for o in refs]))
    signs = {int(np.sign(o.contrast_hu)) for o in refs if o.contrast_hu is not None and abs(o.contrast_hu) >= 15}
    pol = signs.pop() if len(signs) == 1 else 0
    k0 = (hu.shape[0] - 1) / 2.0
    centre = grid.to_mm(k0, (hu.shape[1] - 1) / 2.0, (hu.shape[2] - 1) / 2.0)
    half_mm = 0.5 * math.hypot(hu.shape[1] * grid.row_mm, hu.shape[2] * grid.col_mm)
    raw = detect_candidates(hu, grid, centre, expected, search_mm=half_mm, z_search_mm=1e9,
                            polarity=pol, max_candidates=max_candidates)
    measured = [m for m in (measure_candidate(hu, grid, c, neighbours=False) for c in raw) if m is not None]
    pred = Prediction(centre, 1e9, "none", expected)
    return sorted((score_candidate(m, pred, ref, params) for m in measured), key=lambda c: -c.score)
