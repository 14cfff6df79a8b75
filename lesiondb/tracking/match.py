"""Lesion tracking on the graph: read patients' lesions, match them, write tracks idempotently.

:func:`match_graph` reads a batch of patients in two queries (``match_patient_lesions``: studies
and lesion features; ``match_patient_tracks``: current track memberships and their matchHash),
matches the patients 100 at a time (:func:`lesiondb.core.matching.match_patients`, in worker
processes when it pays: they match the next patients while this process writes the last batch,
and calibrate while it reads), classifies each track (:mod:`lesiondb.core.recist`) and writes
only what changed:

- ``(:Lesion)-[:SAME_LESION {cost, confidence, probability, method}]->(:Lesion)`` from the earlier
  to the later scan, for every pair of lesions of one track; a re-matched lesion's stale edges are
  deleted;
- ``(:Lesion)-[:POSSIBLE_SAME_LESION {reviewId, status, probability, cost, trackingUid}]->(:Lesion)``
  from a track member to a plausible lesion of a scan where the track has none (gated out, or
  lost to another track): review items (:mod:`lesiondb.tracking.review`). Pending ones are
  replaced on re-match like SAME_LESION edges; reviewed ones stay, and an accepted one is a
  must-link of every later match, a rejected one a cannot-link;
- ``(:Track {trackingUid, patientId, status, nVisits, baselineMm, nadirMm, lastMm, …, matchHash})``
  with ``(:Lesion)-[:IN_TRACK {studyIndex, response, changeFromBaselinePct, …}]->(:Track)``;
  every lesion is in exactly one track (a lesion seen once is a track of one). A track's
  ``trackingUid`` is a DICOM UID (``2.25.<uuid5 as integer>``) of its member lesions, so it is
  the same on every run for the same members; members made from accepted mining proposals
  (``source: 'proposal'``) do not enter the UID, and stay linked to their track (must-link).
  Lesions that a DICOM SR gave one Tracking Unique Identifier (``sourceTrackingUid``, written by
  ``lesiondb ingest sr``) are must-linked across scans, their SAME_LESION edges keep the method
  ``tracking-uid``, and their track takes that UID as its ``trackingUid`` (unless its members
  disagree, or another track of the patient took it first). Tracks left without lesions are deleted (kept as ``status: 'retired'`` when a proposal points
  at them).

Re-running changes nothing: ``matchHash`` (track properties, member links, edges) tells which
tracks differ, and the second run writes no edge and no track.

Noise scales, gate and the probabilities' temperature are calibrated on the graph
(:class:`lesiondb.core.matching.MatchCalibrator`, no labels) on a fixed sample (the first
``CALIBRATION_PATIENTS`` in patientId order), so matching one patient gives the same result as
matching everyone.
"""
from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..core import matching as M
from ..core import recist
from ..core.progress import Progress, bar
from ..core.records import content_hash
from ..core.results import Result
from ..errors import InputError
from ..graph.engine import Engine

log = logging.getLogger(__name__)

TRACK_UID_ROOT = "2.25."
#: SAME_LESION method of lesions a DICOM SR gave one Tracking Unique Identifier (a must-link).
METHOD_TRACKING_UID = "tracking-uid"
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://lesiondb/track")
DEFAULT_BATCH = 200
CALIBRATION_PATIENTS = 400
MAX_WORKERS = 8
MIN_PARALLEL_PATIENTS = 100  # below this a process pool costs more than it saves
_ROUND = 4  # decimals of cost/confidence stored (and compared: a re-run must not rewrite noise)


def tracking_uid(member_ids: Sequence[str]) -> str:
    """The DICOM-style UID of a track with these member lesions (order does not matter)."""
    key = "|".join(sorted(set(member_ids)))
    return TRACK_UID_ROOT + str(uuid.uuid5(_UID_NAMESPACE, key).int)


@dataclass
class PatientData:
    """One patient's lesions as read from the graph, with their current tracks."""

    patient_id: str
    visits: list[int]  # study indices of every study (with or without lesions)
    lesions: list[M.LesionObs]
    props: list[dict[str, Any]]  # per lesion: lesionId, source, studyId, studyIndex
    tracks: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # lesionId -> (uid, matchHash)
    reviews: list[tuple[str, str, str]] = field(default_factory=list)  # reviewed POSSIBLE edges: (src, dst, status)


