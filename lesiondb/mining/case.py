"""Mining one patient: its tracks, studies and images → proposals (around :mod:`lesiondb.core.mining`).

``mine(engine, load_volume, …)`` reads tracked patients from the graph in batches
(:func:`read_cases`), loads each study's volume once per patient, mines every track
(:func:`mine_case`) and writes ``(:Proposal)`` nodes linked ``IN_STUDY`` to the study and
``PROPOSED_FOR`` to the track (:func:`write_proposals`). Proposals are kept apart from annotations;
:func:`accept` turns one into an annotated lesion of its track (``source: 'proposal'``), idempotently,
:func:`reject` marks it. Neither touches an existing lesion.

Proposal ids are stable (a hash of track + study): re-mining refreshes a pending proposal,
leaves accepted and rejected ones as they are, and never creates a second one for the same track
and study.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..core import mining as M
from ..core.results import Result
from ..errors import ImageError, InputError

log = logging.getLogger(__name__)

#: Proposal threshold (× the study's evidence factor). Chosen on development seeds 9601–9616 with
#: the pattern term in the score (docs/mining.md): the one maximising the smaller of recall and
#: precision pooled over them.
DEFAULT_MIN_SCORE = 0.04
#: Expected error of a prediction aligned by body geometry only (no lesion matched in both studies).
BODY_SIGMA_MM = 8.0
#: ... and by normalised location only (no patient-mm geometry at all).
LOCATION_SIGMA_MM = 15.0
STATUSES = ("pending", "accepted", "rejected")

#: (hu [slice, row, col], grid) of a study, or None when it has no images.
VolumeLoader = Callable[["StudyData"], "tuple[np.ndarray, M.Grid] | None"]
#: Embeds regions of one volume: (hu, grid, [(slice_index, bbox_px)]) -> (n, d) unit vectors.
Embedder = Callable[[np.ndarray, M.Grid, list], np.ndarray]


# -- the per-patient unit -----------------------------------------------------------------------
@dataclass
class StudyData:
    study_id: str
    time: float
    study_uid: str | None = None
    series_uid: str | None = None
    image_ref: str | None = None  # series folder (relative to an image root, or absolute)
    props: dict = field(default_factory=dict)
    series_id: str | None = None  # pseudonym of the series its lesions were annotated on


@dataclass
class PatientCase:
    patient_id: str
    studies: list[StudyData]
    tracks: dict[str, list[M.Observation]]  # trackingUid -> annotated instances
    lesions: dict[str, list[M.Observation]] = field(default_factory=dict)  # studyId -> every lesion
    lesion_props: dict[str, dict] = field(default_factory=dict)  # lesionId -> graph properties


@dataclass
class ProposalRecord:
    proposal_id: str
    patient_id: str
    study_id: str
    tracking_uid: str
    candidate: M.Candidate
    prediction: M.Prediction
    grid: M.Grid
    study_uid: str | None = None
    series_uid: str | None = None
    image_ref: str | None = None
    type_code: int | None = None
    series_id: str | None = None
    #: factor on the score threshold for this study (:func:`lesiondb.core.mining.evidence_factor`)
    evidence: float = 1.0

    def passes(self, min_score: float) -> bool:
        """The candidate scores at or above ``min_score`` × this study's evidence factor."""
        return self.candidate.score >= min_score * self.evidence

    @property
    def position_mm(self) -> M.Vec3:
        return self.candidate.position_mm

    def to_props(self, model_id: str | None) -> dict[str, Any]:
        c = self.candidate
        x1, y1, x2, y2 = c.recist_long_px
        long_px = math.hypot(x2 - x1, y2 - y1)
        x3, y3, x4, y4 = c.recist_short_px
        props = {
            "score": round(float(c.score), 5),
            "sliceIndex": int(c.slice_index),
            "bboxPx": [round(float(v), 2) for v in c.bbox_px],
            "recistLongAxisPx": [round(float(v), 2) for v in c.recist_long_px],
            "recistShortAxisPx": [round(float(v), 2) for v in c.recist_short_px],
            "longDiameterPx": round(long_px, 3),
            "shortDiameterPx": round(math.hypot(x4 - x3, y4 - y3), 3),
            "longDiameterMm": round(float(c.long_diameter_mm), 3),
            "shortDiameterMm": round(float(c.short_diameter_mm), 3),
            "positionXMm": round(float(c.position_mm[0]), 3),
            "positionYMm": round(float(c.position_mm[1]), 3),
            "positionZMm": round(float(c.position_mm[2]), 3),
            "predictedXMm": round(float(self.prediction.position_mm[0]), 3),
            "predictedYMm": round(float(self.prediction.position_mm[1]), 3),
            "predictedZMm": round(float(self.prediction.position_mm[2]), 3),
            "predictionMethod": self.prediction.method,
            "meanHu": round(float(c.mean_hu), 2),
            "contrastHu": round(float(c.contrast_hu), 2),
            "spacingXMm": float(self.grid.col_mm),
            "spacingYMm": float(self.grid.row_mm),
            "sliceIntervalMm": round(float(self.grid.slice_interval_mm), 4),
            "scoreTerms": ", ".join(f"{k}={v:.2f}" for k, v in c.terms.items()),
            "modelId": model_id or "none",
            "trackingUid": self.tracking_uid,
            "seriesUid": self.series_uid,
            "seriesId": self.series_id,
            "imageRef": self.image_ref,
            "typeCode": self.type_code,
        }
        return {k: v for k, v in props.items() if v is not None}

    def to_row(self, model_id: str | None, created_at: str) -> dict[str, Any]:
        return {"proposalId": self.proposal_id, "studyId": self.study_id, "trackingUid": self.tracking_uid,
                "createdAt": created_at, "props": self.to_props(model_id)}


