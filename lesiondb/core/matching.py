"""Intra-patient lesion matching across follow-up scans (numpy/scipy only).

The unit of one-to-one matching is a **scan**: one image series of one study. (DeepLesion
bookmarks the same lesion in two series of one study, e.g. 5 mm and 1 mm reconstructions; the DLS
benchmark pairs them; a study with one series is one scan.) For every pair of a patient's scans —
all pairs, not only consecutive ones — :func:`match_scans`

1. builds the pairwise cost of lesion i (scan A) ↔ lesion j (scan B) in nats (a negative log
   likelihood ratio), a sum of terms: position after alignment (patient mm from DICOM geometry
   when every lesion of both scans has it, else the normalised body location), log ratio of the
   long diameters, coarse-type disagreement and, where both lesions are embedded, embedding
   distance. Position and size terms are heavy-tailed (Student-t): organs deform and move, so a
   few lesions move much more than the rest;
2. aligns the two scans (:func:`align_scans`): the systematic shift between two scans (patient
   positioning, scan range, body-part-regression drift) is estimated jointly with the matching.
   "No shift" and every candidate pair propose a shift; each proposal is scored by the cost of
   the best one-to-one assignment under it plus a Gaussian prior on the shift; the best is
   refined by robust (IRLS) re-estimation on the pairs it matches. Scans sharing several lesions
   get their consistent translation; with one lesion each, the prior and size/type decide. Each
   matched pair carries its share of the shift's prior cost, so a large displacement explained
   by a single pair still costs what it should;
3. assigns one-to-one (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) under a gate:
   a pair costing ``gate_cost`` or more is left unmatched (new, resolved or unannotated lesions).

Each pair then gets a **probability** of being one lesion (:func:`mode_posteriors`): its marginal
under the scan pair's distribution of one-to-one matchings, pair log-odds ``temperature × (gate −
cost)`` (:func:`matching_marginals`, exact), averaged over the scan pair's shift modes
(:func:`scan_pair_modes`: the alignment is uncertain too).

:func:`build_tracks` unites the pairs their scan pair finds probable (≥ ``link_probability``)
into **tracks**, greedily, links supported by the patient's other scans first (triangle support),
then by probability; a union that would put two lesions of one scan in one track, or a
cannot-link pair (a reviewer's rejection), is refused — except that two annotations of one scan
whose centres lie inside each other are bookmarks of one lesion (:func:`bookmark_groups`), matched
as one lesion and put in its track together. :func:`track_probabilities` pools every
pairwise probability of a track's members into each edge's probability, and finds the lesions a
track may be missing in the scans where it has none (``POSSIBLE_SAME_LESION``).
:func:`match_patient` runs it all for one patient and returns tracks, ``SAME_LESION`` edges
(every pair of track members in different scans, from the earlier to the later scan, ``method``
``"assigned"`` (the scan pair's assignment chose it) or ``"track"`` (implied by the track)) and
POSSIBLE edges. :func:`match_patients` does the same for many patients at once, their scan pairs
solved together (pairs of one shape in arrays), with the same result.

:func:`calibrate` fits the noise scales to the data being matched, without labels (robust
spread of the confident matches' residuals, shifts and size ratios), and the gate (an outlier
bound on the confident matches' costs); :class:`MatchCalibrator` does that and fits the
temperature to the triangle consistency of the probabilities (:func:`triangle_log_likelihood`).
:func:`failure_cause`, :func:`expected_calibration_error` and :func:`calibration_summary` score
them for the evaluations. Defaults (:class:`MatchParams`) are physical, not fitted to any
benchmark — see docs/matching.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: DeepLesion's normalised location spans about this many mm per unit along x, y, z (measured
#: within series from pixel spacing × pixel offset against the normalised coordinate, no labels
#: involved): used to express location noise in mm.
LOCATION_SCALE_MM = (370.0, 370.0, 1100.0)

METHOD_ASSIGNED = "assigned"
METHOD_TRACK = "track"


@dataclass(frozen=True)
class MatchParams:
    """Noise scales and gates of the matching cost. Every scale is one standard deviation.

    Defaults are physical: a RECIST centre is reproducible to a few mm in-plane and to about one
    slice (5 mm) through-plane; two scans of one patient are offset by ~1–3 cm (table height,
    arm position, scan range, body-part regression drift); a lesion's long diameter changes by
    ~30 % between follow-ups (reader variability ~10–15 % plus real change); coarse types of one
    lesion agree in ~95 % of annotations.
    """

    location_sigma_mm: tuple[float, float, float] = (3.0, 3.0, 5.0)
    location_shift_sigma_mm: tuple[float, float, float] = (12.0, 12.0, 12.0)
    position_sigma_mm: tuple[float, float, float] = (3.0, 3.0, 5.0)
    position_shift_sigma_mm: tuple[float, float, float] = (20.0, 20.0, 30.0)
    location_scale_mm: tuple[float, float, float] = LOCATION_SCALE_MM
    size_sigma_log: float = 0.3
    type_mismatch_cost: float = 2.5
    embedding_sigma: float = 0.3
    tail_dof: float = 1.0  # Student-t degrees of freedom of the position/size terms (1 = Cauchy)
    max_residual_sigmas: float = 20.0  # beyond this many noise scales (any axis, aligned) a pair is impossible
    min_sigma_mm: tuple[float, float, float] = (1.0, 1.0, 2.0)  # calibration never goes below (resolution)
    missing_cost: float = 1.0  # nats for a size term a pair cannot evaluate (a diameter missing)
    gate_cost: float = 12.0  # a pair costing more is never matched (calibration re-measures it)
    gate_spread: float = 2.3  # calibrated gate = median + gate_spread × (90th percentile − median) of confident costs
    align_iterations: int = 3
    max_hypotheses: int = 16  # shift hypotheses scored exactly per scan pair (after a cheap ranking)
    track_support: bool = True  # order track unions by triangle support (else probability only)
    temperature: float = 1.0  # a pair's log-odds of being one lesion: temperature × (gate_cost − cost)
    link_probability: float = 0.5  # pairs at least this probable within their scan pair are track links
    possible_probability: float = 0.1  # a track's best candidate in a scan it misses this probable: POSSIBLE edge
    max_modes: int = 4  # shift modes (alignments) a scan pair's probabilities are averaged over
    bookmark_overlap: float = 0.5  # lesions of one scan closer than this × the smaller long diameter: one lesion (0: never)

    def replace(self, **changes: Any) -> MatchParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatchParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})

    @property
    def location_sigma(self) -> np.ndarray:
        return np.asarray(self.location_sigma_mm, float) / np.asarray(self.location_scale_mm, float)

    @property
    def location_shift_sigma(self) -> np.ndarray:
        return np.asarray(self.location_shift_sigma_mm, float) / np.asarray(self.location_scale_mm, float)


@dataclass(frozen=True)
class LesionObs:
    """What the matcher sees of one lesion."""

    lesion_id: str
    scan: Hashable  # one series of one study: lesions of one scan never share a track (but bookmarks of one)
    order: tuple = ()  # sort key of the scan in time (study index or date, then series)
    study: Hashable | None = None  # the study (time point) the scan belongs to
    location: tuple[float, float, float] | None = None  # normalised body location in [0, 1]
    position_mm: tuple[float, float, float] | None = None  # patient coordinates (DICOM LPS)
    long_diameter_mm: float | None = None
    short_diameter_mm: float | None = None
    type_code: int = -1
    embedding: Sequence[float] | None = None
    # the centre in the scan's own millimetres (DICOM: the patient position; DeepLesion: pixel
    # centre × spacing, key slice × slice interval): only compared within one scan
    scan_position_mm: tuple[float, float, float] | None = None


@dataclass
class ScanFeatures:
    """The lesions of one scan as arrays (NaN where a feature is missing)."""

    location: np.ndarray  # (n, 3)
    position: np.ndarray  # (n, 3)
    log_size: np.ndarray  # (n,)
    type_code: np.ndarray  # (n,) int, -1 unknown
    embedding: np.ndarray | None  # (n, d) or None

    def __len__(self) -> int:
        return len(self.type_code)

    @classmethod
    def of(cls, lesions: Sequence[LesionObs]) -> ScanFeatures:
        n = len(lesions)
        loc = np.full((n, 3), np.nan)
        pos = np.full((n, 3), np.nan)
        size = np.full(n, np.nan)
        typ = np.full(n, -1, dtype=int)
        dims = {len(les.embedding) for les in lesions if les.embedding is not None and len(les.embedding)}
        emb = np.full((n, dims.pop()), np.nan) if len(dims) == 1 else None
        for i, les in enumerate(lesions):
            if les.location is not None:
                loc[i] = les.location
            if les.position_mm is not None:
                pos[i] = les.position_mm
            if les.long_diameter_mm is not None and les.long_diameter_mm > 0:
                size[i] = math.log(les.long_diameter_mm)
            typ[i] = -1 if les.type_code is None else int(les.type_code)
            if emb is not None and les.embedding is not None and len(les.embedding) == emb.shape[1]:
                emb[i] = les.embedding
        return cls(loc, pos, size, typ, emb)


@dataclass
class Alignment:
    """The estimated shift from scan A to scan B (B ≈ A + shift) and how many pairs support it."""

    location_shift: np.ndarray  # (3,) normalised units
    position_shift_mm: np.ndarray  # (3,) mm
    anchors: int = 0
    prior_cost: float = 0.0  # negative log prior of the shift, nats


@dataclass
class ScanPairResult:
    """Matching of two scans: the full cost matrix, the assignment and the alignment."""

    cost: np.ndarray  # (n_a, n_b) nats
    pairs: list[tuple[int, int]]  # assigned (i, j), each below the gate
    alignment: Alignment
    gate: float = 12.0
    _confidence: np.ndarray | None = field(default=None, repr=False)
    _best: tuple | None = field(default=None, repr=False)
    probability: np.ndarray | None = field(default=None, repr=False)  # (n_a, n_b) pair marginals, see mode_posteriors
    hypotheses: np.ndarray | None = field(default=None, repr=False)  # the alignment's best shift hypotheses (modes)

    @property
    def confidence(self) -> np.ndarray:
        """(n_a, n_b) in (0, 1), see :func:`confidence_matrix` (computed on first use)."""
        if self._confidence is None:
            self._confidence = confidence_matrix(self.cost, self.gate)
        return self._confidence

    def confidence_of(self, i: int, j: int) -> float:
        """The confidence of one pair, without computing the whole matrix."""
        if self._confidence is not None:
            return float(self._confidence[i, j])
        if self._best is None:  # per row and column: the smallest cost, where, and the second smallest
            c = np.where(np.isfinite(self.cost), self.cost, 1e9)
            n, m = c.shape
            r2 = np.sort(np.concatenate([c, np.full((n, 2), np.inf)], axis=1), axis=1)[:, :2]
            c2 = np.sort(np.concatenate([c, np.full((2, m), np.inf)], axis=0), axis=0)[:2].T
            self._best = (r2.tolist(), c.argmin(1).tolist(), c2.tolist(), c.argmin(0).tolist(), c)
        rows, rarg, cols, carg, c = self._best
        own = float(c[i, j])
        comp = min(self.gate, rows[i][1] if rarg[i] == j else rows[i][0], cols[j][1] if carg[j] == i else cols[j][0])
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, comp - own))))


@dataclass(frozen=True)
class Edge:
    """A ``SAME_LESION`` relationship, ``src`` (earlier scan) → ``dst`` (later scan), by lesion index.
    ``probability``: that the two are one lesion, from every pairwise probability of the track
    (:func:`track_probabilities`)."""

    src: int
    dst: int
    cost: float
    confidence: float
    method: str
    probability: float = math.nan


@dataclass(frozen=True)
class PossibleEdge:
    """A ``POSSIBLE_SAME_LESION`` relationship: track member ``src`` → ``dst``, a lesion of a scan
    where the track has no member, which may be the track's lesion there (``probability``)."""

    src: int
    dst: int
    probability: float
    cost: float