_FEATURES = ("lesionId", "source", "seriesIndex", "seriesUid", "locationX", "locationY", "locationZ",
             "positionXMm", "positionYMm", "positionZMm", "longDiameterMm", "shortDiameterMm", "typeCode",
             "sourceTrackingUid", "keySliceIndex", "sliceIntervalMm", "spacingXMm", "spacingYMm",
             "boxCenterXPx", "boxCenterYPx")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _triple(p: dict[str, Any], keys: tuple[str, str, str]) -> tuple[float, float, float] | None:
    vals = [_num(p.get(k)) for k in keys]
    return None if any(v is None for v in vals) else tuple(vals)  # type: ignore[return-value]


def lesion_obs(p: dict[str, Any], study_id: str, study_index: int, study_date: str | None) -> M.LesionObs:
    """The matcher's view of one lesion (a map of its graph properties)."""
    series = p.get("seriesUid") or p.get("seriesIndex") or 1
    emb = p.get("embedding")
    if emb is not None and not isinstance(emb, list | tuple):
        emb = list(emb)
    type_code = _num(p.get("typeCode"))
    return M.LesionObs(
        lesion_id=p["lesionId"], scan=f"{study_id}/{series}", study=study_id,
        order=(int(study_index or 0), study_date or "", int(_num(p.get("seriesIndex")) or 0), str(series)),
        location=_triple(p, ("locationX", "locationY", "locationZ")),
        position_mm=_triple(p, ("positionXMm", "positionYMm", "positionZMm")),
        long_diameter_mm=_num(p.get("longDiameterMm")), short_diameter_mm=_num(p.get("shortDiameterMm")),
        type_code=int(type_code) if type_code is not None else -1,
        embedding=[float(x) for x in emb] if emb else None,
        scan_position_mm=_scan_position(p),
    )


def _scan_position(p: dict[str, Any]) -> tuple[float, float, float] | None:
    """The lesion's centre in its scan's own millimetres: the patient position where DICOM gave
    one, else the box centre × pixel spacing and the key slice × slice interval."""
    pos = _triple(p, ("positionXMm", "positionYMm", "positionZMm"))
    if pos is not None:
        return pos
    vals = [_num(p.get(k)) for k in ("boxCenterXPx", "spacingXMm", "boxCenterYPx", "spacingYMm",
                                      "keySliceIndex", "sliceIntervalMm")]
    if any(v is None for v in vals):
        return None
    cx, sx, cy, sy, k, dz = vals  # type: ignore[misc]
    return (cx * sx, cy * sy, k * dz)


_ROW_FIELDS = ("patientId", "studyId", "studyIndex", "studyDate", *_FEATURES)
#: The row's numbers are the engine's toString(): FalkorDB writes 6 decimals (printf "%f"), Neo4j
#: every digit. Read at FalkorDB's precision, both engines match the same lesions alike.
_ROW_DECIMALS = 6
_ROW_FLOATS = ("locationX", "locationY", "locationZ", "positionXMm", "positionYMm", "positionZMm",
               "longDiameterMm", "shortDiameterMm", "sliceIntervalMm", "spacingXMm", "spacingYMm", "boxCenterXPx",
               "boxCenterYPx")


def _row_float(v: str | None) -> float | str | None:
    f = _num(v)
    return v if f is None else round(f, _ROW_DECIMALS)