def proposal_id(tracking_uid: str, study_id: str) -> str:
    """Stable id of the proposal for one track in one study."""
    return "PR-" + hashlib.sha256(f"{tracking_uid}|{study_id}".encode()).hexdigest()[:20]


def accepted_lesion_id(pid: str) -> str:
    """Id of the lesion an accepted proposal becomes (never an annotation's id: those start ``L-``)."""
    return "LP-" + pid[3:] if pid.startswith("PR-") else "LP-" + pid


# -- mining one patient -------------------------------------------------------------------------
@dataclass
class MiningStats(Result):
    patients: int = 0
    tracks: int = 0
    candidate_studies: int = 0
    proposals: int = 0
    below_threshold: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds_mining: float = 0.0  # detection + measurement + scoring (+ embedding), volumes loaded
    seconds_loading: float = 0.0

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append({"item": what, "reason": reason})

    def to_json(self) -> dict[str, Any]:
        per = self.seconds_mining / self.candidate_studies if self.candidate_studies else None
        return {"patients": self.patients, "tracks": self.tracks, "candidateStudies": self.candidate_studies,
                "proposals": self.proposals, "belowThreshold": self.below_threshold,
                "skipped": len(self.skipped), "errors": self.skipped[:50],
                "secondsMining": round(self.seconds_mining, 3), "secondsLoading": round(self.seconds_loading, 3),
                "secondsPerCandidateStudy": round(per, 4) if per is not None else None}


def _body_box(hu: np.ndarray, grid: M.Grid) -> tuple[M.Vec3, M.Vec3] | None:
    body = hu > -500
    if not body.any():
        return None
    ks, rs, cs = np.nonzero(body[:, ::2, ::2])
    a = grid.to_mm(ks.min(), rs.min() * 2, cs.min() * 2)
    b = grid.to_mm(ks.max(), rs.max() * 2, cs.max() * 2)
    return tuple(min(u, v) for u, v in zip(a, b, strict=True)), tuple(max(u, v) for u, v in zip(a, b, strict=True))


