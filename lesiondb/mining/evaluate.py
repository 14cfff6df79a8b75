"""Evaluate missing-annotation mining on a synthetic cohort folder (ground truth known).

Two sources of tracks (``tracks=``):

- ``truth`` (default): the ground-truth tracks of the *annotated* instances, so the figures isolate
  mining from matching. Lesion positions come from ``annotations.csv`` through the DICOM geometry,
  as ingest computes them.
- ``matched``: what a user gets end to end — the annotated lesions are ingested into a scratch graph
  (never the user's) and matched exactly as ``lesiondb match`` does
  (:func:`lesiondb.tracking.match.match_graph`); the cases are read back as ``lesiondb mine`` reads them
  (:func:`lesiondb.mining.run.read_cases`) and mined on those tracks. A proposal is right when it lies
  on the withheld instance (below), in its study, of the ground-truth track most of the matched
  track's lesions belong to.

A proposal is right when its centre lies on the withheld lesion: within its radius (half its
RECIST long diameter) of its centre, or inside its extent (the ground truth's ellipsoid: a small
lesion is often longer along z than across, and its RECIST diameter is that of the key slice's
cut, smaller than the lesion). ``recall_radius_only`` / ``precision_radius_only`` use the radius
alone.

Withheld instances are the targets; recall counts each withheld lesion once (a fragmented track
may propose it twice).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core import mining as M
from ..core.progress import Progress, stage
from ..core.pseudonym import Pseudonymizer
from ..core.results import Result, json_field
from ..datasets import cohort as C
from ..datasets.deeplesion import RowError
from ..errors import ImageError, InputError
from ..graph.engine import Engine
from ..imaging.dicom import read_series
from ..ingest.dicom import ingest_dicom
from ..tracking.evaluate import scratch_engine
from ..tracking.match import match_graph
from . import case as mining
from .ranker import RankCalibrator
from .run import blas_single_thread

THRESHOLDS = (0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)


def _patient_volumes(root: Path, p: dict):
    """(studies, volumes {study_uid: (Volume, hu, grid)}, load errors, seconds) of one ground-truth patient."""
    pid = p["patient_id"]
    errors: list[dict] = []
    volumes: dict[str, Any] = {}
    studies = []
    t_load = time.perf_counter()
    for s in p.get("studies", []):
        folder = root / C.DICOM_DIR / pid / s["study_uid"] / s["series_uid"]
        try:
            vol = read_series(folder, allow_gaps=True)
            volumes[s["study_uid"]] = (vol, vol.hu, mining.grid_from_volume(vol))
        except (ImageError, InputError) as exc:
            errors.append({"item": str(folder), "reason": str(exc)})
        studies.append(mining.StudyData(s["study_uid"], mining.study_time({"studyDate": s.get("study_date"),
                                                                              "studyIndex": s.get("study_index")}),
                                        study_uid=s["study_uid"], series_uid=s.get("series_uid"),
                                        image_ref=str(folder)))
    return studies, volumes, errors, time.perf_counter() - t_load


def _instances_by_patient(gt) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for i in gt.instances:
        out.setdefault(i["patient_id"], []).append(i)
    return out


def _cases(root: Path, max_patients: int | None):
    """Yield (case, volumes {study_uid: (hu, grid)}, load errors, seconds loading, instances) per
    patient of the cohort, on the ground-truth tracks of the annotated instances."""
    gt = C.read_ground_truth(root)
    rows_by_ann = {}
    for r in C.read_rows(root / C.ANNOTATIONS):
        if not isinstance(r, RowError):
            rows_by_ann[r.annotation_id] = r
    inst_by_patient = _instances_by_patient(gt)
    patients = gt.patients[:max_patients] if max_patients else gt.patients
    for p in patients:
        pid = p["patient_id"]
        studies, volumes, errors, t_load = _patient_volumes(root, p)
        times = {s.study_id: s.time for s in studies}
        tracks: dict[str, list[M.Observation]] = {}
        lesions: dict[str, list[M.Observation]] = {}
        props: dict[str, dict] = {}
        for inst in inst_by_patient.get(pid, []):
            if not inst.get("annotated"):
                continue
            r = rows_by_ann.get(inst.get("annotation_id"))
            sid = inst["study_uid"]
            if r is None or sid not in volumes:
                continue
            vol = volumes[sid][0]
            col, row = r.center_px
            pos = tuple(float(v) for v in vol.voxel_to_patient(col, row, r.key_slice_index))
            o = M.Observation(lesion_id=r.annotation_id, study_id=sid, time=times.get(sid, 0.0),
                              long_diameter_mm=r.long_diameter_px * r.spacing_xy_mm[0],
                              short_diameter_mm=r.short_diameter_px * r.spacing_xy_mm[0],
                              position_mm=pos, location=r.location, slice_index=r.key_slice_index,
                              center_px=(col, row))
            tracks.setdefault(inst["track_id"], []).append(o)
            lesions.setdefault(sid, []).append(o)
            props[r.annotation_id] = {"bboxPx": list(r.bbox_px), "typeCode": r.type_code}
        case = mining.PatientCase(pid, studies, tracks, lesions, props)
        yield case, {k: (v[1], v[2]) for k, v in volumes.items()}, errors, t_load, inst_by_patient.get(pid, [])


EVAL_GRAPH_MINING = "lesiondb_eval_mining"


def _match_scratch(root: Path, app_engine: Any, calibrate: bool, info: dict):
    """Ingest the cohort's annotated lesions into a scratch graph and match them as ``lesiondb
    match`` does; returns (cases by pseudonymised patient id, the pseudonymiser). ``info``
    receives the match summary."""
    ids = Pseudonymizer(uuid.uuid4().bytes + uuid.uuid4().bytes)  # a throwaway key: scratch graph only
    with scratch_engine(app_engine, EVAL_GRAPH_MINING) as eng:
        ing = ingest_dicom(eng, root, ids, embed=False, keep_source_ids=True)  # scored by annotation id
        report = match_graph(eng, calibrate=calibrate)
        by_pid = {c.patient_id: c for c in mining.read_cases(eng)}
    info.update({"ingested": ing.written, "ingestRejected": len(ing.rejected),
                 "matchedTracks": sum(len(c.tracks) for c in by_pid.values()),
                 "match": {k: v for k, v in report.to_dict().items() if k in ("patients", "lesions", "tracks",
                                                                               "sameLesionEdges", "seconds")}})
    return by_pid, ids


def _matched_cases(root: Path, max_patients: int | None, by_pid: dict, ids: Any):
    """Like :func:`_cases`, on the tracks ``lesiondb match`` made of the annotated lesions
    (:func:`_match_scratch`; module doc). The cases' study ids are the ground truth's study UIDs
    and their lesion ids the annotation ids (as in the truth mode), so both modes score the same
    way."""
    gt = C.read_ground_truth(root)
    patients = gt.patients[:max_patients] if max_patients else gt.patients
    inst_by_patient = _instances_by_patient(gt)
    for p in patients:
        pid = p["patient_id"]
        studies, volumes, errors, t_load = _patient_volumes(root, p)
        g = by_pid.get(ids.patient(C.SOURCE, pid))
        if g is None:
            errors.append({"item": f"patient {pid}", "reason": "no tracked lesion in the scratch graph"})
            g = mining.PatientCase(pid, [], {})
        uid_of = {s.study_id: s.study_uid or s.props.get("studyUid") for s in g.studies}
        ann_of = {lid: (pr.get("annotationId") or lid) for lid, pr in g.lesion_props.items()}

        times = {s.study_id: s.time for s in studies}
        rekeyed = {}
        for obs in g.lesions.values():
            for o in obs:
                sid = uid_of.get(o.study_id) or o.study_id
                rekeyed[o.lesion_id] = replace(o, lesion_id=ann_of.get(o.lesion_id, o.lesion_id), study_id=sid,
                                               time=times.get(sid, o.time))
        tracks = {u: [rekeyed[o.lesion_id] for o in obs] for u, obs in g.tracks.items()}
        lesions = {uid_of.get(sid) or sid: [rekeyed[o.lesion_id] for o in obs] for sid, obs in g.lesions.items()}
        props = {ann_of.get(lid, lid): pr for lid, pr in g.lesion_props.items()}
        case = mining.PatientCase(pid, studies, tracks, lesions, props)
        yield case, {k: (v[1], v[2]) for k, v in volumes.items()}, errors, t_load, inst_by_patient.get(pid, [])


TRACK_SOURCES = ("truth", "matched")


@dataclass
class MiningEvaluation(Result):
    """Recall, precision, errors and timing of mining on a cohort with known withheld lesions."""

    cohort: str
    seed: int | None
    patients: int
    studies: int
    withheld: int
    withheld_minable: int
    candidate_studies: int
    min_score: float
    proposals: int
    correct: int
    recall: float | None
    precision: float | None
    recall_radius_only: float | None = json_field(key="recall_radius_only")
    precision_radius_only: float | None = json_field(key="precision_radius_only")
    median_error_mm: float | None = json_field(key="median_error_mm")
    median_error_mm_correct: float | None = json_field(key="median_error_mm_correct")
    seconds_per_candidate_study: float | None = json_field(key="seconds_per_candidate_study")
    seconds_loading_per_study: float | None = json_field(key="seconds_loading_per_study")
    curve: list[dict[str, Any]] = field(default_factory=list)
    tracks: str = ""
    matching: dict[str, Any] | None = json_field(default=None, omit_none=True)
    ranking: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    model_id: str = "none"



def evaluate_cohort(root: str | Path, min_score: float = mining.DEFAULT_MIN_SCORE, max_patients: int | None = None,
                    embedder: mining.Embedder | None = None, model_id: str | None = None,
                    params: M.ScoreParams = M.ScoreParams(), progress: Progress | None = None,
                    tracks: str = "truth", app_engine: Engine | None = None, calibrate: bool = True,
                    rank_calibration: bool = True) -> MiningEvaluation:
    """Recall, precision, median error and timing of mining on one cohort (see module doc).

    ``tracks="matched"`` matches the annotated lesions first, in a scratch graph beside
    ``app_engine``'s (a temporary embedded one when None), with ``calibrate`` as ``lesiondb match``.
    With ``rank_calibration`` the candidates are ranked as ``lesiondb mine`` ranks them, by weights
    learned from the cohort's own annotated tracks (:class:`lesiondb.mining.ranker.RankCalibrator`:
    the withheld lesions play no part)."""
    if tracks not in TRACK_SOURCES:
        raise InputError(f"unknown track source {tracks!r}; use one of {', '.join(TRACK_SOURCES)}", "--tracks")
    root = Path(root)
    if not (root / C.GROUND_TRUTH).is_file():
        raise InputError(f"no {C.GROUND_TRUTH}: evaluate a cohort written by `lesiondb synth`", str(root))
    meta = C.read_cohort_meta(root)
    if meta.get("images") is False:
        raise InputError("the cohort has no images (made with --no-images); mining needs them", str(root))
    stats = mining.MiningStats()
    errors: list[dict] = []
    load_s = 0.0
    n_studies = 0
    withheld = 0
    minable: list[tuple[str, str]] = []
    # (score / evidence factor, right, error_mm or None, key, right by the radius alone) of each
    # track-study best candidate: a proposal at threshold th is one with score ≥ th × its study's
    # evidence factor
    found: list[tuple[float, bool, float | None, tuple[str, str] | None, bool]] = []
    match_info: dict[str, Any] = {}
    if tracks == "truth":
        def make_cases():
            return _cases(root, max_patients)
    else:
        by_pid, ids = _match_scratch(root, app_engine, calibrate, match_info)

        def make_cases():
            return _matched_cases(root, max_patients, by_pid, ids)
    config = mining.MiningConfig(min_score=min_score, params=params)
    ranker = RankCalibrator(config=mining.MiningConfig(params=params))
    if rank_calibration:
        current: dict[str, Any] = {}

        def annotated_cases():  # one patient's volumes in memory at a time
            for case, vols, *_ in make_cases():
                current.clear()
                current.update(vols)
                yield case

        with blas_single_thread():
            ranker.fit(annotated_cases(), lambda s: current.get(s.study_id), embedder=embedder)
    ranking = ranker.summary()
    with stage(progress, "eval mining") as b:
        for case, vols, errs, t_load, insts in make_cases():
            errors += errs
            load_s += t_load
            n_studies += len(vols)
            annotated_tracks = {i["track_id"] for i in insts if i.get("annotated")}
            truth: dict[tuple[str, str], dict] = {}
            for i in insts:
                if i.get("annotated"):
                    continue
                withheld += 1
                truth[(i["track_id"], i["study_uid"])] = i
                if i["track_id"] in annotated_tracks:
                    minable.append((i["track_id"], i["study_uid"]))
            with blas_single_thread():
                recs = mining.mine_case(case, lambda s, v=vols: v.get(s.study_id), embedder=embedder, config=config,
                                        stats=stats, probe=mining.Probe(keep_below=True),
                                        rank_weights=ranking["rankWeights"])
            true_track = _true_tracks(case, insts) if tracks == "matched" else {}
            for rec in recs:
                key = (true_track.get(rec.tracking_uid, rec.tracking_uid), rec.study_id)
                gt = truth.get(key)
                if gt is None:
                    found.append((rec.candidate.score / rec.evidence, False, None, None, False))
                    continue
                err = M._dist(rec.position_mm, gt["center_mm"])
                within = err <= float(gt["long_diameter_mm"]) / 2.0
                found.append((rec.candidate.score / rec.evidence, within or inside_lesion(rec.position_mm, gt), err, key,
                              within))
            b.update(1)

    def at(th: float, strict: bool = False) -> dict[str, Any]:
        props = [f for f in found if f[0] >= th]
        ok = [f[4] if strict else f[1] for f in props]
        right = sum(ok)
        hit = len({f[3] for f, o in zip(props, ok, strict=True) if o} & set(minable))
        return {"threshold": th, "proposals": len(props), "correct": right,
                "recall": hit / len(minable) if minable else None,
                "precision": right / len(props) if props else None}

    main = at(min_score)
    strict = at(min_score, strict=True)
    errs = [f[2] for f in found if f[0] >= min_score and f[2] is not None]
    errs_right = [f[2] for f in found if f[0] >= min_score and f[1]]
    return MiningEvaluation(
        cohort=str(root), seed=meta.get("seed"), patients=stats.patients, studies=n_studies,
        withheld=withheld, withheld_minable=len(minable), candidate_studies=stats.candidate_studies,
        min_score=min_score, proposals=main["proposals"], correct=main["correct"],
        recall=main["recall"], precision=main["precision"],
        # the same under the radius alone (a centre inside a small lesion but a slice off its
        # RECIST centre counts as wrong here)
        recall_radius_only=strict["recall"], precision_radius_only=strict["precision"],
        median_error_mm=float(np.median(errs)) if errs else None,
        median_error_mm_correct=float(np.median(errs_right)) if errs_right else None,
        seconds_per_candidate_study=stats.seconds_mining / stats.candidate_studies if stats.candidate_studies else None,
        seconds_loading_per_study=load_s / n_studies if n_studies else None,
        curve=[at(t) for t in THRESHOLDS],
        tracks=("ground truth (annotated instances)" if tracks == "truth"
                else "matched (lesiondb match on the annotated instances)"),
        matching=match_info if tracks == "matched" else None,
        ranking=ranking, errors=(errors + stats.skipped)[:50], model_id=model_id or "none")


def inside_lesion(p: M.Vec3, gt: dict) -> bool:
    """Whether point ``p`` (patient mm) lies inside a ground-truth lesion's ellipsoid (``center_mm``,
    ``semi_axes_mm`` along its in-plane axes and z, in-plane ``angle_rad``); False when the
    instance has no extent."""
    semi = gt.get("semi_axes_mm")
    if not semi or len(semi) != 3 or min(semi) <= 0:
        return False
    d = np.asarray(p, float) - np.asarray(gt["center_mm"], float)
    th = float(gt.get("angle_rad", 0.0))
    u = d[0] * np.cos(th) + d[1] * np.sin(th)
    v = -d[0] * np.sin(th) + d[1] * np.cos(th)
    return bool((u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (d[2] / semi[2]) ** 2 <= 1.0)


def _true_tracks(case: mining.PatientCase, insts: list[dict]) -> dict[str, str]:
    """Matched trackingUid → the ground-truth track most of its lesions (annotation ids) belong to."""
    track_of = {i.get("annotation_id"): i["track_id"] for i in insts}
    out = {}
    for uid, obs in case.tracks.items():
        votes: dict[str, int] = {}
        for o in obs:
            t = track_of.get(o.lesion_id)
            if t is not None:
                votes[t] = votes.get(t, 0) + 1
        if votes:
            out[uid] = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return out