def patients_from_rows(rows: Sequence[dict[str, Any]], track_rows: Sequence[dict[str, Any]] = (),
                       review_rows: Sequence[dict[str, Any]] = ()) -> list[PatientData]:
    """One :class:`PatientData` per patient from ``match_patient_lesions`` rows (and the
    ``match_patient_tracks`` and ``match_patient_reviews`` rows of the same patients), in the
    order the patients come."""
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        f = dict(zip(_ROW_FIELDS, (r.get("row") or "").split("|"), strict=False))
        pid, sid = f.get("patientId"), f.get("studyId")
        if not pid or not sid:
            continue
        d = by.setdefault(pid, {"visits": set(), "lesions": [], "props": [], "seen": set()})
        idx = int(_num(f.get("studyIndex")) or 0)
        d["visits"].add(idx)
        lid = f.get("lesionId")
        if not lid or lid in d["seen"]:
            continue
        p = {k: (v if v != "" else None) for k, v in f.items()}
        for k in _ROW_FLOATS:
            p[k] = _row_float(p.get(k))
        p["embedding"] = r.get("embedding")
        d["seen"].add(lid)
        d["lesions"].append(lesion_obs(p, sid, idx, p.get("studyDate")))
        d["props"].append({"lesionId": lid, "source": p.get("source"), "studyId": sid, "studyIndex": idx,
                           "sourceTrackingUid": p.get("sourceTrackingUid")})
    tracks: dict[str, dict[str, tuple[str, str | None]]] = {}
    for t in track_rows:
        tracks.setdefault(t["patientId"], {})[t["lesionId"]] = (t["trackingUid"], t.get("matchHash"))
    reviews: dict[str, list[tuple[str, str, str]]] = {}
    for r in review_rows:
        reviews.setdefault(r["patientId"], []).append((r["src"], r["dst"], r["status"]))
    return [PatientData(pid, sorted(d["visits"]), d["lesions"], d["props"], tracks.get(pid, {}),
                        sorted(reviews.get(pid, [])))
            for pid, d in by.items()]


def read_patients(engine, patient_ids: Sequence[str], batch_size: int = DEFAULT_BATCH,
                  current: bool = True) -> Iterator[PatientData]:
    """Patients' lesions, ``batch_size`` patients per query (with ``current``, a second query per
    batch reads their current tracks)."""
    for i in range(0, len(patient_ids), batch_size):
        batch = list(patient_ids[i:i + batch_size])
        rows = engine.run("match_patient_lesions", patientIds=batch)
        tracks = engine.run("match_patient_tracks", patientIds=batch) if current else []
        reviews = engine.run("match_patient_reviews", patientIds=batch)
        yield from patients_from_rows(rows, tracks, reviews)


def cannot_links(data: PatientData) -> list[tuple[int, int]]:
    """Rejected POSSIBLE edges: the two lesions never share a track; nor do two lesions of one
    scan that a DICOM SR gave different Tracking Unique Identifiers (never bookmarks of one)."""
    uid = [p.get("sourceTrackingUid") for p in data.props]
    by_scan: dict[Any, list[int]] = {}
    for i, les in enumerate(data.lesions):
        if uid[i]:
            by_scan.setdefault(les.scan, []).append(i)
    apart = [(a, b) for idx in by_scan.values() for x, a in enumerate(idx) for b in idx[x + 1:] if uid[a] != uid[b]]
    return _reviewed(data, "rejected") + apart


def _reviewed(data: PatientData, status: str) -> list[tuple[int, int]]:
    index = {les.lesion_id: i for i, les in enumerate(data.lesions)}
    return [(index[a], index[b]) for a, b, st in data.reviews if st == status and a in index and b in index]


def must_links(data: PatientData) -> list[tuple[int, int]]:
    """Accepted proposals stay with the lesions of the track they were accepted into; an accepted
    POSSIBLE edge joins its two lesions; lesions of different scans that a DICOM SR gave one
    Tracking Unique Identifier (``sourceTrackingUid``) are one lesion."""
    by_track: dict[str, list[int]] = {}
    for i, les in enumerate(data.lesions):
        t = data.tracks.get(les.lesion_id)
        if t:
            by_track.setdefault(t[0], []).append(i)
    out = []
    for members in by_track.values():
        for i in members:
            if data.props[i].get("source") == "proposal":
                out.extend((i, j) for j in members if j != i and data.lesions[j].scan != data.lesions[i].scan)
    return out + _reviewed(data, "accepted") + _same_tracking_uid(data)


def _same_tracking_uid(data: PatientData) -> list[tuple[int, int]]:
    """Pairs of lesions in different scans with the same ``sourceTrackingUid``."""
    by_uid: dict[str, list[int]] = {}
    for i, p in enumerate(data.props):
        if p.get("sourceTrackingUid"):
            by_uid.setdefault(p["sourceTrackingUid"], []).append(i)
    return [(i, j) for members in by_uid.values() for x, i in enumerate(members) for j in members[x + 1:]
            if data.lesions[i].scan != data.lesions[j].scan]