@dataclass(frozen=True)
class MiningConfig:
    """How candidates are searched and scored.

    A study's best candidate is proposed when it scores ≥ ``min_score`` × the study's evidence
    factor (:func:`lesiondb.core.mining.evidence_factor`: lower between observations, higher
    before a single one). ``pattern``: candidates are also scored on how their HU patch correlates
    with the patches around the track's annotated lesions; ``anatomy_check``: candidates also found
    clear of the lesion in a study where it is annotated (normal anatomy) are demoted."""

    min_score: float = DEFAULT_MIN_SCORE
    params: M.ScoreParams = field(default_factory=M.ScoreParams)
    min_visible_mm: float = 5.0
    anatomy_check: bool = True
    pattern: bool = True


@dataclass
class CaseCache:
    """What mining one patient again needs not recompute: loaded ``volumes`` (by study id) and
    ``references`` (annotated instances measured on their images, by lesion id)."""

    volumes: dict[str, Any] = field(default_factory=dict)
    references: dict[str, M.Observation] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    """Hooks of the evaluations and of the ranking calibration: ``select(trackingUid, study_id)``
    limits the (track, study) pairs searched, ``on_scored(trackingUid, study_id, candidates)`` sees
    every searched study's ranked candidates, ``keep_below`` returns each candidate study's best
    candidate even under the threshold (callers filter with :meth:`ProposalRecord.passes`)."""

    select: Callable[[str, str], bool] | None = None
    on_scored: Callable[[str, str, list[M.Candidate]], None] | None = None
    keep_below: bool = False


