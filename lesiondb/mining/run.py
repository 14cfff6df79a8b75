"""Missing-annotation mining: graph and image I/O around :mod:`lesiondb.core.mining`.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core import mining as M
from ..errors import ImageError, InputError, LesionDBError

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
class MiningStats:
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

    def to_dict(self) -> dict[str, Any]:
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


def mine_case(case: PatientCase, load_volume: VolumeLoader, min_score: float = DEFAULT_MIN_SCORE,
              embedder: Embedder | None = None, params: M.ScoreParams = M.ScoreParams(),
              stats: MiningStats | None = None, min_visible_mm: float = 5.0,
              keep_below: bool = False, anatomy_check: bool = True, pattern: bool = True,
              select: Callable[[str, str], bool] | None = None,
              rank_weights: dict[str, float] | None = None,
              on_scored: Callable[[str, str, list[M.Candidate]], None] | None = None,
              references: dict[str, M.Observation] | None = None,
              volumes: dict[str, Any] | None = None) -> list[ProposalRecord]:
    """Mine every track of one patient; each study volume is loaded at most once.

    A study's best candidate is proposed when it scores ≥ ``min_score`` × the study's evidence
    factor (:func:`lesiondb.core.mining.evidence_factor`: lower between observations, higher before
    a single one). With ``keep_below`` the best candidate of every candidate study is returned even
    under that (for evaluation curves); callers filter with :meth:`ProposalRecord.passes`.
    With ``pattern`` candidates are also scored on how their HU patch correlates with the patches
    around the track's annotated lesions (:func:`lesiondb.core.mining.pattern_similarity`).
    ``select(trackingUid, study_id)`` limits the (track, study) pairs searched. ``rank_weights``
    (:func:`calibrate_ranking`) rank each study's candidates (:func:`lesiondb.core.mining.rank_value`);
    ``on_scored(trackingUid, study_id, candidates)`` sees every searched study's ranked candidates.
    ``references`` (annotated instances as measured on their images, by lesion id) and
    ``volumes`` (loaded studies, by study id) are caches kept across calls on one patient."""
    stats = stats if stats is not None else MiningStats()
    stats.patients += 1
    studies = {s.study_id: s for s in case.studies}
    volumes = volumes if volumes is not None else {}

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
            if references is not None and o.lesion_id in references:
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
            if references is not None:
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
            templates = _templates(obs, pred, vol) if pattern else ()
            best, scored = M.mine_study(hu, grid, pred, min_score=required, params=params, embed=emb_fn,
                                        exclude=M.annotated_with_radius(info_cov, pred), templates=templates,
                                        rank_weights=rank_weights)
            if anatomy_check and scored:
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
                study_uid=s.study_uid, series_uid=s.series_uid, image_ref=s.image_ref,
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


#: Leave-one-out studies a ranking calibration collects at most (:func:`calibrate_ranking`).
CALIBRATION_STUDIES = 300


def calibrate_ranking(cases: Iterable[PatientCase], load_volume: VolumeLoader,
                      max_studies: int = CALIBRATION_STUDIES, prior: float = 1.0,
                      embedder: Embedder | None = None, params: M.ScoreParams = M.ScoreParams(),
                      prepare: Callable[[PatientCase, MiningStats], PatientCase] | None = None,
                      stats: MiningStats | None = None) -> dict[str, Any]:
    """Learn how to rank a study's candidates from the cohort's own tracks: for every annotated
    instance of a track seen at least twice, withhold it, mine its study from the track's other
    instances, and note which candidate lies within its radius
    (:func:`lesiondb.core.mining.fit_rank_weights`). No label beyond the annotations is used, so it
    runs on any graph (synthetic or real). Returns ``{"rankWeights": {...} or None, "studies":
    leave-one-out studies searched, "choiceSets": those with the withheld lesion among the
    candidates, "seconds"}``; ``rankWeights`` is None (rank by score) with too few of them.

    ``cases`` are read in order until ``max_studies`` studies were searched (patientId order in
    :func:`mine`, so a one-patient run ranks as the whole graph's first patients do)."""
    t0 = time.perf_counter()
    stats = stats if stats is not None else MiningStats()
    sets: list[tuple[list[dict], list[bool]]] = []
    studies = 0
    for case in cases:
        if studies >= max_studies:
            break
        if not any(len(obs) >= 2 for obs in case.tracks.values()):
            continue
        try:
            case = prepare(case, stats) if prepare else case
        except LesionDBError as exc:
            stats.skip(f"patient {case.patient_id}", f"not used for calibration: {exc}")
            continue
        # each volume read and each reference measured once per patient, not once per withheld lesion
        volumes: dict[str, Any] = {}
        refs: dict[str, M.Observation] = {}
        for uid, obs in sorted(case.tracks.items()):
            if len(obs) < 2:
                continue
            for o in obs:
                if studies >= max_studies or o.position_mm is None:
                    continue
                rest = [x for x in obs if x is not o]
                loo = replace(case, tracks={**case.tracks, uid: rest},
                              lesions={k: [x for x in v if x is not o] for k, v in case.lesions.items()})
                scored: list[M.Candidate] = []
                try:
                    mine_case(loo, load_volume, embedder=embedder, params=params, stats=MiningStats(),
                              references=refs, volumes=volumes,
                              select=lambda u, sid, uid=uid, want=o.study_id: u == uid and sid == want,
                              on_scored=lambda _u, _s, cands, scored=scored: scored.extend(cands))
                except LesionDBError as exc:
                    stats.skip(f"lesion {o.lesion_id}", f"not used for calibration: {exc}")
                    continue
                if not scored:
                    continue
                studies += 1
                radius = max(o.long_diameter_mm / 2.0, 1.0)
                sets.append(([c.terms for c in scored], [M._dist(c.position_mm, o.position_mm) <= radius
                                                         for c in scored]))
    weights = M.fit_rank_weights(sets, prior=prior)
    return {"rankWeights": weights, "studies": studies,
            "choiceSets": sum(1 for _, r in sets if any(r) and len(r) >= 2),
            "seconds": round(time.perf_counter() - t0, 3)}


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
    """Days since 1970 from ``studyDate`` (ISO), else the study index (order is what matters)."""
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


def dicom_loader(images_root: str | Path | None = None) -> VolumeLoader:
    """Loads a study's DICOM series from ``images_root / imageRef`` (or an absolute imageRef)."""
    from ..imaging.dicom import read_series

    by_study: dict[str, list[Path]] | None = None

    def study_folders() -> dict[str, list[Path]]:
        # cohort layout dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/: index it once
        nonlocal by_study
        if by_study is None:
            by_study = {}
            root = Path(images_root)
            base = root / "dicom" if (root / "dicom").is_dir() else root
            for series in sorted(base.glob("*/*/*")):
                if series.is_dir():
                    by_study.setdefault(series.parent.name, []).append(series)
        return by_study

    def load(study: StudyData):
        p = None
        if study.image_ref:
            p = Path(study.image_ref)
            if not p.is_absolute():
                if images_root is None:
                    raise ImageError(f"imageRef {study.image_ref!r} is relative: pass --images COHORT_DIR",
                                     study.study_id)
                p = Path(images_root) / p
        elif images_root is not None and study.study_uid:
            found = study_folders().get(study.study_uid, [])
            if len(found) > 1 and study.series_uid:
                found = [f for f in found if f.name == study.series_uid] or found
            if not found:
                raise ImageError(f"no series folder for study {study.study_uid} under {images_root}",
                                 study.study_id)
            p = found[0]
        if p is None:
            raise ImageError("the study has no image reference (imageRef or studyUid); pass --images "
                             "COHORT_DIR and ingest with `lesiondb ingest dicom`", study.study_id)
        v = read_series(p, allow_gaps=True)
        return v.hu, grid_from_volume(v)

    return load


# -- writing and reviewing ----------------------------------------------------------------------
def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_proposals(engine, proposals: Sequence[ProposalRecord], model_id: str | None = None,
                    min_score: float = DEFAULT_MIN_SCORE, batch_size: int = 500) -> dict[str, int]:
    """Write proposals scoring ≥ ``min_score`` × their study's evidence factor; returns counts
    created / refreshed / kept."""
    at = now_iso()
    rows = [p.to_row(model_id, at) for p in proposals if p.passes(min_score)]
    res = engine.write("upsert_proposals", rows, batch_size=batch_size) if rows else []
    return {k: int(sum(float(r.get(k) or 0) for r in res)) for k in ("created", "refreshed", "kept")}


def blas_single_thread():
    """Small matrices: multi-threaded BLAS only thrashes (×5 slower on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a scikit-learn dependency, normally present
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def mine(engine, load_volume: VolumeLoader, patient: str | None = None, min_score: float = DEFAULT_MIN_SCORE,
         embedder: Embedder | None = None, model_id: str | None = None, batch_size: int = 50,
         progress: Callable[[int], None] | None = None, rank_calibration: bool = True,
         calibration_studies: int = CALIBRATION_STUDIES) -> dict[str, Any]:
    """Mine every tracked patient (or one) and write the proposals. Returns a summary dict.

    With ``rank_calibration`` the candidates are ranked by weights learned first from the graph's
    own tracks (:func:`calibrate_ranking`, on up to ``calibration_studies`` leave-one-out studies
    of the first patients in patientId order, whichever patient is mined: ``ranking`` in the
    summary). A loader may adapt each case to its images first (``load_volume.prepare_case(case,
    stats)``) and its proposals after (``load_volume.finish_records(case, records, stats,
    min_score)``), as :class:`lesiondb.mining.volumes.StudyVolumes` does for DeepLesion's PNG slices."""
    stats = MiningStats()
    counts = {"created": 0, "refreshed": 0, "kept": 0}
    prepare = getattr(load_volume, "prepare_case", None)
    finish = getattr(load_volume, "finish_records", None)
    ranking: dict[str, Any] = {"rankWeights": None, "studies": 0, "choiceSets": 0, "seconds": 0.0}
    if rank_calibration:
        log.info("learning the candidate ranking from the graph's tracks (up to %d leave-one-out studies)",
                 calibration_studies)
        with blas_single_thread():
            ranking = calibrate_ranking(read_cases(engine, None, batch_size), load_volume,
                                        max_studies=calibration_studies, embedder=embedder,
                                        prepare=prepare)  # its skips are the mining pass's too: not counted twice
        log.info("ranking weights %s from %d leave-one-out studies in %.1f s", ranking["rankWeights"],
                 ranking["studies"], ranking["seconds"])
    weights = ranking["rankWeights"]
    for case in read_cases(engine, patient, batch_size):
        try:
            with blas_single_thread():
                case = prepare(case, stats) if prepare else case
                props = mine_case(case, load_volume, min_score, embedder, stats=stats, rank_weights=weights)
                props = finish(case, props, stats, min_score) if finish else props
        except LesionDBError as exc:
            stats.skip(f"patient {case.patient_id}", str(exc))
            props = []
        if props:
            for k, v in write_proposals(engine, props, model_id, min_score).items():
                counts[k] += v
        if progress:
            progress(1)
    return {**stats.to_dict(), "minScore": min_score, "modelId": model_id or "none", **counts, "ranking": ranking}


def list_proposals(engine, status: str | None = None, patient: str | None = None,
                   proposal: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Proposals as flat dicts (proposal properties + studyId, studyUid, patientId, trackingUid)."""
    if status is not None and status not in STATUSES:
        raise InputError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}", "--status")
    rows = engine.run("proposals", status=status, patientId=patient, proposalId=proposal, limit=limit or 10**9)
    return [{**r["proposal"], "studyId": r["studyId"], "studyUid": r.get("studyUid"),
             "patientId": r["patientId"], "trackingUid": r.get("trackingUid") or r["proposal"].get("trackingUid")}
            for r in rows]


def _one(engine, pid: str) -> dict[str, Any]:
    got = list_proposals(engine, proposal=pid)
    if not got:
        raise InputError(f"no proposal {pid!r}; `lesiondb review list` shows the ids", pid)
    return got[0]


def accept(engine, pid: str, by: str | None = None, at: str | None = None) -> dict[str, Any]:
    """Turn a proposal into an annotated lesion of its track (idempotent: accepting again returns
    the same lesion). A rejected proposal cannot be accepted (InputError saying so)."""
    p = _one(engine, pid)
    if p["status"] == "rejected":
        raise InputError(f"proposal {pid} was rejected by {p.get('reviewedBy') or 'someone'} at "
                         f"{p.get('reviewedAt')}; it cannot be accepted", pid)
    lesion = _lesion_props(p, by or "unknown", at or now_iso())
    res = engine.execute("accept_proposal", proposalId=pid, lesion=lesion, reviewedBy=by or "unknown",
                         reviewedAt=at or now_iso())
    if not res:
        raise InputError(f"proposal {pid} could not be accepted (its study or track is gone)", pid)
    return {"proposalId": pid, "status": "accepted", "lesionId": res[0]["lesionId"],
            "alreadyAccepted": p["status"] == "accepted"}


def reject(engine, pid: str, by: str | None = None, reason: str | None = None, at: str | None = None) -> dict[str, Any]:
    """Mark a proposal rejected (idempotent). An accepted proposal cannot be rejected."""
    p = _one(engine, pid)
    if p["status"] == "accepted":
        raise InputError(f"proposal {pid} was accepted as lesion {p.get('lesionId')}; it cannot be rejected", pid)
    engine.execute("reject_proposal", proposalId=pid, reviewedBy=by or "unknown", reviewedAt=at or now_iso(),
                   reason=reason or "")
    return {"proposalId": pid, "status": "rejected", "alreadyRejected": p["status"] == "rejected"}


def _lesion_props(p: dict[str, Any], by: str, at: str) -> dict[str, Any]:
    """The annotated lesion an accepted proposal becomes (DeepLesion-like properties)."""
    sx = float(p.get("spacingXMm") or 1.0)
    type_code = p.get("typeCode")
    from ..core.records import type_name

    lesion = {
        "lesionId": accepted_lesion_id(p["proposalId"]),
        "source": "proposal",
        "proposalId": p["proposalId"],
        "annotatedBy": by,
        "annotatedAt": at,
        "keySliceIndex": p.get("sliceIndex"),
        "bboxPx": p.get("bboxPx"),
        "recistLongAxisPx": p.get("recistLongAxisPx"),
        "recistShortAxisPx": p.get("recistShortAxisPx"),
        "longDiameterPx": p.get("longDiameterPx"),
        "shortDiameterPx": p.get("shortDiameterPx"),
        "longDiameterMm": p.get("longDiameterMm"),
        "shortDiameterMm": p.get("shortDiameterMm"),
        "spacingXMm": sx,
        "spacingYMm": p.get("spacingYMm"),
        "sliceIntervalMm": p.get("sliceIntervalMm"),
        "positionXMm": p.get("positionXMm"),
        "positionYMm": p.get("positionYMm"),
        "positionZMm": p.get("positionZMm"),
        "seriesUid": p.get("seriesUid"),
        "imageRef": p.get("imageRef"),
        "typeCode": type_code if type_code is not None else -1,
        "typeName": type_name(type_code) if type_code not in (None, -1) else None,
        "labelled": type_code not in (None, -1),
        "trackingUid": p.get("trackingUid"),
    }
    return {k: v for k, v in lesion.items() if v is not None}


EXPORT_FIELDS = ("proposalId", "status", "score", "patientId", "studyId", "studyUid", "trackingUid",
                 "seriesUid", "sliceIndex", "bboxPx", "recistLongAxisPx", "recistShortAxisPx",
                 "longDiameterMm", "shortDiameterMm", "positionXMm", "positionYMm", "positionZMm",
                 "predictionMethod", "modelId", "createdAt", "reviewedBy", "reviewedAt", "rejectReason",
                 "lesionId")


# -- the encoder (optional) ---------------------------------------------------------------------
def make_embedder(model: Any, spec: Any = None, batch_size: int = 64) -> Embedder:
    """An :data:`Embedder` from an encoder of :mod:`lesiondb.nn` (``embed_patches``) and the patch
    spec it was trained with (:class:`lesiondb.imaging.patches.PatchSpec`)."""
    from ..imaging.patches import extract_patch_from_volume, stack_patches
    from ..nn import embed_patches

    def embed(hu: np.ndarray, grid: M.Grid, items: list) -> np.ndarray:
        patches = [extract_patch_from_volume(hu, int(k), tuple(float(v) for v in box),
                                             (grid.col_mm, grid.row_mm), grid.slice_interval_mm, spec)
                   for k, box in items]
        images, boxes = stack_patches(patches)
        # a handful of patches per call: one torch thread (more only spin and wait for each other
        # on small batches — measured 12 ms against 90 ms for 3 patches on the shared 2 cores)
        return np.asarray(embed_patches(model, images, boxes, batch_size=batch_size, threads=1), float)

    return embed


def default_embedder() -> tuple[Embedder, str]:
    """(embedder, modelId) of the shipped default encoder; ImportError / ModelError when absent."""
    from ..nn import load_default_model, prepare_for_inference

    model = prepare_for_inference(load_default_model())
    spec = getattr(model, "patch_spec", None)
    model_id = getattr(model, "model_id", None) or getattr(model, "modelId", None) or "default"
    return make_embedder(model, spec), str(model_id)


def embedder_or_note() -> tuple[Embedder | None, str | None, str | None]:
    """(embedder, modelId, note) for ``lesiondb mine`` and the demo: the shipped default encoder,
    or no embedder and a note saying why (mining then scores on position, size and HU only)."""
    try:
        emb, model_id = default_embedder()
    except ImportError:
        return None, None, "no encoder available: scored on position, size and HU appearance only"
    except Exception as exc:  # no weights shipped, or an incompatible model: mine without it
        return None, None, f"encoder not loaded ({exc}); scored on position, size and HU appearance only"
    return emb, model_id, None