def review_id(src: str, dst: str) -> str:
    """The id of the POSSIBLE edge src → dst (what a reviewer accepts or rejects): the same on
    every run."""
    return "PS-" + uuid.uuid5(_UID_NAMESPACE, f"possible|{src}|{dst}").hex[:20]


# -- desired state -------------------------------------------------------------------------------
@dataclass
class PatientPlan:
    """What the graph should hold for one patient, and which of it must be written."""

    patient_id: str
    tracks: list[dict[str, Any]]  # write_tracks rows (with their "edges", dropped before writing)
    n_edges: int = 0
    n_possible: int = 0
    write_tracks: list[dict[str, Any]] = field(default_factory=list)
    delete_links: list[dict[str, Any]] = field(default_factory=list)
    stale_tracks: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    fresh: bool = False  # none of the patient's lesions was in a track: they have no SAME_LESION edge yet


def plan_patient(data: PatientData, params: M.MatchParams, pm: M.PatientMatch | None = None) -> PatientPlan:
    """Match one patient and work out which tracks (with their links and edges) must be written
    (``pm``: the patient's match, when already made)."""
    if pm is None:
        pm = M.match_patient(data.lesions, params, must_link=must_links(data), cannot_link=cannot_links(data))
    ids = [les.lesion_id for les in data.lesions]
    edges_of: dict[int, list[dict[str, Any]]] = {}
    possible_of: dict[int, list[dict[str, Any]]] = {}
    track_index = pm.track_of()
    src_uid = [p.get("sourceTrackingUid") for p in data.props]
    for e in pm.edges:
        same_uid = src_uid[e.src] is not None and src_uid[e.src] == src_uid[e.dst]
        edges_of.setdefault(track_index[e.src], []).append(
            {"src": ids[e.src], "dst": ids[e.dst], "cost": _rounded(e.cost),
             "confidence": _rounded(e.confidence), "probability": _rounded(e.probability),
             "method": METHOD_TRACKING_UID if same_uid else e.method})
    reviewed = {(a, b) for a, b, _st in data.reviews}
    for e in pm.possible:
        if (ids[e.src], ids[e.dst]) not in reviewed:  # a reviewer's decision stays as it is
            possible_of.setdefault(track_index[e.src], []).append(
                {"src": ids[e.src], "dst": ids[e.dst], "reviewId": review_id(ids[e.src], ids[e.dst]),
                 "probability": _rounded(e.probability), "cost": _rounded(e.cost)})
    tracks: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    taken: set[str] = set()
    for k, members in enumerate(pm.tracks):
        annotated = [ids[i] for i in members if data.props[i].get("source") != "proposal"]
        uid = _source_uid(members, src_uid, taken) or tracking_uid(annotated or [ids[i] for i in members])
        ch = _classify(data, members)
        statuses[ch.status] = statuses.get(ch.status, 0) + 1
        by_visit = {v.visit: v for v in ch.visits}
        track = {"trackingUid": uid, "patientId": data.patient_id, "nLesions": len(members),
                 "nVisits": len({data.props[i]["studyIndex"] for i in members}),
                 "firstStudyIndex": ch.first_visit, "lastStudyIndex": ch.last_visit, **ch.to_props()}
        member_rows = []
        for i in members:
            v = by_visit.get(data.props[i]["studyIndex"])
            link: dict[str, Any] = {"studyIndex": data.props[i]["studyIndex"]}
            if v is not None:
                link.update(response=v.response, changeFromBaselinePct=v.change_from_baseline_pct,
                            changeFromNadirPct=v.change_from_nadir_pct)
            member_rows.append({"lesionId": ids[i], "link": {x: y for x, y in link.items() if y is not None}})
        edges = edges_of.get(k, [])
        possible = [{**e, "trackingUid": uid} for e in possible_of.get(k, [])]
        track = {x: y for x, y in track.items() if y is not None}
        track["matchHash"] = content_hash({"track": track, "members": member_rows, "edges": edges,
                                           "possible": possible})
        tracks.append({"track": track, "members": member_rows, "edges": edges, "possible": possible})
    plan = PatientPlan(data.patient_id, tracks, n_edges=len(pm.edges), n_possible=len(pm.possible),
                       statuses=statuses, fresh=not data.tracks)
    _diff(data, plan)
    return plan