def mine_case(case: PatientCase, load_volume: VolumeLoader, *, embedder: Embedder | None = None,
              config: MiningConfig = MiningConfig(), rank_weights: dict[str, float] | None = None,
              stats: MiningStats | None = None, cache: CaseCache | None = None,
              probe: Probe = Probe()) -> list[ProposalRecord]:
    """Mine every track of one patient; each study volume is loaded at most once.

    ``rank_weights`` (:class:`lesiondb.mining.ranker.RankCalibrator`) rank each study's candidates
    (:func:`lesiondb.core.mining.rank_value`); ``embedder`` scores them by embedding distance too."""
    stats = stats if stats is not None else MiningStats()
    stats.patients += 1
    studies = {s.study_id: s for s in case.studies}
    cache = cache if cache is not None else CaseCache()
    volumes, references = cache.volumes, cache.references
    min_score, params, min_visible_mm = config.min_score, config.params, config.min_visible_mm
    select, on_scored, keep_below = probe.select, probe.on_scored, probe.keep_below

    def vol(sid: str):
        if sid not in volumes:
            t0 = time.perf_counter()
            try:
                volumes[sid] = load_volume(studies[sid])
            except (ImageError, InputError, OSError, ValueError) as exc:
                stats.skip(f"study {sid}", f"images not loaded: {exc}")
                volumes[sid] = None
            stats.seconds_loading += time.perf_counter() - t0
        return volumes[sid]

    # reference appearance (and embedding) of every annotated instance, measured on its own image
    tracks: dict[str, list[M.Observation]] = {}
    for uid, obs in case.tracks.items():
        out = []
        for o in obs:
            if o.lesion_id in references:
                out.append(references[o.lesion_id])
                continue
            v = vol(o.study_id) if o.study_id in studies else None
            if v is not None:
                o = M.measure_reference(v[0], v[1], o)
                if embedder is not None and o.slice_index is not None:
                    props = case.lesion_props.get(o.lesion_id, {})
                    box = props.get("bboxPx")
                    if box:
                        try:
                            e = embedder(v[0], v[1], [(o.slice_index, tuple(box))])[0]
                            o = replace(o, embedding=np.asarray(e, float))
                        except Exception as exc:  # an encoder failure must not stop the batch
                            stats.skip(f"lesion {o.lesion_id}", f"not embedded: {exc}")
            out.append(o)
            references[o.lesion_id] = o
        tracks[uid] = out
    stats.tracks += len(tracks)

    # per-study positions of each track, for the pairwise alignment
    pos: dict[str, dict[str, np.ndarray]] = {}
    for uid, obs in tracks.items():
        for o in obs:
            if o.position_mm is not None:
                pos.setdefault(o.study_id, {})[uid] = np.asarray(o.position_mm, float)
    trans_cache: dict[tuple[str, str], tuple[float, np.ndarray, float, str] | None] = {}

    def translation(a: str, b: str, exclude: str) -> tuple[float, np.ndarray, float, str] | None:
        if a == b:
            return 1.0, np.zeros(3), 0.0, "same-study"
        common = sorted((set(pos.get(a, {})) & set(pos.get(b, {}))) - {exclude})
        if common:
            src = np.array([pos[a][u] for u in common])
            dst = np.array([pos[b][u] for u in common])
            sc, t, spread = M.estimate_alignment(src, dst)
            return sc, t, spread, "matched-lesions"
        key = (a, b)
        if key not in trans_cache:
            va, vb = vol(a), vol(b)
            if va is None or vb is None:
                trans_cache[key] = None
            else:
                trans_cache[key] = (1.0, M.body_translation(va[0], va[1], vb[0], vb[1]), BODY_SIGMA_MM, "body")
        return trans_cache[key]

    infos = []
    for s in case.studies:
        ann = [o for o in case.lesions.get(s.study_id, []) if o.position_mm is not None]
        infos.append(M.StudyInfo(s.study_id, s.time, None, tuple(o.position_mm for o in ann),
                                 tuple(o.long_diameter_mm / 2.0 for o in ann)))

    out: list[ProposalRecord] = []
    for uid, obs in sorted(tracks.items()):
        seen = {o.study_id for o in obs}
        for info in infos:
            if info.study_id in seen or not M.should_be_visible(obs, info, min_visible_mm):
                continue
            if select is not None and not select(uid, info.study_id):
                continue
            v = vol(info.study_id)
            if v is None:
                continue
            hu, grid = v
            t0 = time.perf_counter()
            pred = _predict(obs, info, hu, grid, lambda a, b=info.study_id, u=uid: translation(a, b, u), vol)
            if pred is None:
                stats.skip(f"track {uid} in study {info.study_id}", "no geometry or location to predict a position")
                continue
            z0, z1 = grid.z_range()
            info_cov = M.StudyInfo(info.study_id, info.time, (z0, z1), info.annotated_mm, info.annotated_radius_mm)
            if not M.candidate_studies(obs, [info_cov], lambda _s, p=pred: p, min_visible_mm):
                continue
            stats.candidate_studies += 1
            evidence = M.evidence_factor(obs, info.time)
            required = min_score * evidence
            emb_fn = None
            if embedder is not None:
                def emb_fn(cands, hu=hu, grid=grid):
                    return embedder(hu, grid, [(c.slice_index, c.bbox_px) for c in cands])
            templates = _templates(obs, pred, vol) if config.pattern else ()
            best, scored = M.mine_study(hu, grid, pred, min_score=required, params=params, embed=emb_fn,
                                        exclude=M.annotated_with_radius(info_cov, pred), templates=templates,
                                        rank_weights=rank_weights)
            if config.anatomy_check and scored:
                scored = _demote_anatomy(scored, obs, info.study_id, uid, translation, vol, params,
                                         rank_weights=rank_weights)
                best = scored[0] if scored[0].score >= required else None
            stats.seconds_mining += time.perf_counter() - t0
            if on_scored is not None and scored:
                on_scored(uid, info.study_id, scored)
            if best is None and keep_below and scored:
                best = scored[0]
            if best is None:
                stats.below_threshold += 1
                continue
            s = studies[info.study_id]
            types = [case.lesion_props.get(o.lesion_id, {}).get("typeCode") for o in obs]
            types = [t for t in types if t is not None and t != -1]
            out.append(ProposalRecord(
                proposal_id(uid, s.study_id), case.patient_id, s.study_id, uid, best, pred, grid,
                study_uid=s.study_uid, series_uid=s.series_uid, image_ref=s.image_ref, series_id=s.series_id,
                type_code=max(set(types), key=types.count) if types else None, evidence=evidence))
            if best.score >= required:
                stats.proposals += 1
            else:
                stats.below_threshold += 1
    return out