@dataclass
class PatientMatch:
    """The result for one patient: tracks (lists of lesion indices, in scan order) and edges."""

    lesions: list[LesionObs]
    tracks: list[list[int]]
    edges: list[Edge]
    scan_pairs: int = 0
    pair_results: dict[tuple[Hashable, Hashable], ScanPairResult] = field(default_factory=dict, repr=False)
    by_scan: dict[Hashable, list[int]] = field(default_factory=dict, repr=False)
    arrays: Any = field(default=None, repr=False)  # the patient's pairwise terms (with keep_pair_results)
    possible: list[PossibleEdge] = field(default_factory=list)
    probability: np.ndarray | None = field(default=None, repr=False)  # (n, n) pair marginals (0 within a scan)
    bookmarks: list[list[int]] = field(default_factory=list)  # lesions matched as one (see bookmark_groups)

    def track_of(self) -> dict[int, int]:
        """Lesion index → track index."""
        return {i: t for t, members in enumerate(self.tracks) for i in members}

    def matched_in(self, lesion: int, scan: Hashable) -> int | None:
        """The lesion of ``scan`` in the same track as ``lesion`` (None if there is none)."""
        t = self.track_of()[lesion]
        for i in self.tracks[t]:
            if self.lesions[i].scan == scan:
                return i
        return None

    def cheapest_in(self, lesion: int, scan: Hashable) -> int | None:
        """The lesion of ``scan`` with the lowest aligned cost to ``lesion``, ignoring one-to-one
        and tracks (the "where is this lesion in that scan" query; needs ``keep_pair_results``)."""
        own = self.lesions[lesion].scan
        if own == scan or scan not in self.by_scan:
            return None
        if (own, scan) in self.pair_results:
            row = self.pair_results[(own, scan)].cost[self.by_scan[own].index(lesion)]
        elif (scan, own) in self.pair_results:
            row = self.pair_results[(scan, own)].cost[:, self.by_scan[own].index(lesion)]
        else:
            raise ValueError("cheapest_in needs match_patient(..., keep_pair_results=True)")
        return self.by_scan[scan][int(np.argmin(row))] if len(row) else None


# -- cost terms ------------------------------------------------------------------------------------
def _rho(u: np.ndarray, dof: float) -> np.ndarray:
    """Student-t negative log likelihood (up to a constant) of a standardised residual."""
    if not dof or dof <= 0:
        return 0.5 * u * u
    return 0.5 * (dof + 1.0) * np.log1p(u * u / dof)


def _irls_weights(u: np.ndarray, dof: float) -> np.ndarray:
    if not dof or dof <= 0:
        return np.ones_like(u)
    return (dof + 1.0) / (dof + u * u)