def _source_uid(members: Sequence[int], src_uid: Sequence[str | None], taken: set[str]) -> str | None:
    """The Tracking Unique Identifier the members came with (DICOM SR ingest), when they agree on
    one and no other track of the patient took it first; else None (the track's own UID)."""
    uids = {src_uid[i] for i in members if src_uid[i]}
    if len(uids) != 1:
        return None
    uid = uids.pop()
    if uid in taken:
        return None
    taken.add(uid)
    return uid


def _rounded(x: float) -> float | None:
    """Stored precision; a pair linked only by a must-link may have no finite cost (null)."""
    return round(x, _ROUND) if math.isfinite(x) else None


def _classify(data: PatientData, members: Sequence[int]) -> recist.TrackChange:
    meas = [(data.props[i]["studyIndex"], data.lesions[i].long_diameter_mm) for i in members
            if data.lesions[i].long_diameter_mm]
    if meas:
        return recist.classify(meas, data.visits)
    visits = sorted({data.props[i]["studyIndex"] for i in members})  # unmeasured: presence only
    status = ("disappeared" if visits[-1] != data.visits[-1] else "new" if visits[0] != data.visits[0]
              else "baseline" if len(visits) == 1 else "stable")
    return recist.TrackChange(status, first_visit=visits[0], last_visit=visits[-1])


def _diff(data: PatientData, plan: PatientPlan) -> None:
    wanted: dict[str, str] = {}
    for row in plan.tracks:
        uid, h = row["track"]["trackingUid"], row["track"]["matchHash"]
        members = [m["lesionId"] for m in row["members"]]
        wanted.update({lid: uid for lid in members})
        if any(data.tracks.get(lid) != (uid, h) for lid in members):
            plan.write_tracks.append(row)
    old_uids = set()
    for lid, (uid, _h) in data.tracks.items():
        old_uids.add(uid)
        if wanted.get(lid) != uid:
            plan.delete_links.append({"lesionId": lid, "trackingUid": uid})
    plan.stale_tracks = sorted(old_uids - set(wanted.values()))


# -- the graph run -------------------------------------------------------------------------------
@dataclass
class MatchReport(Result):
    """What one ``lesiondb match`` did."""

    patients: int = 0
    lesions: int = 0
    scan_pairs: int = 0
    tracks: int = 0
    edges: int = 0
    possible: int = 0
    tracks_written: int = 0
    edges_written: int = 0
    possible_written: int = 0
    possible_deleted: int = 0
    edges_deleted: int = 0
    links_deleted: int = 0
    tracks_deleted: int = 0
    tracks_retired: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "calibrate": 0.0, "match": 0.0,
                                                               "write": 0.0})

    def to_json(self) -> dict[str, Any]:
        return {
            "patients": self.patients, "lesions": self.lesions, "scanPairs": self.scan_pairs,
            "tracks": self.tracks, "sameLesionEdges": self.edges, "possibleSameLesionEdges": self.possible,
            "written": {"tracks": self.tracks_written, "edges": self.edges_written,
                        "possibleEdges": self.possible_written},
            "unchangedTracks": self.tracks - self.tracks_written,
            "deleted": {"edges": self.edges_deleted, "possibleEdges": self.possible_deleted,
                        "trackLinks": self.links_deleted, "tracks": self.tracks_deleted},
            "retiredTracks": self.tracks_retired,
            "statuses": dict(sorted(self.statuses.items())),
            "calibration": self.calibration, "skipped": self.skipped, "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def patient_ids(engine, patient: str | None = None) -> list[str]:
    return [r["patientId"] for r in engine.run("match_patients", patientId=patient)]


def _plan_or_error(data: PatientData, params: M.MatchParams) -> PatientPlan | str:
    try:
        return plan_patient(data, params)
    except Exception as exc:  # one bad patient never stops the run
        return f"{type(exc).__name__}: {exc}"


def _plan_chunk(datas: Sequence[PatientData], params: M.MatchParams) -> list[PatientPlan | str]:
    """Plans of some patients, their scan pairs solved together; if that fails, patient by
    patient, so that only the bad patient is reported."""
    try:
        pms = M.match_patients([d.lesions for d in datas], params, [must_links(d) for d in datas],
                               cannot_links=[cannot_links(d) for d in datas])
        return [plan_patient(d, params, pm) for d, pm in zip(datas, pms, strict=True)]
    except Exception:
        return [_plan_or_error(d, params) for d in datas]


def _n_workers(workers: int | None) -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS) if workers is None else int(workers))