def _templates(obs, pred: M.Prediction, vol) -> list[tuple[np.ndarray, float, tuple[float, float]]]:
    """The track's lesion patches, each from its own study (:func:`~lesiondb.core.mining.pattern_template`)."""
    out = []
    for o in obs:
        v = vol(o.study_id)
        t = M.pattern_template(v[0], v[1], o, pred.expected_long_mm) if v is not None else None
        if t is not None:
            out.append(t)
    return out


#: Score factor of a candidate whose structure is also found, clear of the lesion, in a study
#: where the track's lesion is annotated (normal anatomy: :func:`lesiondb.core.mining.anatomy_echo`).
ANATOMY_FACTOR = 0.1


def _demote_anatomy(scored, obs, target: str, uid: str, translation, vol, params, top: int = 3,
                    rank_weights: dict[str, float] | None = None):
    """Demote the ``top`` candidates that :func:`~lesiondb.core.mining.anatomy_echo` finds in a
    reference study (the best-aligned one first); returns the candidates best ranked first again."""
    refs = []
    for o in obs:
        v = vol(o.study_id) if o.position_mm is not None else None
        t = translation(target, o.study_id, uid) if v is not None else None
        if t is not None:
            refs.append((t[2], o, v, t))
    refs.sort(key=lambda x: x[0])
    out = list(scored)
    for i, c in enumerate(out[:top]):
        for _, o, (hu_r, grid_r), (sc, t, _, _) in refs[:2]:
            q = tuple(float(x) for x in sc * np.asarray(c.position_mm, float) + t)
            if M.anatomy_echo(hu_r, grid_r, q, c, o.position_mm, o.long_diameter_mm / 2.0, params):
                terms = dict(c.terms, anatomy=round(-2.0 * math.log(ANATOMY_FACTOR), 4))
                out[i] = replace(c, score=c.score * ANATOMY_FACTOR, terms=terms)
                break
    return sorted(out, key=lambda c: M.rank_value(c, rank_weights))


def _predict(obs, info, hu, grid, translation, vol) -> M.Prediction | None:
    trans = {}
    for o in obs:
        if o.position_mm is None:
            continue
        t = translation(o.study_id)
        if t is not None:
            trans[o.study_id] = t
    pred = M.predict_position(obs, info, trans) if trans else None
    if pred is not None:
        if pred.method == "body":
            pred = replace(pred, sigma_mm=max(pred.sigma_mm, BODY_SIGMA_MM))
        return pred
    # no patient-mm geometry: the normalised location inside the target's body box
    locs = [o.location for o in obs if o.location is not None]
    box = _body_box(hu, grid)
    if not locs or box is None:
        return None
    loc = tuple(float(v) for v in np.median(np.array(locs), axis=0))
    return M.Prediction(M.location_to_position(loc, box), LOCATION_SIGMA_MM, "location",
                        M.expected_long_mm(obs, info.time), tuple(obs))


# -- reading the graph --------------------------------------------------------------------------
def study_time(props: dict) -> float:
    """A study's time in days: ``studyDay`` (days since the patient's first study), else days since
    1970 of ``studyDate`` (graphs with source ids), else the study index × 30 (order is what
    matters); only differences between a patient's studies are used."""
    if props.get("studyDay") is not None:
        return float(props["studyDay"])
    d = props.get("studyDate")
    if d:
        try:
            return float((_dt.date.fromisoformat(str(d)[:10]) - _dt.date(1970, 1, 1)).days)
        except ValueError:
            pass
    return float(props.get("studyIndex") or 0) * 30.0