@dataclass
class _Geometry:
    """The position term of one scan pair. When every lesion of both scans has a patient-mm
    position (DICOM geometry), it is used — together with the normalised location when every
    lesion has one too (the location is body-relative, so it also sees through a change of scale
    or breathing that a translation cannot absorb); otherwise the normalised location alone."""

    residual: np.ndarray  # (n, m, d) B - A, zeros where missing; d = 3 or 6 (position, then location)
    valid: np.ndarray  # (n, m) bool
    sigma: np.ndarray  # (d,) noise
    shift_sigma: np.ndarray  # (d,) prior spread of the shift
    kind: str  # "position", "location" or "both"
    dof: float
    missing: float  # cost of a pair without a position on both sides
    max_sigmas: float = math.inf
    _scaled: np.ndarray | None = field(default=None, repr=False)  # residual / sigma, on first use
    _all_valid: bool = field(default=False, repr=False)

    @property
    def uses_position(self) -> bool:
        return self.kind != "location"

    @property
    def prior_weight(self) -> float:
        """The shift prior of two measurements of one shift counts once, like their cost."""
        return 0.5 if self.kind == "both" else 1.0

    @classmethod
    def of(cls, a: ScanFeatures, b: ScanFeatures, p: MatchParams) -> _Geometry:
        n, m = len(a), len(b)
        has_pos = bool(n and m and np.isfinite(a.position).all() and np.isfinite(b.position).all())
        has_loc = bool(n and m and np.isfinite(a.location).all() and np.isfinite(b.location).all())
        r_pos = b.position[None, :, :] - a.position[:, None, :]
        r_loc = b.location[None, :, :] - a.location[:, None, :]
        return cls.from_residuals(r_pos, r_loc, has_pos, has_loc, p)

    @classmethod
    def from_residuals(cls, r_pos: np.ndarray, r_loc: np.ndarray, has_pos: bool, has_loc: bool,
                       p: MatchParams) -> _Geometry:
        pos_sig, pos_shs = np.asarray(p.position_sigma_mm, float), np.asarray(p.position_shift_sigma_mm, float)
        if has_pos and has_loc:
            kind, r = "both", np.concatenate([r_pos, r_loc], axis=-1)
            sig = np.concatenate([pos_sig, p.location_sigma])
            shs = np.concatenate([pos_shs, p.location_shift_sigma])
        elif has_pos:
            kind, r, sig, shs = "position", r_pos, pos_sig, pos_shs
        else:
            kind, r, sig, shs = "location", r_loc, p.location_sigma, p.location_shift_sigma
        valid = np.isfinite(r).all(-1)
        # a pair without a position on both sides is never matched: size and type alone say too little
        return cls(np.where(valid[..., None], r, 0.0), valid, sig, shs, kind, p.tail_dof, math.inf,
                   p.max_residual_sigmas)

    def split(self, v: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(position part, location part) of a residual or shift vector (None where unused)."""
        if self.kind == "both":
            return v[..., :3], v[..., 3:]
        return (v, None) if self.kind == "position" else (None, v)

    def cost(self, shifts: np.ndarray) -> np.ndarray:
        """(H, n, m) position cost for H shift hypotheses (H, 3); a pair displaced by more than
        ``max_sigmas`` noise scales along an axis after alignment is impossible (infinite cost)."""
        if self._scaled is None:  # the hot path: a few calls per scan pair, small arrays
            self._scaled = self.residual / self.sigma
            self._all_valid = bool(self.valid.all())
        c = _robust_cost(self._scaled[None] - (shifts / self.sigma)[:, None, None, :], self)
        return c if self._all_valid else np.where(self.valid[None], c, self.missing)

    def refine(self, pairs: Sequence[tuple[int, int]], shift: np.ndarray, center: np.ndarray,
               shift_sigma: np.ndarray, steps: int = 3) -> np.ndarray:
        """MAP shift given matched pairs: a robust (IRLS) weighted mean, shrunk toward the prior."""
        rows = [self.residual[i, j] for i, j in pairs if self.valid[i, j]]
        if not rows:
            return shift
        r = np.asarray(rows)
        s = shift.copy()
        prec0 = 1.0 / shift_sigma ** 2
        for _ in range(steps):
            w = _irls_weights((r - s) / self.sigma, self.dof) / self.sigma ** 2
            s = ((w * r).sum(0) + prec0 * center) / (w.sum(0) + prec0)
        return s


def static_cost(a: ScanFeatures, b: ScanFeatures, p: MatchParams) -> np.ndarray:
    """The shift-independent part of the cost: size, type and embedding terms, (n, m) nats."""
    d_size = b.log_size[None, :] - a.log_size[:, None]
    ok = np.isfinite(d_size)
    c = np.where(ok, _rho(np.where(ok, d_size, 0.0) / p.size_sigma_log, p.tail_dof), p.missing_cost)
    ta, tb = a.type_code[:, None], b.type_code[None, :]
    c = c + p.type_mismatch_cost * ((ta != tb) & (ta >= 0) & (tb >= 0))
    if a.embedding is not None and b.embedding is not None and a.embedding.shape[1] == b.embedding.shape[1]:
        d = np.linalg.norm(b.embedding[None, :, :] - a.embedding[:, None, :], axis=-1)
        # only where both are embedded; a missing embedding adds nothing (embeddings are optional)
        ok = np.isfinite(d)
        c = c + np.where(ok, 0.5 * (np.where(ok, d, 0.0) / p.embedding_sigma) ** 2, 0.0)
    return c


# -- assignment ------------------------------------------------------------------------------------
def assign(cost: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """One-to-one assignment minimising total cost, where leaving a lesion unmatched costs
    ``gate / 2`` (so a pair is taken only if it costs less than ``gate``)."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    c = np.where(np.isfinite(cost), cost, 1e9)
    if n == 1 or m == 1:
        k = int(np.argmin(c))
        i, j = divmod(k, m)
        return [(i, j)] if c[i, j] < gate else []
    # pairs at or above the gate are never better than leaving both unmatched: Hungarian on the
    # gain min(c - gate, 0) needs no padding
    r, k = linear_sum_assignment(np.minimum(c - gate, 0.0))
    return [(int(i), int(j)) for i, j in zip(r, k, strict=True) if c[i, j] < gate]


def _best_matching_gain(d: np.ndarray) -> np.ndarray:
    """For each hypothesis h, min over one-to-one matchings of the sum of ``d[h]`` (d ≤ 0), closed
    form for matrices with one or two rows or columns, Hungarian otherwise. ``d``: (H, n, m)."""
    H, n, m = d.shape
    if n > m:
        d, n, m = d.transpose(0, 2, 1), m, n
    if n == 0:
        return np.zeros(H)
    if n == 1:
        return d.reshape(H, -1).min(1)
    if n == 2:
        j0 = d[:, 0].argmin(1)
        j1 = d[:, 1].argmin(1)
        s0 = np.sort(d[:, 0], axis=1)
        s1 = np.sort(d[:, 1], axis=1)
        same = j0 == j1
        both = s0[:, 0] + s1[:, 0]
        alt = np.minimum(s0[:, 0] + s1[:, 1], s0[:, 1] + s1[:, 0])
        return np.where(same, alt, both)
    out = np.empty(H)
    for h in range(H):
        r, k = linear_sum_assignment(d[h])
        out[h] = d[h][r, k].sum()
    return out


def confidence_matrix(cost: np.ndarray, gate: float) -> np.ndarray:
    """How unambiguous each pair is, in (0, 1): a logistic function of its margin, the cost of its
    cheapest competitor (another lesion of either scan for either member, or leaving it unmatched
    at ``gate``) minus its own cost. 0.5 is a tie. ``cost``: (n, m), or a stack (..., n, m)."""
    if cost.size == 0:
        return np.zeros_like(cost)
    c = np.where(np.isfinite(cost), cost, 1e9)
    n, m = c.shape[-2:]
    comp = np.full(c.shape, float(gate))
    if m > 1:
        srt = np.sort(c, axis=-1)
        comp = np.minimum(comp, np.where(c <= srt[..., :1], srt[..., 1:2], srt[..., :1]))
    if n > 1:
        srt = np.sort(c, axis=-2)
        comp = np.minimum(comp, np.where(c <= srt[..., :1, :], srt[..., 1:2, :], srt[..., :1, :]))
    return 1.0 / (1.0 + np.exp(-np.clip(comp - c, -50.0, 50.0)))


# -- probabilities -------------------------------------------------------------------------------
_LOG_ODDS_CAP = 30.0  # |log-odds| beyond this change no probability at double precision
_EXACT_MAX_SIDE = 14  # the smaller side of a block whose matchings are summed exactly (2^14 subsets)
_NEGLIGIBLE = -30.0  # pairs with lower log-odds do not connect two blocks of a scan pair
_SPLIT_ABOVE = 10  # a block with more lesions on both sides is first split into independent blocks
_MODE_WINDOW = 12.0  # nats: shift hypotheses scoring worse than the best by more are not modes


def matching_marginals(L: np.ndarray) -> tuple[np.ndarray, float]:
    """Pair marginals and log partition function of a scan pair's partial one-to-one matchings
    under ``P(M) ∝ exp(Σ_{(i,j)∈M} L_ij)``: ``L_ij`` are the log-odds of i ↔ j against leaving
    both unmatched (−inf: impossible). Exact — closed forms when one side has one or two lesions,
    else a sum over the subsets of the smaller side (scan pairs are first split into blocks no
    non-negligible pair connects); a block with more than ``_EXACT_MAX_SIDE`` lesions on both
    sides weighs each pair against its row and column only (an approximation; rare)."""
    L = np.where(np.isfinite(L), np.minimum(L, _LOG_ODDS_CAP), -np.inf)
    n, m = L.shape
    if n == 0 or m == 0:
        return np.zeros((n, m)), 0.0
    if m > n:
        P, lz = matching_marginals(L.T)
        return P.T, lz
    if m <= 2:
        return _marginals_small(np.exp(np.maximum(L, -700.0)) * np.isfinite(L))
    if _matchings(n, m) is not None:
        return _marginals_block(L)
    live = L > _NEGLIGIBLE
    rows, cols = live.any(1), live.any(0)
    if not (rows.all() and cols.all()):  # lesions without a non-negligible pair take no part
        P = np.zeros((n, m))
        if rows.any():
            sub = np.ix_(rows, cols)
            P[sub], lz = matching_marginals(np.where(live[sub], L[sub], -np.inf))
            return P, lz
        return P, 0.0
    if m <= _SPLIT_ABOVE:
        return _marginals_block(np.where(live, L, -np.inf))
    if not live.any():
        return np.zeros((n, m)), 0.0
    r, c = np.nonzero(live)
    k, lab = connected_components(coo_matrix((np.ones(len(r)), (r, n + c)), shape=(n + m, n + m)), directed=False)
    if k == 1:
        return _marginals_block(L)
    P = np.zeros((n, m))
    lz = 0.0
    for comp in range(k):
        rows = np.flatnonzero(lab[:n] == comp)
        cols = np.flatnonzero(lab[n:] == comp)
        if len(rows) and len(cols):
            Pc, lc = matching_marginals(L[np.ix_(rows, cols)])
            P[np.ix_(rows, cols)] = Pc
            lz += lc
    return P, lz


def _marginals_small(W: np.ndarray) -> tuple[np.ndarray, float]:
    """Closed forms for weights ``W`` (n, m ≤ 2): one column, or two (pairs of rows choose distinct columns)."""
    n, m = W.shape
    if m == 1:
        z = 1.0 + W[:, 0].sum()
        return W / z, math.log(z)
    u, v = W[:, 0], W[:, 1]
    U, V = u.sum(), v.sum()
    z = 1.0 + U + V + U * V - float((u * v).sum())
    P = np.stack([u * (1.0 + V - v), v * (1.0 + U - u)], axis=1) / z
    return P, math.log(z)


_ENUMERATE_MAX = 2000  # blocks with at most this many partial matchings sum them outright (cached per shape)


def _matchings(n: int, m: int) -> np.ndarray | None:
    """Every partial one-to-one matching of an n × m block as a 0/1 matrix (matchings × n·m),
    or None when there are more than ``_ENUMERATE_MAX`` (cached per shape)."""
    key = (n, m)
    if key not in _MATCHINGS:
        count = sum(math.comb(n, k) * math.comb(m, k) * math.factorial(k) for k in range(min(n, m) + 1))
        if count > _ENUMERATE_MAX:
            _MATCHINGS[key] = None
        else:
            rows: list[list[int]] = [[]]
            for r in range(n):  # each row unmatched or matched to a free column
                rows = rows + [x + [r * m + c] for x in rows for c in range(m) if all(y % m != c for y in x)]
            E = np.zeros((len(rows), n * m))
            for k, x in enumerate(rows):
                E[k, x] = 1.0
            _MATCHINGS[key] = E
    return _MATCHINGS[key]


_MATCHINGS: dict[tuple[int, int], np.ndarray | None] = {}


def _marginals_block(L: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact marginals of one connected block (rows n ≥ columns m): a sum over its matchings
    when there are few, else forward and backward sums over the subsets of used columns;
    approximate beyond ``_EXACT_MAX_SIDE`` columns."""
    n, m = L.shape
    E = _matchings(n, m)
    if E is not None:
        lw = E @ np.where(np.isfinite(L), L, -1e4).ravel()
        top = float(lw.max())
        w = np.exp(lw - top)
        z = float(w.sum())
        return (w @ E).reshape(n, m) / z, top + math.log(z)
    W = np.exp(np.maximum(L, -700.0)) * np.isfinite(L)
    if m > _EXACT_MAX_SIDE:  # each pair against the alternatives of its own row and column
        z = 1.0 + W.sum(1, keepdims=True) + W.sum(0, keepdims=True) - W
        return W / z, float(np.log1p(W.sum()))
    K = 1 << m
    masks = np.arange(K)
    free = [masks[(masks >> j) & 1 == 0] for j in range(m)]
    F = np.zeros((n + 1, K))
    F[0, 0] = 1.0
    for r in range(n):
        F[r + 1] = F[r]
        for j in range(m):
            if W[r, j] > 0.0:
                F[r + 1, free[j] | (1 << j)] += F[r, free[j]] * W[r, j]
    B = np.zeros((n + 1, K))
    B[n] = 1.0
    for r in range(n - 1, -1, -1):
        B[r] = B[r + 1]
        for j in range(m):
            if W[r, j] > 0.0:
                B[r, free[j]] += W[r, j] * B[r + 1, free[j] | (1 << j)]
    z = B[0, 0]
    P = np.zeros((n, m))
    for r in range(n):
        for j in range(m):
            if W[r, j] > 0.0:
                P[r, j] = W[r, j] * float(F[r, free[j]] @ B[r + 1, free[j] | (1 << j)]) / z
    return P, math.log(z)


def _shift_of(geo: _Geometry, al: Alignment) -> np.ndarray:
    """An alignment's shift in the geometry's coordinates."""
    if geo.kind == "both":
        return np.concatenate([al.position_shift_mm, al.location_shift])
    return np.asarray(al.position_shift_mm if geo.kind == "position" else al.location_shift, float)


def scan_pair_modes(geo: _Geometry, static: np.ndarray, p: MatchParams,
                    best: Alignment | None = None, hypotheses: np.ndarray | None = None
                    ) -> list[tuple[float, np.ndarray]]:
    """The shift modes of a scan pair: ``(negative log prior of the shift, cost under it)`` for
    the scan pair's alignment (``best``) and the best other shift hypotheses (no shift; each
    candidate pair made to coincide: ``hypotheses``, best first, as the alignment ranked them —
    else ranked here) that lie more than two noise scales from every mode kept, each refined as
    an alignment is (assignment, robust re-estimation) and kept when it ends more than half a
    noise scale from every mode kept — at most ``p.max_modes``."""
    n, m = static.shape
    d = geo.residual.shape[-1]
    if hypotheses is None:
        H = np.vstack([np.zeros((1, d)), geo.residual[geo.valid]]) if n and m and geo.valid.any() else np.zeros((1, d))
        score = geo.prior_weight * 0.5 * ((H / geo.shift_sigma) ** 2).sum(1)
        if n and m:
            gain = np.minimum(geo.cost(H) + static[None] - p.gate_cost, 0.0)
            score = score + (gain.min(2).sum(1) if n <= m else gain.min(1).sum(1))
        hypotheses = _best_hypotheses(H, score, p)
    shs, w = geo.shift_sigma, geo.prior_weight
    center = np.zeros(d)
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    if best is not None:  # the scan pair's own alignment is always a mode
        s = _shift_of(geo, best)
        kept.append((s, geo.cost(s[None])[0] + static))
    for s in hypotheses:
        if len(kept) >= max(1, p.max_modes):
            break
        if any((np.abs(s - k[0]) <= 2.0 * geo.sigma).all() for k in kept):
            continue  # within noise of a mode kept: it would refine into it
        c = geo.cost(s[None])[0] + static
        if min(n, m) > 1:  # refined like an alignment (one lesion a side: the shift is the pair's
            # displacement or none, as in _align_single)
            s, c, _pairs = _refine(geo, static, s, c, center, shs, p)
            if any((np.abs(s - k[0]) <= 0.5 * geo.sigma).all() for k in kept):
                continue  # the same mode
        kept.append((s, c))
    return [(w * 0.5 * float(((s / shs) ** 2).sum()), c) for s, c in kept]


def mode_posterior(modes: Sequence[tuple[float, np.ndarray]], gate: float, temperature: float = 1.0
                   ) -> tuple[np.ndarray, float]:
    """Pair probabilities of a scan pair averaged over its shift modes: within a mode, the
    matching marginals with pair log-odds ``temperature × (gate − cost)``; each mode weighs as its
    prior times its partition function (both tempered). Returns (P, log evidence)."""
    logw, Ps = [], []
    for prior, cost in modes:
        P, lz = matching_marginals(temperature * (gate - cost))
        logw.append(lz - temperature * prior)
        Ps.append(P)
    lw = np.asarray(logw)
    top = float(lw.max())
    wts = np.exp(lw - top)
    total = float(wts.sum())
    P = sum(float(x) / total * q for x, q in zip(wts, Ps, strict=True))
    return np.clip(P, 0.0, 1.0), top + math.log(total)


def mode_posteriors(modes: Sequence[Sequence[tuple[float, np.ndarray]]], gate: float, temperature: float = 1.0
                    ) -> list[np.ndarray]:
    """:func:`mode_posterior` of many scan pairs (the P of each): the modes of one shape are
    summed together in arrays, which is what makes it fast on a graph of many small patients."""
    flat = [(k, prior, cost) for k, ms in enumerate(modes) for prior, cost in ms]
    Ps: list[np.ndarray] = [np.zeros((0, 0))] * len(flat)
    lz = np.zeros(len(flat))
    groups: dict[tuple[int, int], list[int]] = {}
    for x, (_k, _prior, cost) in enumerate(flat):
        groups.setdefault(cost.shape, []).append(x)
    for xs in groups.values():
        L = temperature * (gate - np.stack([flat[x][2] for x in xs]))
        Pg, lg = _batch_marginals(L)
        for y, x in enumerate(xs):
            Ps[x] = Pg[y]
        lz[xs] = lg
    out: list[list[tuple[float, np.ndarray]]] = [[] for _ in modes]
    for x, (k, prior, _cost) in enumerate(flat):
        out[k].append((float(lz[x]) - temperature * prior, Ps[x]))
    res = []
    for ms in out:
        if len(ms) == 1:
            res.append(np.clip(ms[0][1], 0.0, 1.0))
            continue
        lw = np.asarray([w for w, _P in ms])
        wts = np.exp(lw - lw.max())
        wts /= wts.sum()
        res.append(np.clip(sum(float(w) * P for w, (_l, P) in zip(wts, ms, strict=True)), 0.0, 1.0))
    return res


def _batch_marginals(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`matching_marginals` of a stack of scan pairs of one shape, (G, n, m)."""
    G, n, m = L.shape
    if n == 0 or m == 0:
        return np.zeros(L.shape), np.zeros(G)
    if m > n:
        P, lz = _batch_marginals(L.transpose(0, 2, 1))
        return P.transpose(0, 2, 1), lz
    L = np.where(np.isfinite(L), np.minimum(L, _LOG_ODDS_CAP), -1e4)
    if m == 1:
        W = np.exp(L[..., 0])
        z = 1.0 + W.sum(1)
        return (W / z[:, None])[..., None], np.log(z)
    if m == 2:
        u, v = np.exp(L[..., 0]), np.exp(L[..., 1])
        U, V = u.sum(1, keepdims=True), v.sum(1, keepdims=True)
        z = 1.0 + U + V + U * V - (u * v).sum(1, keepdims=True)
        return np.stack([u * (1.0 + V - v), v * (1.0 + U - u)], axis=2) / z[..., None], np.log(z[:, 0])
    if m <= _BATCH_SUBSET_MAX_SIDE:
        return _batch_subset_sums(L)
    # wide on both sides: one pair at a time, each split into the blocks its likely pairs connect
    out = [matching_marginals(np.where(x > -1e3, x, -np.inf)) for x in L]
    return np.stack([P for P, _ in out]), np.asarray([lz for _, lz in out])


#: A stack of scan pairs with at most this many lesions on its smaller side is summed over column
#: subsets in one batch (:func:`_batch_subset_sums`); wider ones pair by pair, each split into the
#: blocks its likely pairs connect. Measured on the scan pairs of a DeepLesion-sized graph (the
#: maths of a whole `lesiondb match`): 0.55 s this way, against 2.4 s summing every matching
#: (enumerating them for each shape took 1.3 s of it) and 1.5 s by subsets for every width.
_BATCH_SUBSET_MAX_SIDE = 8


def _batch_subset_sums(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact marginals of a stack of scan pairs (G, n, m ≤ ``_EXACT_MAX_SIDE``, n ≥ m; log-odds with
    −1e4 for impossible pairs): forward and backward sums over the subsets of used columns, as
    :func:`_marginals_block` does for one pair, for the whole stack at once. Each pair's weights
    are scaled by its largest log-odds (so no product overflows)."""
    G, n, m = L.shape
    shift = np.maximum(L.reshape(G, -1).max(1), 0.0)  # per pair: exp(L − shift) ≤ 1
    W = np.exp(L - shift[:, None, None])  # impossible pairs: exactly 0
    none = np.exp(-shift)  # "this row unmatched" on the same scale
    K = 1 << m
    masks = np.arange(K)
    free = [masks[(masks >> j) & 1 == 0] for j in range(m)]
    F = np.zeros((n + 1, G, K))
    F[0, :, 0] = 1.0
    for r in range(n):
        F[r + 1] = F[r] * none[:, None]
        for j in range(m):
            F[r + 1][:, free[j] | (1 << j)] += F[r][:, free[j]] * W[:, r, j, None]
    B = np.zeros((n + 1, G, K))
    B[n] = 1.0
    for r in range(n - 1, -1, -1):
        B[r] = B[r + 1] * none[:, None]
        for j in range(m):
            B[r][:, free[j]] += W[:, r, j, None] * B[r + 1][:, free[j] | (1 << j)]
    z = B[0][:, 0]
    P = np.zeros((G, n, m))
    for r in range(n):
        for j in range(m):
            P[:, r, j] = W[:, r, j] * np.einsum("gk,gk->g", F[r][:, free[j]], B[r + 1][:, free[j] | (1 << j)]) / z
    return P, np.log(z) + n * shift


def track_probabilities(tracks: Sequence[Sequence[int]], P: np.ndarray, scan_of: Sequence[Hashable],
                        by_scan: dict[Hashable, list[int]], possible_probability: float = 0.1,
                        cannot_link: Sequence[tuple[int, int]] = (), eps: float = 1e-6
                        ) -> tuple[dict[tuple[int, int], float], list[tuple[int, int, float]]]:
    """From every pairwise probability of a patient (``P``, (n, n)), for each track and scan: how
    probable each lesion of the scan (or none) is as the track's lesion there, pooling the track's
    members outside the scan (each member's row of ``P`` over the scan, "none" = 1 − its sum)
    geometrically (the mean of their log-probabilities, normalised: a long track does not count
    one observation many times). Returns

    - ``{(i, j): p}`` for every pair of one track in different scans: the mean of "j is the
      track's lesion in j's scan" (from the other members) and the same for i;
    - ``[(member, candidate, p)]`` for each scan where a track has no member: its most probable
      lesion there when ``p ≥ possible_probability`` (``member``: the one with the highest
      pairwise probability to it), unless a cannot-link joins the two tracks; one per pair of
      tracks (the one from the larger track, then the most probable).
    """
    n = len(scan_of)
    Pc = np.clip(P, eps, 1.0)
    member_of = np.full(n, -1)
    for t, ms in enumerate(tracks):
        member_of[list(ms)] = t
    T = len(tracks)
    A = np.zeros((T, n))
    A[member_of, np.arange(n)] = 1.0
    forbidden = {(min(a, b), max(a, b)) for a, b in cannot_link}
    single: dict[int, float] = {}  # member -> probability that it is its track's lesion in its scan
    possible: list[tuple[int, int, float]] = []
    for scan, idx in by_scan.items():
        idx = list(idx)
        R = Pc[:, idx]  # (n, k)
        none_all = np.log(np.clip(1.0 - P[:, idx].sum(1), eps, 1.0))  # (n,)
        logs = np.concatenate([np.log(R), none_all[:, None]], axis=1)  # (n, k + 1)
        outside = A.copy()
        outside[:, idx] = 0.0
        cnt = outside.sum(1)
        has = cnt > 0
        if not has.any():
            continue
        S = outside[has] @ logs / cnt[has, None]  # (T', k + 1): mean log-probabilities
        S -= S.max(1, keepdims=True)
        Q = np.exp(S)
        Q /= Q.sum(1, keepdims=True)
        for row, t in zip(Q, np.flatnonzero(has), strict=True):
            inside = [x for x, i in enumerate(idx) if member_of[i] == t]
            if inside:
                single[idx[inside[0]]] = float(row[inside[0]])
                continue
            x = int(np.argmax(row[:-1]))
            q = float(row[x])
            if q < possible_probability:
                continue
            cand = idx[x]
            ms = [i for i in tracks[t] if scan_of[i] != scan]
            if forbidden and any((min(i, k), max(i, k)) in forbidden for i in tracks[t]
                                 for k in tracks[member_of[cand]]):
                continue  # a reviewer said these two tracks are not one lesion
            src = max(ms, key=lambda i: (P[i, cand], -i))
            possible.append((src, cand, q))
    # one review item per pair of tracks: "these two may be one lesion here" from the larger track
    best: dict[frozenset, tuple[int, int, float]] = {}
    for src, cand, q in possible:
        key = frozenset((int(member_of[src]), int(member_of[cand])))
        rank = (len(tracks[member_of[src]]), q, -src, -cand)
        old = best.get(key)
        if old is None or rank > (len(tracks[member_of[old[0]]]), old[2], -old[0], -old[1]):
            best[key] = (src, cand, q)
    possible = sorted(best.values())
    pair_p: dict[tuple[int, int], float] = {}
    for ms in tracks:
        for a in ms:
            for b in ms:
                if a < b and scan_of[a] != scan_of[b]:
                    pair_p[(a, b)] = 0.5 * (single.get(a, P[a, b]) + single.get(b, P[a, b]))
    return pair_p, possible


def triangle_log_likelihood(P: np.ndarray, scan_of: Sequence[Hashable]) -> float:
    """How consistent a patient's pairwise probabilities are with transitivity: the sum over
    lesion triples in three different scans of log P(the three pairwise events are not "exactly
    two are one lesion") when each pair's event is drawn with its own probability. Over- and
    under-confident probabilities both lower it; :class:`MatchCalibrator` fits the temperature
    to it (scan pairs are matched independently, so their agreement is evidence of calibration)."""
    n = len(scan_of)
    if n < 3:
        return 0.0
    codes = {s: k for k, s in enumerate(dict.fromkeys(scan_of))}
    if len(codes) < 3:
        return 0.0
    sc = np.asarray([codes[s] for s in scan_of])
    live = P.max(1) > 1e-4  # lesions with no probable partner add (almost) nothing
    idx = np.flatnonzero(live)
    if len(idx) < 3:
        return 0.0
    Q, s = P[np.ix_(idx, idx)], sc[idx]
    k = len(idx)
    total = 0.0
    for j in range(1, k - 1):  # j is the middle index of i < j < l: memory stays (k, k)
        a, b, c = Q[:j, j][:, None], Q[j, j + 1:][None, :], Q[:j, j + 1:]  # P_ij, P_jl, P_il
        v = a * b * (1.0 - c) + a * (1.0 - b) * c + (1.0 - a) * b * c
        ok = (s[:j, None] != s[j]) & (s[None, j + 1:] != s[j]) & (s[:j, None] != s[None, j + 1:])
        total += float(np.log1p(-np.clip(v[ok], 0.0, 1.0 - 1e-12)).sum())
    return total


def expected_calibration_error(probability: Sequence[float], outcome: Sequence[bool], bins: int = 10) -> float | None:
    """ECE: the mean over ``bins`` equal-width probability bins of |mean probability − observed
    frequency|, weighted by the share of predictions in the bin (None without predictions)."""
    rows = reliability(probability, outcome, bins)
    n = sum(r["n"] for r in rows)
    return sum(r["n"] * abs(r["meanProbability"] - r["frequency"]) for r in rows) / n if n else None


def reliability(probability: Sequence[float], outcome: Sequence[bool], bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram as rows: bin bounds, count, mean probability, observed frequency."""
    p = np.asarray(probability, float)
    y = np.asarray(outcome, float)
    k = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = k == b
        if sel.any():
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(sel.sum()),
                        "meanProbability": float(p[sel].mean()), "frequency": float(y[sel].mean())})
    return out


# -- one scan pair ---------------------------------------------------------------------------------
def align_scans(a: ScanFeatures, b: ScanFeatures, p: MatchParams | None = None) -> Alignment:
    """Estimate the shift from scan A to scan B jointly with their matching (see module doc)."""
    p = p or MatchParams()
    return _align(_Geometry.of(a, b, p), static_cost(a, b, p), p)[0]


def _refine(geo: _Geometry, static: np.ndarray, s: np.ndarray, cost: np.ndarray, center: np.ndarray,
            shs: np.ndarray, p: MatchParams) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Alternate assignment and shift from shift ``s`` (costs ``cost`` under it) until the pairs
    stop changing: (shift, costs, pairs)."""
    pairs: list[tuple[int, int]] = []
    for _ in range(max(0, p.align_iterations)):
        new = assign(cost, p.gate_cost)
        if not new or new == pairs:
            break
        pairs = new
        s = geo.refine(pairs, s, center, shs)
        cost = geo.cost(s[None])[0] + static
    return s, cost, pairs


def _align(geo: _Geometry, static: np.ndarray, p: MatchParams
           ) -> tuple[Alignment, np.ndarray, list[tuple[int, int]]]:
    """The alignment, the position + static cost under it, and the assignment under it."""
    n, m = static.shape
    center = np.zeros(geo.residual.shape[-1])
    shs = geo.shift_sigma
    if n == 0 or m == 0 or not geo.valid.any():
        cost = geo.cost(center[None])[0] + static
        return _alignment(geo, center, 0), cost, assign(cost, p.gate_cost), center[None]
    if n == 1 and m == 1:  # one lesion each (a fifth of DeepLesion's scan pairs): no search needed
        s = _align_single(geo, static, center, shs, p)
        hypotheses = np.stack([center, geo.residual[0, 0]])
    else:
        # hypotheses: no shift, and the shift that makes each candidate pair coincide
        hyps = np.vstack([center[None], geo.residual[geo.valid]])
        prior = geo.prior_weight * 0.5 * (((hyps - center) / shs) ** 2).sum(1)
        gain = np.minimum(geo.cost(hyps) + static[None] - p.gate_cost, 0.0)
        if min(n, m) > 2 and len(hyps) > p.max_hypotheses:
            # rank by a relaxation (each row's best pair), score the best few exactly
            cheap = prior + gain.min(2).sum(1)
            keep = np.argsort(cheap, kind="stable")[: p.max_hypotheses]
            score = np.full(len(hyps), np.inf)
            score[keep] = prior[keep] + _best_matching_gain(gain[keep])
        else:
            score = prior + _best_matching_gain(gain)
        s = hyps[int(np.argmin(score))]
        hypotheses = _best_hypotheses(hyps, score, p)
    s, cost, pairs = _refine(geo, static, s, geo.cost(s[None])[0] + static, center, shs, p)
    al = _alignment(geo, s, len(pairs), geo.prior_weight * float(0.5 * (((s - center) / shs) ** 2).sum()))
    return al, cost, pairs, hypotheses


def _best_hypotheses(hyps: np.ndarray, score: np.ndarray, p: MatchParams) -> np.ndarray:
    """The shift hypotheses that may be modes (:func:`scan_pair_modes`): best first, within
    ``_MODE_WINDOW`` nats of the best score, at most twice ``p.max_modes``."""
    order = np.argsort(score, kind="stable")
    order = order[score[order] <= score[order[0]] + _MODE_WINDOW][: 2 * max(1, p.max_modes)]
    return hyps[order]


def _align_single(geo: _Geometry, static: np.ndarray, center: np.ndarray, shs: np.ndarray,
                  p: MatchParams) -> np.ndarray:
    """One lesion in each scan: either unrelated (no shift) or the same lesion (shift = its
    displacement); whichever costs less, prior included."""
    r = geo.residual[0, 0]
    cost_none = float(geo.cost(center[None])[0, 0, 0] + static[0, 0])
    prior_r = geo.prior_weight * 0.5 * float((((r - center) / shs) ** 2).sum())
    if geo.valid[0, 0] and prior_r + min(float(static[0, 0]), p.gate_cost) < min(cost_none, p.gate_cost):
        return r.copy()
    return center.copy()


def _alignment(geo: _Geometry, shift: np.ndarray, anchors: int, prior_cost: float = 0.0) -> Alignment:
    pos, loc = geo.split(shift)
    return Alignment(np.zeros(3) if loc is None else loc, np.zeros(3) if pos is None else pos, anchors, prior_cost)


def match_scans(a: ScanFeatures, b: ScanFeatures, p: MatchParams | None = None) -> ScanPairResult:
    """Align two scans, then assign their lesions one-to-one under the gate."""
    p = p or MatchParams()
    return _match_block(_Geometry.of(a, b, p), static_cost(a, b, p), p)


class _PatientArrays:
    """Every pairwise term of one patient's lesions, computed once; lesions are laid out scan by
    scan, so a scan pair's terms are a block (a view, no copy)."""

    def __init__(self, lesions: Sequence[LesionObs], p: MatchParams, by_scan: dict[Hashable, list[int]]):
        order = [i for idx in by_scan.values() for i in idx]
        self.span: dict[Hashable, slice] = {}
        k = 0
        for s, idx in by_scan.items():
            self.span[s] = slice(k, k + len(idx))
            k += len(idx)
        f = ScanFeatures.of([lesions[i] for i in order])
        self.p = p
        self.static = static_cost(f, f, p)
        self.r_loc = f.location[None, :, :] - f.location[:, None, :]
        self.r_pos = f.position[None, :, :] - f.position[:, None, :]
        has_pos = np.isfinite(f.position).all(1)
        has_loc = np.isfinite(f.location).all(1)
        self.scan_has = {s: (bool(has_pos[sl].all()), bool(has_loc[sl].all())) for s, sl in self.span.items()}

    def geometry(self, sa: Hashable, sb: Hashable) -> _Geometry:
        a, b = self.span[sa], self.span[sb]
        (pa, la), (pb, lb) = self.scan_has[sa], self.scan_has[sb]
        return _Geometry.from_residuals(self.r_pos[a, b], self.r_loc[a, b], pa and pb, la and lb, self.p)

    def block(self, sa: Hashable, sb: Hashable) -> tuple[_Geometry, np.ndarray]:
        return self.geometry(sa, sb), self.static[self.span[sa], self.span[sb]]

    def match(self, sa: Hashable, sb: Hashable) -> ScanPairResult:
        return _match_block(*self.block(sa, sb), self.p)


def _match_block(geo: _Geometry, static: np.ndarray, p: MatchParams) -> ScanPairResult:
    al, cost, pairs, hypotheses = _align(geo, static, p)
    if al.prior_cost > 0.0 and cost.size:
        # each matched pair carries its share of the shift's prior cost: two scans aligned on one
        # lesion pay the whole shift on that pair, so a large displacement is not explained away
        cost = cost + al.prior_cost / max(al.anchors, 1)
        pairs = assign(cost, p.gate_cost)
    return ScanPairResult(cost, pairs, al, p.gate_cost, hypotheses=hypotheses)


def _match_blocks(blocks: Sequence[tuple[_Geometry, np.ndarray]], p: MatchParams) -> list[ScanPairResult]:
    """:func:`_match_block` for many scan pairs at once: pairs of the same shape and kind, every
    pair with a position, are aligned and assigned together in arrays (the per-call overhead of
    many small scan pairs is most of the work otherwise); the rest one by one."""
    out: list[ScanPairResult | None] = [None] * len(blocks)
    groups: dict[tuple, list[int]] = {}
    for k, (geo, st) in enumerate(blocks):
        n, m = st.shape
        if n and m and geo.valid.all():
            groups.setdefault((n, m, geo.kind), []).append(k)
        else:
            out[k] = _match_block(geo, st, p)
    for idx in groups.values():
        if len(idx) == 1:
            out[idx[0]] = _match_block(*blocks[idx[0]], p)
            continue
        for k, res in zip(idx, _match_group([blocks[k][0] for k in idx], np.stack([blocks[k][1] for k in idx]), p),
                          strict=True):
            out[k] = res
    return out  # type: ignore[return-value]


def _group_cost(rs: np.ndarray, shifts: np.ndarray, g: _Geometry) -> np.ndarray:
    """(K, H, n, m) position cost of K scan pairs (scaled residuals ``rs``: (K, n, m, d)) under H
    shifts each ((K, H, d)); as :meth:`_Geometry.cost`."""
    return _robust_cost(rs[:, None] - (shifts / g.sigma)[:, :, None, None, :], g)


def _robust_cost(u: np.ndarray, g: _Geometry) -> np.ndarray:
    """Position cost of scaled residuals ``u`` (..., d) after alignment: Student-t (``g.dof``) or
    Gaussian negative log-likelihood summed over axes; a pair displaced by more than
    ``g.max_sigmas`` along an axis is impossible (infinite)."""
    u2 = u * u
    if not g.dof or g.dof <= 0:
        rho = 0.5 * u2
    else:
        rho = np.log1p(u2 * (1.0 / g.dof))
        rho *= 0.5 * (g.dof + 1.0)
    far = u2 > g.max_sigmas * g.max_sigmas
    if g.kind == "both":
        # two measurements of one displacement: their mean cost (a geometric mean of the two
        # likelihoods keeps the scale of one), impossible only when both say so
        c = 0.5 * (rho[..., :3].sum(-1) + rho[..., 3:].sum(-1))
        far = far[..., :3].any(-1) & far[..., 3:].any(-1)
    else:
        c = rho.sum(-1)
        far = far.any(-1)
    c[far] = math.inf
    return c


def _assign_group(cost: np.ndarray, gate: float) -> list[list[tuple[int, int]]]:
    """:func:`assign` of each of K cost matrices (K, n, m)."""
    K, n, m = cost.shape
    c = np.where(np.isfinite(cost), cost, 1e9)
    if n == 1 or m == 1:
        flat = c.reshape(K, -1)
        best = flat.argmin(1)
        ok = flat[np.arange(K), best] < gate
        return [[divmod(int(b), m)] if o else [] for b, o in zip(best.tolist(), ok.tolist(), strict=True)]
    gain = np.minimum(c - gate, 0.0)
    out = []
    for k in range(K):
        r, j = linear_sum_assignment(gain[k])
        ck = c[k]
        out.append([(int(a), int(b)) for a, b in zip(r, j, strict=True) if ck[a, b] < gate])
    return out


def _match_group(geos: Sequence[_Geometry], static: np.ndarray, p: MatchParams) -> list[ScanPairResult]:
    """:func:`_align` + :func:`_match_block` for K scan pairs of one shape and kind, all valid."""
    g = geos[0]
    K, n, m = static.shape
    d = g.residual.shape[-1]
    R = np.stack([x.residual for x in geos])  # (K, n, m, d)
    rs = R / g.sigma
    shs = g.shift_sigma
    w = g.prior_weight
    gate = p.gate_cost
    center = np.zeros(d)
    if n == 1 and m == 1:
        r = R[:, 0, 0]  # (K, d)
        cost_none = _group_cost(rs, np.zeros((K, 1, d)), g)[:, 0, 0, 0] + static[:, 0, 0]
        prior_r = w * 0.5 * ((r / shs) ** 2).sum(-1)
        take = prior_r + np.minimum(static[:, 0, 0], gate) < np.minimum(cost_none, gate)
        s = np.where(take[:, None], r, 0.0)
        hypotheses = [np.stack([np.zeros(d), r[k]]) for k in range(K)]
    else:
        hyps = np.concatenate([np.zeros((K, 1, d)), R.reshape(K, n * m, d)], axis=1)  # (K, H, d)
        prior = w * 0.5 * ((hyps / shs) ** 2).sum(-1)  # (K, H)
        gain = np.minimum(_group_cost(rs, hyps, g) + static[:, None] - gate, 0.0)  # (K, H, n, m)
        H = hyps.shape[1]
        if min(n, m) > 2 and H > p.max_hypotheses:
            cheap = prior + gain.min(3).sum(2)
            keep = np.argsort(cheap, axis=1, kind="stable")[:, : p.max_hypotheses]
            score = np.full((K, H), np.inf)
            for k in range(K):
                score[k, keep[k]] = prior[k, keep[k]] + _best_matching_gain(gain[k, keep[k]])
        elif min(n, m) <= 2:
            score = prior + _best_matching_gain(gain.reshape(K * H, n, m)).reshape(K, H)
        else:
            score = np.stack([prior[k] + _best_matching_gain(gain[k]) for k in range(K)])
        s = hyps[np.arange(K), score.argmin(1)]  # (K, d)
        hypotheses = [_best_hypotheses(hyps[k], score[k], p) for k in range(K)]
    pairs: list[list[tuple[int, int]]] = [[] for _ in range(K)]
    cost = _group_cost(rs, s[:, None], g)[:, 0] + static
    active = np.ones(K, bool)
    for _ in range(max(0, p.align_iterations)):
        ks = np.flatnonzero(active)
        if not len(ks):
            break
        new = _assign_group(cost[ks], gate)
        moved = []
        for k, np_ in zip(ks.tolist(), new, strict=True):
            if not np_ or np_ == pairs[k]:
                active[k] = False
            else:
                pairs[k] = np_
                moved.append(k)
        if not moved:
            break
        mv = np.asarray(moved)
        mask = np.zeros((len(mv), n, m))
        for x, k in enumerate(moved):
            for i, j in pairs[k]:
                mask[x, i, j] = 1.0
        Rm = R[mv]  # (M, n, m, d)
        sm = s[mv].copy()
        prec0 = 1.0 / shs ** 2
        for _step in range(3):  # _Geometry.refine: IRLS, shrunk toward the prior
            wt = _irls_weights((Rm - sm[:, None, None, :]) / g.sigma, g.dof) / g.sigma ** 2 * mask[..., None]
            sm = ((wt * Rm).sum((1, 2)) + prec0 * center) / (wt.sum((1, 2)) + prec0)
        s[mv] = sm
        cost[mv] = _group_cost(rs[mv], sm[:, None], g)[:, 0] + static[mv]
    prior_cost = w * 0.5 * ((s / shs) ** 2).sum(-1)
    anchors = np.asarray([len(x) for x in pairs])
    redo = np.flatnonzero(prior_cost > 0.0)
    if len(redo):
        cost[redo] += (prior_cost[redo] / np.maximum(anchors[redo], 1))[:, None, None]
        for k, pr in zip(redo.tolist(), _assign_group(cost[redo], gate), strict=True):
            pairs[k] = pr
    conf = confidence_matrix(cost, gate)
    out = []
    for k in range(K):
        al = _alignment(g, s[k], int(anchors[k]), float(prior_cost[k]))
        out.append(ScanPairResult(cost[k], pairs[k], al, gate, _confidence=conf[k], hypotheses=hypotheses[k]))
    return out


# -- tracks ----------------------------------------------------------------------------------------
def build_tracks(scans: Sequence[Hashable], candidates: Sequence[tuple[float, float, int, int]],
                 use_support: bool = True, cannot_link: Sequence[tuple[int, int]] = ()) -> list[list[int]]:
    """Group lesions into tracks from candidate links ``(probability, cost, i, j)``.

    Links are taken greedily; a link joining two groups is refused when the groups share a scan,
    so no track ever holds two lesions of one scan, or when a ``cannot_link`` pair (a reviewer's
    rejection) would end up in one track. Order: links of infinite probability (known to be one
    lesion) first, then by *triangle support* (for each
    third scan where both ends have a link, +1 if they link to the same lesion there, −1 if to
    different ones: links that the rest of the patient's scans contradict come last), then by
    probability, then by cost. ``scans[i]`` is lesion i's scan. Returns every lesion's track
    (singletons included), members in index order, tracks ordered by their first member.
    """
    n = len(scans)
    parent = list(range(n))
    members_scans: list[set] = [{scans[i]} for i in range(n)]
    banned: dict[int, set[int]] = {}
    for a, b in cannot_link:
        banned.setdefault(a, set()).add(b)
        banned.setdefault(b, set()).add(a)
    members: list[list[int]] = [[i] for i in range(n)]
    partner: dict[int, dict[Hashable, int]] = {}
    if use_support:
        for _c, _k, i, j in candidates:
            partner.setdefault(i, {})[scans[j]] = j
            partner.setdefault(j, {})[scans[i]] = i

    def support(i: int, j: int) -> int:
        pi, pj = partner.get(i, {}), partner.get(j, {})
        if len(pi) > len(pj):
            pi, pj = pj, pi
        s = 0
        for sc, w in pi.items():
            w2 = pj.get(sc)
            if w2 is not None and sc != scans[i] and sc != scans[j]:
                s += 1 if w == w2 else -1
        return s

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # a link of infinite confidence (known to be one lesion) goes before everything else
    keyed = [(not math.isinf(conf), -(support(i, j) if use_support else 0), -conf, cost, i, j)
             for conf, cost, i, j in candidates]
    for _m, _s, _c, _k, i, j in sorted(keyed):
        ri, rj = find(i), find(j)
        if ri == rj or members_scans[ri] & members_scans[rj]:
            continue
        if banned and any(not banned.get(a, set()).isdisjoint(members[rj]) for a in members[ri]):
            continue
        if len(members_scans[ri]) < len(members_scans[rj]):
            ri, rj = rj, ri
        parent[rj] = ri
        members_scans[ri] |= members_scans[rj]
        members[ri].extend(members[rj])
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def match_patient(lesions: Sequence[LesionObs], params: MatchParams | None = None,
                  must_link: Sequence[tuple[int, int]] = (), keep_pair_results: bool = False,
                  cannot_link: Sequence[tuple[int, int]] = ()) -> PatientMatch:
    """Match every pair of one patient's scans and build tracks, ``SAME_LESION`` and
    ``POSSIBLE_SAME_LESION`` edges.

    ``must_link`` holds lesion-index pairs known to be one lesion (e.g. an accepted mining
    proposal and its track, or an accepted POSSIBLE edge): they are united first, as long as that
    keeps one lesion per scan. ``cannot_link`` pairs (rejected POSSIBLE edges) never share a track.
    """
    return match_patients([lesions], params, [must_link], keep_pair_results, [cannot_link])[0]


def match_patients(patients: Sequence[Sequence[LesionObs]], params: MatchParams | None = None,
                   must_links: Sequence[Sequence[tuple[int, int]]] | None = None,
                   keep_pair_results: bool = False,
                   cannot_links: Sequence[Sequence[tuple[int, int]]] | None = None) -> list[PatientMatch]:
    """:func:`match_patient` for many patients: the scan pairs of all of them are solved
    together (:func:`_match_blocks`), which is several times faster than one patient at a time
    on a graph of many small patients. The result of each patient is the same."""
    p = params or MatchParams()
    n_pat = len(patients)
    must_links = must_links or [()] * n_pat
    cannot_links = cannot_links or [()] * n_pat
    groups = [bookmark_groups(les, p.bookmark_overlap, cl) for les, cl in zip(patients, cannot_links, strict=True)]
    merged = [_merge_bookmarks(les, g, ml, cl) if len(g) < len(les) else (list(les), ml, cl)
              for les, g, ml, cl in zip(patients, groups, must_links, cannot_links, strict=True)]
    preps = [_Prepared(les, p) for les, _ml, _cl in merged]
    blocks = [b for pr in preps for b in pr.blocks()]
    solved = _match_blocks(blocks, p)
    modes, k = [], 0
    for pr in preps:
        modes += pr.modes(solved[k:k + len(pr.scan_pairs)])
        k += len(pr.scan_pairs)
    probs = mode_posteriors(modes, p.gate_cost, p.temperature)
    out, k = [], 0
    for x, pr in enumerate(preps):
        n = len(pr.scan_pairs)
        _les, ml, cl = merged[x]
        pm = pr.finish(solved[k:k + n], ml, keep_pair_results, cl, probs[k:k + n])
        out.append(pm if len(groups[x]) == len(patients[x]) else _split_bookmarks(pm, list(patients[x]), groups[x]))
        k += n
    return out


# -- bookmarks of one lesion -----------------------------------------------------------------------
def bookmark_groups(lesions: Sequence[LesionObs], overlap: float = 0.5,
                    cannot_link: Sequence[tuple[int, int]] = ()) -> list[list[int]]:
    """Lesions of one scan that are one lesion bookmarked twice (e.g. on neighbouring slices).

    Two lesions are one when each centre lies inside the other — the centres closer than
    ``overlap`` × the smaller long diameter, in the scan's own millimetres
    (``scan_position_mm``) — their coarse types do not differ and no ``cannot_link`` pair keeps
    them apart: two distinct lesions cannot share their space. Groups are complete (every two
    members qualify), in index order; a lesion alone is a group of one.
    """
    n = len(lesions)
    groups = [[i] for i in range(n)]
    if overlap <= 0 or n < 2:
        return groups
    apart = {(min(a, b), max(a, b)) for a, b in cannot_link}
    by_scan: dict[Hashable, list[int]] = {}
    for i, les in enumerate(lesions):
        if les.scan_position_mm is not None and les.long_diameter_mm:
            by_scan.setdefault(les.scan, []).append(i)
    close: list[tuple[float, int, int]] = []
    for idx in by_scan.values():
        for x, a in enumerate(idx):
            for b in idx[x + 1:]:
                la, lb = lesions[a], lesions[b]
                ta, tb = (-1 if x.type_code is None else x.type_code for x in (la, lb))
                if ta >= 0 and tb >= 0 and ta != tb:
                    continue
                d = math.dist(la.scan_position_mm, lb.scan_position_mm)  # type: ignore[arg-type]
                if d < overlap * min(la.long_diameter_mm, lb.long_diameter_mm) and (a, b) not in apart:  # type: ignore[type-var]
                    close.append((d, a, b))
    if not close:
        return groups
    near = {(a, b) for _d, a, b in close}
    group_of = list(range(n))
    for _d, a, b in sorted(close):  # nearest first; a group grows only by a lesion close to all of it
        ga, gb = groups[group_of[a]], groups[group_of[b]]
        if ga is gb or not all((min(u, v), max(u, v)) in near for u in ga for v in gb):
            continue
        ga.extend(gb)
        for v in gb:
            group_of[v] = group_of[a]
        gb.clear()
    return sorted((sorted(g) for g in groups if g), key=lambda g: g[0])


def _mean(values: Sequence[Sequence[float] | None]) -> tuple[float, ...] | None:
    vs = [v for v in values if v is not None]
    return tuple(float(x) for x in np.mean(np.asarray(vs, float), axis=0)) if len(vs) == len(values) else None


def _one_per_lesion(lesions: Sequence[LesionObs], p: MatchParams) -> list[LesionObs]:
    """The lesions as matching sees them: each group of bookmarks of one lesion as one."""
    groups = bookmark_groups(lesions, p.bookmark_overlap)
    return _merge_bookmarks(lesions, groups, (), ())[0] if len(groups) < len(lesions) else list(lesions)


def _merge_bookmarks(lesions: Sequence[LesionObs], groups: Sequence[Sequence[int]],
                     must_link: Sequence[tuple[int, int]], cannot_link: Sequence[tuple[int, int]]
                     ) -> tuple[list[LesionObs], list[tuple[int, int]], list[tuple[int, int]]]:
    """One lesion per group (the first member's identity; mean positions, the largest
    diameters: RECIST measures a lesion where it is longest), links mapped onto the groups."""
    rep_of = {i: g for g, members in enumerate(groups) for i in members}
    merged = []
    for members in groups:
        ls = [lesions[i] for i in members]
        if len(ls) == 1:
            merged.append(ls[0])
            continue
        longs = [x.long_diameter_mm for x in ls if x.long_diameter_mm]
        shorts = [x.short_diameter_mm for x in ls if x.short_diameter_mm]
        types = [x.type_code for x in ls if x.type_code is not None and x.type_code >= 0]
        merged.append(replace(
            ls[0], location=_mean([x.location for x in ls]), position_mm=_mean([x.position_mm for x in ls]),
            scan_position_mm=_mean([x.scan_position_mm for x in ls]),
            long_diameter_mm=max(longs) if longs else None, short_diameter_mm=max(shorts) if shorts else None,
            type_code=types[0] if types else -1, embedding=_mean([x.embedding for x in ls])))

    def mapped(pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        return sorted({(rep_of[a], rep_of[b]) for a, b in pairs if rep_of[a] != rep_of[b]})

    return merged, mapped(must_link), mapped(cannot_link)


def _split_bookmarks(pm: PatientMatch, lesions: list[LesionObs], groups: Sequence[Sequence[int]]) -> PatientMatch:
    """A match of the merged lesions (:func:`_merge_bookmarks`) as a match of ``lesions``: every
    bookmark of a group is in the group's track, with its edges, probabilities and costs."""
    rep_of = np.empty(len(lesions), dtype=int)
    for g, members in enumerate(groups):
        rep_of[members] = g
    tracks = [[i for g in t for i in groups[g]] for t in pm.tracks]
    edges = [replace(e, src=a, dst=b) for e in pm.edges for a in groups[e.src] for b in groups[e.dst]]
    possible = [replace(e, src=groups[e.src][0], dst=groups[e.dst][0]) for e in pm.possible]
    P = pm.probability[np.ix_(rep_of, rep_of)] if pm.probability is not None else None
    by_scan: dict[Hashable, list[int]] = {}
    for i, les in enumerate(lesions):
        by_scan.setdefault(les.scan, []).append(i)
    results: dict[tuple[Hashable, Hashable], ScanPairResult] = {}
    for (sa, sb), r in pm.pair_results.items():  # each bookmark with its group's row and column
        ka = [pm.by_scan[sa].index(int(rep_of[i])) for i in by_scan[sa]]
        kb = [pm.by_scan[sb].index(int(rep_of[j])) for j in by_scan[sb]]
        assigned = set(r.pairs)
        results[(sa, sb)] = ScanPairResult(
            r.cost[np.ix_(ka, kb)], [(x, y) for x, i in enumerate(ka) for y, j in enumerate(kb) if (i, j) in assigned],
            r.alignment, r.gate, probability=None if r.probability is None else r.probability[np.ix_(ka, kb)],
            hypotheses=r.hypotheses)
    return PatientMatch(lesions, tracks, edges, pm.scan_pairs, results, by_scan, pm.arrays, possible, P,
                        [list(g) for g in groups if len(g) > 1])


class _Prepared:
    """One patient's scans, their order and pairwise terms, before its scan pairs are solved."""

    def __init__(self, lesions: list[LesionObs], p: MatchParams):
        self.lesions, self.p = lesions, p
        by_scan: dict[Hashable, list[int]] = {}
        for i, les in enumerate(lesions):
            by_scan.setdefault(les.scan, []).append(i)
        self.by_scan = by_scan
        self.scan_order = sorted(by_scan, key=lambda s: (tuple(lesions[by_scan[s][0]].order), str(s)))
        self.arrays = _PatientArrays(lesions, p, by_scan)
        order = self.scan_order
        self.scan_pairs = [(sa, sb) for ka, sa in enumerate(order) for sb in order[ka + 1:]]

    def blocks(self) -> list[tuple[_Geometry, np.ndarray]]:
        return [self.arrays.block(sa, sb) for sa, sb in self.scan_pairs]

    def modes(self, solved: Sequence[ScanPairResult]) -> list[list[tuple[float, np.ndarray]]]:
        """Each scan pair's shift modes (:func:`scan_pair_modes`), around its own alignment."""
        return [scan_pair_modes(*self.arrays.block(sa, sb), self.p, res.alignment, res.hypotheses)
                for (sa, sb), res in zip(self.scan_pairs, solved, strict=True)]

    def probabilities(self, blocks: Sequence[np.ndarray], solved: Sequence[ScanPairResult] | None = None
                      ) -> np.ndarray:
        """(n, n) pair probabilities (0 within a scan) from each scan pair's block
        (:func:`mode_posteriors`); with ``solved``, each result keeps its block
        (``ScanPairResult.probability``)."""
        n = len(self.lesions)
        P = np.zeros((n, n))
        for k, ((sa, sb), block) in enumerate(zip(self.scan_pairs, blocks, strict=True)):
            ia, ib = self.by_scan[sa], self.by_scan[sb]
            P[np.ix_(ia, ib)] = block
            P[np.ix_(ib, ia)] = block.T
            if solved is not None:
                solved[k].probability = block
        return P

    def finish(self, solved: Sequence[ScanPairResult], must_link: Sequence[tuple[int, int]],
               keep_pair_results: bool, cannot_link: Sequence[tuple[int, int]] = (),
               blocks: Sequence[np.ndarray] | None = None) -> PatientMatch:
        """Tracks and edges from the solved scan pairs (``blocks``: their probabilities, when
        already computed with other patients')."""
        lesions, by_scan, p = self.lesions, self.by_scan, self.p
        rank = {s: k for k, s in enumerate(self.scan_order)}
        scan_of = [les.scan for les in lesions]
        if blocks is None:
            blocks = mode_posteriors(self.modes(solved), p.gate_cost, p.temperature)
        P = self.probabilities(blocks, solved)
        for i, j in must_link:  # a reviewer's decision is certain
            P[i, j] = P[j, i] = 1.0
        for i, j in cannot_link:
            P[i, j] = P[j, i] = 0.0
        results: dict[tuple[Hashable, Hashable], ScanPairResult] = {}
        assigned: set[tuple[int, int]] = set()
        cost = np.full(P.shape, math.inf)
        for (sa, sb), res in zip(self.scan_pairs, solved, strict=True):
            ia, ib = by_scan[sa], by_scan[sb]
            results[(sa, sb)] = res
            cost[np.ix_(ia, ib)] = res.cost
            cost[np.ix_(ib, ia)] = res.cost.T
            for i, j in res.pairs:
                assigned.add((ia[i], ib[j]))
        # links: every pair its scan pair finds probable (the pairwise wins), known pairs first
        candidates = [(math.inf, 0.0, i, j) for i, j in must_link]
        iu, ju = np.nonzero(np.triu(P >= p.link_probability, 1))
        candidates += [(float(P[i, j]), float(cost[i, j]), int(i), int(j)) for i, j in zip(iu, ju, strict=True)]
        tracks = build_tracks(scan_of, candidates, p.track_support, cannot_link)
        pair_p, possible = track_probabilities(tracks, P, scan_of, by_scan, p.possible_probability, cannot_link)
        for i, j in must_link:  # a reviewer's decision is certain
            if (min(i, j), max(i, j)) in pair_p:
                pair_p[(min(i, j), max(i, j))] = 1.0

        pos_in_scan = {i: (s, k) for s in self.scan_order for k, i in enumerate(by_scan[s])}
        edges: list[Edge] = []
        for members in tracks:
            members.sort(key=lambda i: (rank[lesions[i].scan], i))
            for x, u in enumerate(members):
                for v in members[x + 1:]:
                    su, ku = pos_in_scan[u]
                    sv, kv = pos_in_scan[v]
                    res = results[(su, sv)]
                    method = METHOD_ASSIGNED if (u, v) in assigned else METHOD_TRACK
                    edges.append(Edge(u, v, float(res.cost[ku, kv]), res.confidence_of(ku, kv), method,
                                      pair_p[(min(u, v), max(u, v))]))
        pos = [PossibleEdge(a, b, q, float(cost[a, b])) for a, b, q in possible]
        return PatientMatch(lesions, tracks, edges, scan_pairs=len(results),
                            pair_results=results if keep_pair_results else {}, by_scan=by_scan,
                            arrays=self.arrays if keep_pair_results else None, possible=pos, probability=P)


def nearest_location(source: LesionObs, targets: Sequence[LesionObs]) -> int | None:
    """Baseline: the target nearest in normalised location (no alignment, no one-to-one)."""
    best, best_d = None, math.inf
    if source.location is None:
        return None
    for k, t in enumerate(targets):
        if t.location is None:
            continue
        d = math.dist(source.location, t.location)
        if d < best_d:
            best, best_d = k, d
    return best


# -- scoring (the evaluations) -------------------------------------------------------------------
FAILURE_CAUSES = ("gate", "track", "assignment")


def failure_cause(pm: PatientMatch, i: int, j: int, link_probability: float = 0.5) -> str | None:
    """Why lesions i and j (one lesion in truth, in different scans) are not in one track, from
    their scan pair's own evidence (``pm.probability``): ``track`` — the scan pair links them (a
    pairwise win that track building lost); ``assignment`` — it links i or j to another lesion of
    the other's scan instead; ``gate`` — it links neither (no candidate probable enough). None
    when they are in one track."""
    if pm.probability is None:
        raise ValueError("failure_cause needs a PatientMatch from match_patient(s)")
    tof = pm.track_of()
    if tof[i] == tof[j]:
        return None
    P, link = pm.probability, link_probability
    if P[i, j] >= link:
        return "track"
    bi, bj = pm.by_scan[pm.lesions[j].scan], pm.by_scan[pm.lesions[i].scan]
    if (P[i, bi] >= link).any() or (P[j, bj] >= link).any():
        return "assignment"
    return "gate"


def calibration_summary(probability: Sequence[float], outcome: Sequence[bool], bins: int = 10) -> dict[str, Any]:
    """Count, mean probability, observed frequency, ECE and the reliability diagram of some
    probabilistic statements (e.g. SAME_LESION edges) whose truth is known."""
    p = np.asarray(probability, float)
    y = np.asarray(outcome, bool)
    ece = expected_calibration_error(p, y, bins)
    return {"n": int(len(p)), "meanProbability": round(float(p.mean()), 4) if len(p) else None,
            "frequency": round(float(y.mean()), 4) if len(p) else None,
            "ece": None if ece is None else round(ece, 4),
            "reliability": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                            for r in reliability(p, y, bins)]}


# -- calibration -----------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Noise scales measured on the data being matched (no labels): what :func:`calibrate` found."""

    params: MatchParams
    pairs: int  # matched pairs the residual scales come from
    scan_pairs: int  # aligned scan pairs (≥ 2 matched lesions) the shift spread comes from
    measured: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "scanPairs": self.scan_pairs, "measured": self.measured,
                "params": self.params.to_dict()}


def calibrate(patients: Sequence[Sequence[LesionObs]], params: MatchParams | None = None, rounds: int = 2,
              min_confidence: float = 0.9, prior_weight: tuple[float, float] = (20.0, 10.0),
              bounds: tuple[float, float] = (0.1, 3.0), mapper: Callable = map) -> Calibration:
    """Fit the position, shift and size scales to ``patients`` (lists of one patient's lesions),
    unsupervised: match with the current scales, take the confident pairs (``min_confidence``) of
    scan pairs matched on at least two lesions, and measure the robust spread (1.4826 × median
    absolute deviation) of what each scale models — the residual position after alignment, the
    scan-pair shift, the log size ratio, the embedding distance (where lesions are embedded).
    Repeated ``rounds`` times.

    Each measured scale is pooled with its default in log space, the default weighing as
    ``prior_weight`` observations (pairs for residual scales, scan pairs for shifts), so a small
    graph stays near the defaults; the result stays within ``bounds`` × the default, and residual
    scales never go below ``min_sigma_mm`` (the resolution of a RECIST centre). The gate is set
    last, from the costs of the same confident pairs: ``median + gate_spread × (q90 − median)``
    (:func:`calibrated_gate`), with at least ``_GATE_MIN_PAIRS`` of them. The tail weight
    (``tail_dof``) is not fitted: confident matches under-represent the lesions that really move,
    and the fit (Student-t 2–4 on DeepLesion) costs 4–9 points of DLS accuracy.
    ``mapper`` maps over patients (e.g. a process pool's ``map``).
    """
    base = params or MatchParams()
    p = base
    n_pairs = n_scan_pairs = 0
    measured: dict[str, Any] = {}
    gate: float | None = None
    patients = [list(x) for x in patients]
    for _ in range(max(1, rounds)):
        chunks = [patients[i:i + _CHUNK] for i in range(0, len(patients), _CHUNK)]
        parts = list(mapper(_calibration_chunk, chunks, [p] * len(chunks), [min_confidence] * len(chunks)))
        pooled_rows = {k: [r for part in parts for r in part[k]] for k in _SAMPLE_KEYS}
        n_pairs = len(pooled_rows["location_sigma_mm"]) + len(pooled_rows["position_sigma_mm"])
        n_scan_pairs = len(pooled_rows["location_shift_sigma_mm"]) + len(pooled_rows["position_shift_sigma_mm"])
        changes: dict[str, Any] = {}
        measured = {}
        scale = np.asarray(base.location_scale_mm, float)
        for key in _SAMPLE_KEYS[:-1]:  # the scales (the gate follows)
            rows = pooled_rows[key]
            if len(rows) < 3:
                continue
            mult = scale if key.startswith("location") else 1.0
            n0 = prior_weight[1] if "shift" in key else prior_weight[0]
            default = np.asarray(getattr(base, key), float)
            s = 1.4826 * np.median(np.abs(np.asarray(rows) * mult), axis=0)
            s = np.maximum(s, default * bounds[0])
            if key in ("location_sigma_mm", "position_sigma_mm"):
                # a RECIST centre is known to about a pixel in-plane and a slice through-plane: key
                # slices quantise z, so many residuals are exactly 0 and the MAD would go below that
                s = np.maximum(s, np.asarray(base.min_sigma_mm, float))
            n = len(rows)
            pooled = np.exp((n * np.log(s) + n0 * np.log(default)) / (n + n0))
            pooled = np.clip(pooled, default * bounds[0], default * bounds[1])
            measured[key] = (np.round(s, 4).tolist(), n)
            changes[key] = round(float(pooled), 4) if pooled.ndim == 0 else tuple(round(float(v), 3) for v in pooled)
        costs = pooled_rows["gate_cost"]
        gate = None
        if len(costs) >= _GATE_MIN_PAIRS:  # a 90th percentile of a handful of costs says little
            # the gate is an outlier bound on the cost of a true pair: as far above the typical cost
            # of a confident match as the spread of those costs says (data whose follow-ups barely
            # move get a tight gate, DeepLesion's organ motion a loose one)
            med, q90 = (float(x) for x in np.percentile(costs, [50, 90]))
            measured["gate_cost"] = ([round(med, 4), round(q90, 4)], len(costs))
            gate = calibrated_gate(med, q90, len(costs), base, n0=prior_weight[0])
        p = base.replace(**changes)
    if gate is not None:  # set last: the scales are measured under the default gate
        p = p.replace(gate_cost=gate)
    return Calibration(p, n_pairs, n_scan_pairs, measured)


#: Temperatures the calibrator scores (a factor √2 apart), refined between the best and its neighbours.
TEMPERATURE_GRID = (0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83)


class MatchCalibrator:
    """Fits the matcher to the graph being matched, without labels (scikit-learn contract:
    :meth:`fit` returns the calibrator, fitted state ends in ``_``).

    1. Noise scales and gate (:func:`calibrate`): the robust spread of what each scale models,
       and an outlier bound on the cost of a true pair, from the confident matches.
    2. Temperature — how many log-odds one nat of cost is worth in the pair probabilities
       (:func:`mode_posterior`): the value in ``temperatures`` (refined by a parabola through the
       best and its neighbours, in log scale) that maximises the triangle consistency of the
       patients' pairwise probabilities (:func:`triangle_log_likelihood`: scan pairs are matched
       independently, so over-confident probabilities contradict each other around triangles of
       scans, under-confident ones leave them undecided) plus a log-normal prior centred on 1
       (the costs are negative log-likelihoods: 1 is the model's own scale) with spread
       ``temperature_prior_sd``. Only patients with three or more scans say anything about it;
       with none, it stays 1.

    ``max_patients``: at most this many patients (a ``random_state`` sample) fit the temperature.
    ``fit_scales=False`` keeps the scales and gate of ``params`` and fits the temperature only.
    """

    def __init__(self, params: MatchParams | None = None, rounds: int = 2, min_confidence: float = 0.9,
                 temperatures: Sequence[float] = TEMPERATURE_GRID, temperature_prior_sd: float = 0.5,
                 max_patients: int | None = None, random_state: int | None = None, fit_scales: bool = True):
        self.params = params
        self.fit_scales = fit_scales
        self.rounds = rounds
        self.min_confidence = min_confidence
        self.temperatures = temperatures
        self.temperature_prior_sd = temperature_prior_sd
        self.max_patients = max_patients
        self.random_state = random_state

    def fit(self, patients: Sequence[Sequence[LesionObs]], y: Any = None, mapper: Callable = map) -> MatchCalibrator:
        """``patients``: lists of one patient's lesions; ``mapper`` maps over chunks of patients
        (e.g. a process pool's ``map``). ``y`` is ignored (no labels)."""
        patients = [list(x) for x in patients]
        if self.fit_scales:
            cal = calibrate(patients, self.params, rounds=self.rounds, min_confidence=self.min_confidence,
                            mapper=mapper)
        else:  # the scales and gate as given: only the temperature is fitted
            cal = Calibration(self.params or MatchParams(), 0, 0, {})
        many = [x for x in patients if len({les.scan for les in x}) >= 3]
        if self.max_patients is not None and len(many) > self.max_patients:
            rng = np.random.default_rng(self.random_state)
            many = [many[k] for k in sorted(rng.choice(len(many), self.max_patients, replace=False))]
        temps = np.asarray(sorted(self.temperatures), float)
        chunks = [many[i:i + _CHUNK] for i in range(0, len(many), _CHUNK)]
        parts = list(mapper(_temperature_chunk, chunks, [cal.params] * len(chunks), [tuple(temps)] * len(chunks)))
        ll = np.sum([pt for pt in parts], axis=0) if parts else np.zeros(len(temps))
        self.triangle_log_likelihood_ = dict(zip(temps.tolist(), np.round(ll, 3).tolist(), strict=True))
        self.n_patients_ = len(many)
        t = 1.0
        if parts and np.any(ll != 0.0):
            x = np.log(temps)
            score = ll - 0.5 * (x / self.temperature_prior_sd) ** 2
            k = int(np.argmax(score))
            t = float(temps[k])
            if 0 < k < len(temps) - 1:  # the vertex of the parabola through the best and its neighbours
                (x0, x1, x2), (y0, y1, y2) = x[k - 1:k + 2], score[k - 1:k + 2]
                den = (x0 - x1) * (x0 - x2) * (x1 - x2)
                a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
                b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den
                if a < 0:
                    t = float(np.exp(min(max(-b / (2 * a), x0), x2)))
        self.temperature_ = round(t, 3)
        self.params_ = cal.params.replace(temperature=self.temperature_)
        cal.params = self.params_
        cal.measured["temperature"] = ([self.temperature_], self.n_patients_)
        cal.measured["triangleLogLikelihood"] = self.triangle_log_likelihood_
        self.calibration_ = cal
        return self


def _temperature_chunk(patients: Sequence[Sequence[LesionObs]], p: MatchParams,
                       temperatures: Sequence[float]) -> np.ndarray:
    """Some patients' triangle log-likelihood at each temperature (their modes computed once)."""
    preps = [_Prepared(_one_per_lesion(x, p), p) for x in patients]
    solved = _match_blocks([b for pr in preps for b in pr.blocks()], p)
    modes, k = [], 0
    for pr in preps:
        modes += pr.modes(solved[k:k + len(pr.scan_pairs)])
        k += len(pr.scan_pairs)
    out = np.zeros(len(temperatures))
    for x, t in enumerate(temperatures):
        probs, k = mode_posteriors(modes, p.gate_cost, t), 0
        for pr in preps:
            n = len(pr.scan_pairs)
            out[x] += triangle_log_likelihood(pr.probabilities(probs[k:k + n]), [les.scan for les in pr.lesions])
            k += n
    return out


_SAMPLE_KEYS = ("location_sigma_mm", "location_shift_sigma_mm", "position_sigma_mm", "position_shift_sigma_mm",
                "size_sigma_log", "embedding_sigma", "gate_cost")
_GATE_BOUNDS = (0.4, 1.5)  # the calibrated gate stays within these multiples of the default
_GATE_MIN_PAIRS = 50  # confident matches needed to calibrate the gate (else the default stays)


def calibrated_gate(median: float, q90: float, n: int, base: MatchParams, spread: float | None = None,
                    n0: float = 20.0) -> float:
    """The gate from the costs of ``n`` confident matches (their median and 90th percentile):
    ``median + spread × (q90 − median)``, pooled in log space with ``base.gate_cost`` weighing as
    ``n0`` matches, within ``_GATE_BOUNDS`` × ``base.gate_cost``."""
    k = base.gate_spread if spread is None else spread
    g = max(median + k * (q90 - median), 1e-6)
    g = math.exp((n * math.log(g) + n0 * math.log(base.gate_cost)) / (n + n0))
    return round(min(max(g, base.gate_cost * _GATE_BOUNDS[0]), base.gate_cost * _GATE_BOUNDS[1]), 3)


_CHUNK = 100  # patients matched together (one task of a process pool)


def _calibration_chunk(patients: Sequence[Sequence[LesionObs]], p: MatchParams,
                       min_confidence: float) -> dict[str, list]:
    """Some patients' contribution to :func:`calibrate` (see :func:`_calibration_sample`)."""
    out: dict[str, list] = {k: [] for k in _SAMPLE_KEYS}
    preps = [_Prepared(_one_per_lesion(x, p), p) for x in patients]
    solved = _match_blocks([b for pr in preps for b in pr.blocks()], p)
    k = 0
    for pr in preps:  # the scan pairs are all the sample needs (no probabilities, no tracks)
        n = len(pr.scan_pairs)
        pm = PatientMatch(pr.lesions, [], [], n, dict(zip(pr.scan_pairs, solved[k:k + n], strict=True)),
                          pr.by_scan, pr.arrays)
        k += n
        for key, v in _calibration_sample(pm, min_confidence).items():
            out[key].extend(v)
    return out


def _calibration_sample(pm: PatientMatch, min_confidence: float) -> dict[str, list]:
    """One patient's contribution to :func:`calibrate`: residuals, shifts and log size ratios of
    the confident pairs of scan pairs matched on at least two lesions."""
    out: dict[str, list] = {k: [] for k in _SAMPLE_KEYS}
    lesions = pm.lesions
    arrays = pm.arrays
    feats = ScanFeatures.of(lesions)
    log_size, emb = feats.log_size, feats.embedding
    for (sa, sb), r in pm.pair_results.items():
        good = [(i, j) for i, j in r.pairs if r.confidence_of(i, j) >= min_confidence]
        if len(good) < 2:
            continue
        ia, ib = pm.by_scan[sa], pm.by_scan[sb]
        geo = arrays.geometry(sa, sb)
        rows = np.asarray([geo.residual[i, j] for i, j in good if geo.valid[i, j]])
        if len(rows) < 2:
            continue
        # the unshrunk shift (the prior pulls the alignment toward 0: measuring its spread on the
        # aligned shifts would shrink it a little more every round)
        shift = np.median(rows, axis=0)
        for kind, s_part, r_part in zip(("position", "location"), geo.split(shift), geo.split(rows - shift), strict=True):
            if s_part is not None:
                out[f"{kind}_shift_sigma_mm"].append(s_part)
                out[f"{kind}_sigma_mm"].extend(r_part)
        out["gate_cost"].extend(float(r.cost[i, j]) for i, j in good)
        for i, j in good:
            d = log_size[ib[j]] - log_size[ia[i]]
            if np.isfinite(d):
                out["size_sigma_log"].append(float(d))
            if emb is not None:
                e = float(np.linalg.norm(emb[ib[j]] - emb[ia[i]]))
                if np.isfinite(e):
                    out["embedding_sigma"].append(e)
    return out