@contextlib.contextmanager
def _mapper(workers: int | None, n_patients: int) -> Iterator[Callable]:
    """``map`` over a process pool when it pays (several CPUs, enough patients), else the builtin."""
    n = _n_workers(workers)
    if n <= 1 or n_patients < MIN_PARALLEL_PATIENTS or "fork" not in mp.get_all_start_methods():
        yield map
        return
    # fork: workers inherit the imported modules and need nothing from the parent's connections
    with ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as ex:
        ex.submit(int).result()  # fork the workers now, from this thread, before any other thread runs
        yield lambda fn, *its: ex.map(fn, *its)  # callers hand over chunks of patients


def match_graph(engine: Engine, patient: str | None = None, params: M.MatchParams | None = None,
                calibrate: bool = True, batch_size: int = DEFAULT_BATCH, workers: int | None = None,
                progress: Progress | None = None) -> MatchReport:
    """Match every patient (or one) and write SAME_LESION edges and tracks. Idempotent.

    With ``calibrate``, the noise scales, gate and temperature are first fitted
    (:class:`~lesiondb.core.matching.MatchCalibrator`) on the first ``CALIBRATION_PATIENTS``
    patients in patientId order (so one patient is matched as in a full run). ``workers``
    processes match in parallel (default: the CPU count, at most ``MAX_WORKERS``; 1 = in this
    process). A patient whose matching fails is reported in ``skipped`` and left as it was.
    ``progress`` gets a bar counting patients as they are written.
    """
    t0 = time.perf_counter()
    report = MatchReport()
    all_ids = patient_ids(engine)
    if patient is not None:
        if patient not in all_ids:
            raise InputError(f"no patient {patient!r} with lesions in the graph "
                             f"(list them with `lesiondb query patients`)", patient)
        ids = [patient]
    else:
        ids = all_ids
    b = bar(progress, "match", len(ids))
    p = params or M.MatchParams()
    sample_ids = all_ids[:CALIBRATION_PATIENTS] if calibrate else []
    tm = report.timings
    with _mapper(workers, max(len(ids), len(sample_ids))) as mapper:
        cached: dict[str, PatientData] = {}
        if sample_ids:
            # read once: the sample's patients are matched from the same read
            t = time.perf_counter()
            sample = list(read_patients(engine, sample_ids, batch_size))
            tm["read"] += time.perf_counter() - t
            wanted = set(ids)
            cached = {d.patient_id: d for d in sample if d.patient_id in wanted}
        need = [pid for pid in ids if pid not in cached]
        with ThreadPoolExecutor(1) as side:
            # the calibration (in the worker processes) runs while this thread reads the other
            # patients (mostly waiting for the graph server): the two overlap
            fut = side.submit(_timed, _calibrate, [d.lesions for d in sample], p, mapper) if sample_ids else None
            t = time.perf_counter()
            datas = {d.patient_id: d for d in read_patients(engine, need, batch_size)} if need else {}
            tm["read"] += time.perf_counter() - t
            if fut is not None:
                cal, tm["calibrate"] = fut.result()
                p = cal.params
                report.calibration = cal.to_dict()
        datas.update(cached)
        ordered = [datas[pid] for pid in ids if pid in datas]
        # a process pool's map submits every patient at once: the workers match the next batches
        # while this process writes the last one (the graph server works while they compute)
        # chunks as large as keeps every worker busy (about 4 each): scan pairs of one shape are
        # summed together in a chunk, and on a DeepLesion-sized graph chunks of 100 patients cost
        # 7.2 s of CPU against 6.3 s for chunks of 500 (fewer, larger array operations)
        size = max(M._CHUNK, math.ceil(len(ordered) / (4 * _n_workers(workers))))
        chunks = [ordered[i:i + size] for i in range(0, len(ordered), size)]
        results = (plan for plans in mapper(_plan_chunk, chunks, [p] * len(chunks)) for plan in plans)
        for start in range(0, len(ordered), batch_size):
            batch = ordered[start:start + batch_size]
            plans: list[PatientPlan] = []
            t = time.perf_counter()
            for data in batch:
                plan = next(results)
                if isinstance(plan, str):
                    log.warning("patient %s: matching failed: %s", data.patient_id, plan)
                    report.skipped.append({"patientId": data.patient_id, "reason": plan})
                    continue
                plans.append(plan)
                report.patients += 1
                report.lesions += len(data.lesions)
                n_scans = len({les.scan for les in data.lesions})
                report.scan_pairs += n_scans * (n_scans - 1) // 2
                report.tracks += len(plan.tracks)
                report.edges += plan.n_edges
                report.possible += plan.n_possible
                for k, v in plan.statuses.items():
                    report.statuses[k] = report.statuses.get(k, 0) + v
            tm["match"] += time.perf_counter() - t
            t = time.perf_counter()
            _write(engine, plans, report)
            tm["write"] += time.perf_counter() - t
            b.update(len(batch))
    b.close()
    report.seconds = time.perf_counter() - t0
    return report