def observation_from_props(p: dict, study_id: str, t: float) -> M.Observation:
    pos = None
    if all(p.get(k) is not None for k in ("positionXMm", "positionYMm", "positionZMm")):
        pos = (float(p["positionXMm"]), float(p["positionYMm"]), float(p["positionZMm"]))
    loc = None
    if all(p.get(k) is not None for k in ("locationX", "locationY", "locationZ")):
        loc = (float(p["locationX"]), float(p["locationY"]), float(p["locationZ"]))
    box = p.get("bboxPx")
    centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0) if box else None
    long_mm = p.get("longDiameterMm")
    if long_mm is None and p.get("longDiameterPx") is not None:
        long_mm = float(p["longDiameterPx"]) * float(p.get("spacingXMm") or 1.0)
    return M.Observation(
        lesion_id=p["lesionId"], study_id=study_id, time=t, long_diameter_mm=float(long_mm or 0.0),
        short_diameter_mm=float(p.get("shortDiameterMm") or 0.0), position_mm=pos, location=loc,
        slice_index=int(p["keySliceIndex"]) if p.get("keySliceIndex") is not None else None,
        center_px=centre)


def cases_from_rows(rows: Iterable[dict]) -> list[PatientCase]:
    """Group ``mining_patient_data`` rows into one :class:`PatientCase` per patient."""
    by_patient: dict[str, dict] = {}
    for r in rows:
        c = by_patient.setdefault(r["patientId"], {"studies": {}, "tracks": {}, "lesions": {}, "props": {}})
        s = r["study"]
        sid = s["studyId"]
        if sid not in c["studies"]:
            c["studies"][sid] = StudyData(sid, study_time(s), study_uid=s.get("studyUid"),
                                          series_uid=s.get("seriesUid"), image_ref=s.get("imageRef"), props=s)
        st = c["studies"][sid]
        lp = r.get("lesion")
        if not lp:
            continue
        lp = {k: v for k, v in lp.items() if k != "embedding"}
        st.series_uid = st.series_uid or lp.get("seriesUid")
        st.series_id = st.series_id or lp.get("seriesId")
        st.image_ref = st.image_ref or lp.get("imageRef")
        o = observation_from_props(lp, sid, st.time)
        c["props"][o.lesion_id] = lp
        c["lesions"].setdefault(sid, []).append(o)
        if r.get("trackingUid"):
            c["tracks"].setdefault(r["trackingUid"], []).append(o)
    out = []
    for pid, c in by_patient.items():
        studies = sorted(c["studies"].values(), key=lambda s: (s.time, s.study_id))
        out.append(PatientCase(pid, studies, c["tracks"], c["lesions"], c["props"]))
    return out


def read_cases(engine, patient: str | None = None, batch_size: int = 50) -> Iterator[PatientCase]:
    """Tracked patients with their studies, lesions and tracks, ``batch_size`` patients per query."""
    ids = [r["patientId"] for r in engine.run("mining_patients", patientId=patient)]
    for i in range(0, len(ids), batch_size):
        yield from cases_from_rows(engine.run("mining_patient_data", patientIds=ids[i:i + batch_size]))


def count_patients(engine, patient: str | None = None) -> int:
    return len(engine.run("mining_patients", patientId=patient))


# -- images -------------------------------------------------------------------------------------
def grid_from_volume(vol) -> M.Grid:
    """The :class:`~lesiondb.core.mining.Grid` of a :class:`lesiondb.imaging.dicom.Volume` (axial)."""
    o = np.asarray(vol.orientation, float)
    if not (np.allclose(o[:3], [1, 0, 0], atol=0.05) and np.allclose(o[3:], [0, 1, 0], atol=0.05)):
        raise ImageError(f"mining needs axial slices (ImageOrientationPatient ≈ 1,0,0,0,1,0), got "
                         f"{', '.join(f'{v:.2f}' for v in o)}", vol.series_uid)
    pos = np.asarray(vol.positions_mm, float)
    return M.Grid(slice_z_mm=pos[:, 2].copy(), row_mm=float(vol.spacing_xy_mm[1]),
                  col_mm=float(vol.spacing_xy_mm[0]), origin_xy_mm=(float(pos[0, 0]), float(pos[0, 1])))


