"""What each page of ``lesiondb serve`` shows, read from the graph: plain library functions (an
engine in, dicts out), so the routes stay thin and the pages are testable without a server.

Everything here names patients, studies, series and lesions by their pseudonyms and studies by
``studyIndex`` / ``studyDay`` (days since the patient's first study): a page never shows a date,
a UID or a path, whatever the graph holds (``--keep-source-ids`` graphs included).

The review actions are the CLI's own functions: :func:`decide` calls
:func:`lesiondb.mining.accept` / :func:`~lesiondb.mining.reject` for proposals and
:func:`lesiondb.tracking.accept_possible` / :func:`~lesiondb.tracking.reject_possible` for
POSSIBLE_SAME_LESION links, exactly as ``lesiondb review`` and the Python client do.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..embedding import similar
from ..errors import InputError, LesionDBError
from ..graph.engine import Engine
from ..mining import accept, list_proposals, reject
from ..tracking import accept_possible, list_possible, reject_possible
from .charts import diameter_chart
from .crops import geometry_version
from .images import SliceRef

#: Lesion properties the lesion page lists (label, property, unit); nothing else is shown.
LESION_FIELDS = (
    ("type", "typeName", ""), ("predicted type", "predictedTypeName", ""),
    ("long diameter", "longDiameterMm", "mm"), ("short diameter", "shortDiameterMm", "mm"),
    ("source", "source", ""), ("series", "seriesId", ""), ("series index", "seriesIndex", ""),
    ("key slice", "keySliceIndex", ""), ("box (px)", "bboxPx", ""),
    ("pixel spacing", "spacingXMm", "mm"), ("slice interval", "sliceIntervalMm", "mm"),
    ("location x, y, z (normalised)", "location", ""), ("embedding model", "modelId", ""),
    ("annotated by", "annotatedBy", ""), ("from proposal", "proposalId", ""),
)
KINDS = ("proposal", "link")
ACTIONS = ("accept", "reject")


@dataclass(frozen=True)
class CropTarget:
    """The slice and box a crop shows, and the version of that geometry (cache key)."""

    slice: SliceRef
    box_px: list[float] | None
    version: str


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _box(v: Any) -> list[float] | None:
    if isinstance(v, list | tuple) and len(v) == 4 and all(_num(x) is not None for x in v):
        return [float(x) for x in v]
    return None


# -- crops ---------------------------------------------------------------------------------------
def lesion_crop_target(lesion: dict[str, Any]) -> CropTarget:
    ref = SliceRef(lesion.get("seriesId"), lesion.get("keySliceIndex"), lesion.get("imageRef"))
    box = _box(lesion.get("bboxPx"))
    return CropTarget(ref, box, geometry_version(ref.series_id, ref.slice_index, box))


def proposal_crop_target(p: dict[str, Any]) -> CropTarget:
    ref = SliceRef(p.get("seriesId"), p.get("sliceIndex"), p.get("imageRef"))
    box = _box(p.get("bboxPx"))
    return CropTarget(ref, box, geometry_version(ref.series_id, ref.slice_index, box))


def crop_target(engine: Engine, kind: str, item_id: str) -> CropTarget | None:
    """Where the crop of a lesion or a proposal comes from (None: no such item)."""
    if kind == "lesion":
        rows = engine.run("lesion_detail", lesionId=item_id)
        return lesion_crop_target(rows[0]["lesion"]) if rows else None
    if kind == "proposal":
        rows = list_proposals(engine, proposal=item_id)
        return proposal_crop_target(rows[0]) if rows else None
    raise ValueError(f"unknown crop kind {kind!r}")


# -- the index -----------------------------------------------------------------------------------
def patients_overview(engine: Engine, skip: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    """Patients (a page, patientId order) with their numbers of studies, lesions, tracks, pending
    proposals and pending links."""
    rows = engine.run("patient_overview", skip=int(skip), limit=int(limit))
    return [{k: (int(v) if k not in ("patientId", "sex") and v is not None else v) for k, v in r.items()}
            for r in rows]


# -- a patient's timeline ------------------------------------------------------------------------
def patient_timeline(engine: Engine, patient_id: str) -> dict[str, Any] | None:
    """A patient's studies (columns, by studyIndex, with studyDay) against tracks (rows): each cell
    the track's lesion(s) in that study, and the pending proposals of the track there; per track
    its RECIST status and the chart of the long diameter over time. None: no such patient.

    Returns ``{"patientId", "sex", "studies": [{studyId, studyIndex, studyDay}], "tracks": [{trackingUid,
    status, nVisits, baselineMm, nadirMm, lastMm, changeFromBaselinePct, changeFromNadirPct, typeName,
    cells: {studyId: [lesion]}, proposals: {studyId: [proposal]}, chart (SVG)}], "untracked": {studyId:
    [lesion]}, "pendingProposals", "pendingLinks"}``."""
    study_rows = engine.run("patient_studies", patientId=patient_id)
    if not study_rows:
        return None
    patient = study_rows[0]["patient"]
    studies = [{"studyId": r["study"]["studyId"], "studyIndex": r["study"].get("studyIndex"),
                "studyDay": r["study"].get("studyDay")} for r in study_rows]
    day_of = {s["studyId"]: s["studyDay"] for s in studies}
    summary = {}
    for r in engine.run("patient_tracks", patientId=patient_id):
        summary.setdefault(r["trackingUid"], {k: r[k] for k in (
            "trackingUid", "status", "nVisits", "baselineMm", "nadirMm", "lastMm", "changeFromBaselinePct",
            "changeFromNadirPct")})
    tracks: dict[str, dict[str, Any]] = {}
    untracked: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in engine.run("patient_timeline", patientId=patient_id):
        lesion = {"lesionId": r["lesionId"], "typeName": r.get("typeName"), "longDiameterMm": r.get("longDiameterMm"),
                  "response": r.get("response"), "changeFromBaselinePct": r.get("changeFromBaselinePct"),
                  "studyIndex": r.get("studyIndex"), "studyDay": r.get("studyDay")}
        uid = r.get("trackingUid")
        if uid is None:
            untracked[r["studyId"]].append(lesion)
            continue
        t = tracks.setdefault(uid, {**summary.get(uid, {"trackingUid": uid, "status": r.get("trackStatus")}),
                                    "typeName": r.get("typeName"), "cells": defaultdict(list),
                                    "proposals": defaultdict(list)})
        t["cells"][r["studyId"]].append(lesion)
    pending = list_proposals(engine, status="pending", patient=patient_id)
    for p in pending:
        t = tracks.get(p.get("trackingUid"))
        if t is not None:
            t["proposals"][p["studyId"]].append({"proposalId": p["proposalId"], "score": p.get("score"),
                                                 "longDiameterMm": p.get("longDiameterMm"),
                                                 "version": proposal_crop_target(p).version})
    for t in tracks.values():
        points = []
        for s in studies:
            mm = [le["longDiameterMm"] for le in t["cells"].get(s["studyId"], []) if le["longDiameterMm"] is not None]
            if mm:
                resp = t["cells"][s["studyId"]][0].get("response")
                points.append((float(day_of[s["studyId"]] or 0), max(mm), resp))
        t["chart"] = diameter_chart(points, title=f"long diameter of track {t['trackingUid']}") if points else ""
        t["cells"], t["proposals"] = dict(t["cells"]), dict(t["proposals"])
    first_index = {uid: min((s["studyIndex"] or 0) for s in studies if s["studyId"] in t["cells"]) if t["cells"] else 0
                   for uid, t in tracks.items()}
    ordered = sorted(tracks.values(), key=lambda t: (first_index[t["trackingUid"]], t.get("typeName") or "",
                                                      t["trackingUid"]))
    links = list_possible(engine, status="pending", patient=patient_id)
    return {"patientId": patient_id, "sex": patient.get("sex"), "studies": studies, "tracks": ordered,
            "untracked": dict(untracked), "pendingProposals": len(pending), "pendingLinks": len(links)}


# -- a lesion ------------------------------------------------------------------------------------
def lesion_view(engine: Engine, lesion_id: str, k: int = 8) -> dict[str, Any] | None:
    """A lesion: its study and patient, the fields of :data:`LESION_FIELDS`, its track (members in
    time order with their responses) and its ``k`` most similar lesions (:func:`lesiondb.embedding.similar`;
    ``similarNote`` says why there are none). None: no such lesion."""
    rows = engine.run("lesion_detail", lesionId=lesion_id)
    if not rows:
        return None
    r = rows[0]
    props = r["lesion"]
    fields = []
    for label, key, unit in LESION_FIELDS:
        if key == "location":
            loc = [props.get(f"location{a}") for a in "XYZ"]
            value = ", ".join(f"{float(v):.2f}" for v in loc) if all(v is not None for v in loc) else None
        elif key == "bboxPx":
            box = _box(props.get(key))
            value = ", ".join(f"{v:.0f}" for v in box) if box else None
        else:
            value = props.get(key)
            if isinstance(value, float):
                value = f"{value:.4g}"
        if value not in (None, ""):
            fields.append((label, f"{value} {unit}".strip()))
    note = None
    try:
        neighbours = similar(engine, lesion_id, k=k)
    except LesionDBError as exc:
        neighbours, note = [], str(exc)
    if not neighbours and note is None:
        note = "no similar lesions: the lesion has no embedding (run `lesiondb embed`)"
    track = engine.run("lesion_track", lesionId=lesion_id)
    return {"lesionId": lesion_id, "patientId": r["patientId"], "studyId": r["studyId"],
            "studyIndex": r.get("studyIndex"), "studyDay": r.get("studyDay"), "typeName": props.get("typeName"),
            "longDiameterMm": props.get("longDiameterMm"), "fields": fields,
            "similar": [{"lesionId": n["lesionId"], "distance": n.get("distance"), "rank": n.get("rank"),
                         "typeName": n.get("typeName"), "patientId": n.get("patientId"),
                         "longDiameterMm": n.get("longDiameterMm")} for n in neighbours],
            "similarNote": note,
            "track": [{"lesionId": t["lesionId"], "studyIndex": t.get("studyIndex"), "studyDay": t.get("studyDay"),
                       "longDiameterMm": t.get("longDiameterMm"), "response": t.get("response"),
                       "status": t.get("status"), "trackingUid": t.get("trackingUid")} for t in track]}


# -- the review queue ----------------------------------------------------------------------------
_TERM_RE = re.compile(r"\s*([A-Za-z_][\w-]*)\s*=\s*(-?[\d.]+(?:[eE][-+]?\d+)?)\s*")


def score_terms(text: Any) -> list[tuple[str, float]]:
    """``"position=0.69, size=0.01"`` (a proposal's ``scoreTerms``) → [("position", 0.69), …]."""
    if isinstance(text, dict):
        return [(str(k), float(v)) for k, v in text.items() if _num(v) is not None]
    out = []
    for part in str(text or "").split(","):
        m = _TERM_RE.fullmatch(part)
        if m:
            out.append((m.group(1), float(m.group(2))))
    return out


def review_queue(engine: Engine, limit: int = 50, patient: str | None = None,
                 links: bool = True) -> dict[str, Any]:
    """The pending review items: mining proposals (each with its crop geometry version, score,
    score terms and the track's annotated lesions) and, with ``links``, POSSIBLE_SAME_LESION links
    (the track's member, the candidate, the probability). At most ``limit`` of each kind.

    Returns ``{"proposals": [...], "links": [...], "pendingProposals": n, "pendingLinks": n}``, the
    counts being the whole queue's (not limited)."""
    all_pending = list_proposals(engine, status="pending", patient=patient)
    proposals = all_pending[:limit]
    all_links = list_possible(engine, status="pending", patient=patient) if links else []
    link_items = all_links[:limit]
    uids = sorted({p["trackingUid"] for p in proposals if p.get("trackingUid")}
                  | {x["trackingUid"] for x in link_items if x.get("trackingUid")})
    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    status_of: dict[str, str | None] = {}
    for r in engine.run("track_members", trackingUids=uids) if uids else []:
        members[r["trackingUid"]].append({k: r.get(k) for k in ("lesionId", "studyIndex", "studyDay", "source",
                                                                "typeName", "longDiameterMm", "response")})
        status_of[r["trackingUid"]] = r.get("status")
    sids = sorted({p["studyId"] for p in proposals})
    where = {r["studyId"]: r for r in engine.run("study_positions", studyIds=sids)} if sids else {}
    out_p = []
    for p in proposals:
        target = proposal_crop_target(p)
        pos = where.get(p["studyId"], {})
        out_p.append({
            "kind": "proposal", "id": p["proposalId"], "patientId": p["patientId"], "studyId": p["studyId"],
            "studyIndex": pos.get("studyIndex"), "studyDay": pos.get("studyDay"), "trackingUid": p.get("trackingUid"),
            "trackStatus": status_of.get(p.get("trackingUid")), "score": p.get("score"),
            "terms": score_terms(p.get("scoreTerms")), "longDiameterMm": p.get("longDiameterMm"),
            "shortDiameterMm": p.get("shortDiameterMm"), "sliceIndex": p.get("sliceIndex"),
            "meanHu": p.get("meanHu"), "contrastHu": p.get("contrastHu"), "method": p.get("predictionMethod"),
            "version": target.version, "members": members.get(p.get("trackingUid"), []),
        })
    out_l = []
    for x in link_items:
        out_l.append({
            "kind": "link", "id": x["reviewId"], "patientId": x["patientId"], "trackingUid": x.get("trackingUid"),
            "trackStatus": status_of.get(x.get("trackingUid")), "probability": x.get("probability"),
            "cost": x.get("cost"), "memberLesionId": x["memberLesionId"], "memberStudyIndex": x.get("memberStudyIndex"),
            "candidateLesionId": x["candidateLesionId"], "candidateStudyIndex": x.get("candidateStudyIndex"),
            "candidateStudyDay": x.get("candidateStudyDay"), "candidateTypeName": x.get("candidateTypeName"),
            "candidateLongDiameterMm": x.get("candidateLongDiameterMm"),
            "candidateTrackingUid": x.get("candidateTrackingUid"),
            "members": members.get(x.get("trackingUid"), []),
        })
    return {"proposals": out_p, "links": out_l, "pendingProposals": len(all_pending), "pendingLinks": len(all_links)}


def decide(engine: Engine, kind: str, item_id: str, action: str, by: str | None = None,
           reason: str | None = None) -> dict[str, Any]:
    """Accept or reject one review item with the CLI's own functions: a proposal
    (:func:`lesiondb.mining.accept` / :func:`~lesiondb.mining.reject`, as ``lesiondb review``) or a
    POSSIBLE_SAME_LESION link (:func:`lesiondb.tracking.accept_possible` /
    :func:`~lesiondb.tracking.reject_possible`, as the Python client). InputError for an unknown
    item or a decision that contradicts an earlier one."""
    if kind not in KINDS:
        raise InputError(f"unknown review item kind {kind!r}; use one of {', '.join(KINDS)}", kind)
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r}; use accept or reject", action)
    by = (by or "").strip() or None
    reason = (reason or "").strip() or None
    if kind == "proposal":
        if action == "accept":
            return accept(engine, item_id, by=by).to_json()
        return reject(engine, item_id, by=by, reason=reason).to_json()
    if action == "accept":
        out = accept_possible(engine, item_id, by=by)
    else:
        out = reject_possible(engine, item_id, by=by, reason=reason)
    return {k: v for k, v in out.to_json().items() if k != "rematch"}