def _calibrate(patients: Sequence[Sequence[M.LesionObs]], params: M.MatchParams, mapper: Callable) -> M.Calibration:
    return M.MatchCalibrator(params).fit(patients, mapper=mapper).calibration_


def _timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t


def _write(engine, plans: Sequence[PatientPlan], report: MatchReport) -> None:
    """A batch's writes, ordered so that a lesion is never left in two tracks: old links go, then
    the changed tracks (links, then SAME_LESION and POSSIBLE_SAME_LESION edges, then the stale
    edges of their members), then the tracks left empty."""
    del_links = [r for pl in plans for r in pl.delete_links]
    rows = [r for pl in plans for r in pl.write_tracks]
    stale = [{"trackingUid": u} for pl in plans for u in pl.stale_tracks]
    if del_links:
        engine.write("delete_in_track", del_links)
        report.links_deleted += len(del_links)
    if rows:
        engine.write("write_tracks", [{"track": r["track"], "members": r["members"]} for r in rows], batch_size=500)
        report.tracks_written += len(rows)
        edges = [e for r in rows for e in r["edges"]]
        if edges:
            engine.write("write_same_lesion", edges)
            report.edges_written += len(edges)
        possible = [e for r in rows for e in r["possible"]]
        if possible:
            engine.write("write_possible_same_lesion", possible)
            report.possible_written += len(possible)
        # stale edges can only leave lesions that were matched before (edges are written only for
        # lesions just linked to their track): a first match of a patient deletes nothing
        keep: dict[str, list[str]] = {m["lesionId"]: [] for pl in plans if not pl.fresh
                                      for r in pl.write_tracks for m in r["members"]}
        for e in edges:
            if e["src"] in keep:
                keep[e["src"]].append(e["dst"])
        if keep:
            res = engine.write("delete_same_lesion", [{"lesionId": k, "keep": v} for k, v in keep.items()])
            report.edges_deleted += int(sum(float(r.get("deleted") or 0) for r in res))
            keep_possible: dict[str, list[str]] = {k: [] for k in keep}
            for e in possible:
                if e["src"] in keep_possible:
                    keep_possible[e["src"]].append(e["dst"])
            res = engine.write("delete_possible_same_lesion", [{"lesionId": k, "keep": v}
                                                               for k, v in keep_possible.items()])
            report.possible_deleted += int(sum(float(r.get("deleted") or 0) for r in res))
    if stale:
        res = engine.write("retire_stale_tracks", stale)
        report.tracks_retired += int(sum(float(r.get("retired") or 0) for r in res))
        res = engine.write("delete_stale_tracks", stale)
        report.tracks_deleted += int(sum(float(r.get("deleted") or 0) for r in res))
