"""RECIST 1.1 change classification of one lesion followed over time (pure Python).

A track is measured at *visits* (time points: a patient's studies in time order) by its long
diameter. Per measurement, against the track's own history (RECIST 1.1 applied to one lesion):

- **progressing**: at least 20 % *and* at least 5 mm larger than the nadir (the smallest earlier
  measurement, baseline included);
- **responding**: at least 30 % smaller than the baseline (the first measurement);
- **stable**: neither.

The track's ``status`` summarises where it stands at the patient's latest visit:

- ``disappeared``: not measured at the patient's last visit although it was before;
- ``new``: first measured after the patient's first visit (RECIST: a new lesion);
- ``baseline``: measured once, and the patient has no other visit (nothing to compare);
- otherwise the response of its last measurement: ``progressing``, ``responding`` or ``stable``.

"Not measured" means not annotated: sparse annotations (DeepLesion) make ``new`` and
``disappeared`` statements about the annotations, which missing-annotation mining can correct.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

PROGRESSION_FRACTION = 0.20
PROGRESSION_MIN_MM = 5.0
RESPONSE_FRACTION = 0.30
STATUSES = ("new", "disappeared", "progressing", "responding", "stable", "baseline")
RESPONSES = ("baseline", "progressing", "responding", "stable")
_EPS = 1e-9  # measurements are floats: 12.0 over a 10.0 nadir is 20 % exactly, not 19.999…


def response(diameter_mm: float, baseline_mm: float, nadir_mm: float) -> str:
    """The RECIST 1.1 response of one measurement given the track's baseline and nadir."""
    growth = diameter_mm - nadir_mm
    if growth >= PROGRESSION_FRACTION * nadir_mm - _EPS and growth >= PROGRESSION_MIN_MM - _EPS:
        return "progressing"
    if baseline_mm - diameter_mm >= RESPONSE_FRACTION * baseline_mm - _EPS:
        return "responding"
    return "stable"


def _pct(now: float, ref: float) -> float | None:
    return None if ref <= 0 else round(100.0 * (now - ref) / ref, 2)


@dataclass
class VisitChange:
    """One measured visit of a track."""

    visit: Hashable  # the time key (study index or date)
    long_diameter_mm: float
    response: str  # "baseline" for the first measurement, else one of RESPONSES
    change_from_baseline_pct: float | None
    change_from_nadir_pct: float | None


@dataclass
class TrackChange:
    """A track's classification and the figures behind it."""

    status: str
    visits: list[VisitChange] = field(default_factory=list)
    baseline_mm: float | None = None
    nadir_mm: float | None = None  # the smallest measurement before the last one
    last_mm: float | None = None
    first_visit: Hashable | None = None
    last_visit: Hashable | None = None

    @property
    def change_from_baseline_pct(self) -> float | None:
        return self.visits[-1].change_from_baseline_pct if self.visits else None

    @property
    def change_from_nadir_pct(self) -> float | None:
        return self.visits[-1].change_from_nadir_pct if self.visits else None

    def to_props(self) -> dict[str, Any]:
        """Graph properties of the :Track node (camelCase, units in the names)."""
        out = {
            "status": self.status, "nVisits": len(self.visits), "baselineMm": self.baseline_mm,
            "nadirMm": self.nadir_mm, "lastMm": self.last_mm,
            "changeFromBaselinePct": self.change_from_baseline_pct,
            "changeFromNadirPct": self.change_from_nadir_pct,
        }
        return {k: v for k, v in out.items() if v is not None}


def classify(measurements: Sequence[tuple[Hashable, float]], patient_visits: Sequence[Hashable]) -> TrackChange:
    """Classify one track.

    ``measurements``: ``(visit, long diameter mm)`` pairs; several at one visit (the lesion
    measured in two series of one study) are averaged. ``patient_visits``: every visit of the
    patient (sortable keys); the track's own visits must be among them.
    """
    per: dict[Hashable, list[float]] = {}
    for v, d in measurements:
        if d is not None and d > 0:
            per.setdefault(v, []).append(float(d))
    if not per:
        raise ValueError("a track needs at least one positive long diameter")
    visits = sorted(per)
    all_visits = sorted(set(patient_visits) | set(visits))
    series = [(v, sum(per[v]) / len(per[v])) for v in visits]
    baseline = series[0][1]
    out: list[VisitChange] = [VisitChange(series[0][0], round(baseline, 4), "baseline", 0.0, None)]
    nadir = baseline
    for v, d in series[1:]:
        out.append(VisitChange(v, round(d, 4), response(d, baseline, nadir), _pct(d, baseline), _pct(d, nadir)))
        nadir = min(nadir, d)
    last = series[-1][1]
    nadir_before_last = min(d for _, d in series[:-1]) if len(series) > 1 else None
    if visits[-1] != all_visits[-1]:
        status = "disappeared"
    elif visits[0] != all_visits[0]:
        status = "new"
    elif len(series) == 1:
        status = "baseline"
    else:
        status = out[-1].response
    return TrackChange(status, out, round(baseline, 4),
                       None if nadir_before_last is None else round(nadir_before_last, 4),
                       round(last, 4), visits[0], visits[-1])
