"""Reviewing mining proposals: list them, accept one (it becomes an annotated lesion of its
track), reject one (re-mining will not propose it again). Neither touches an existing lesion, and
both are idempotent. ``lesiondb review``, the Python client and the web review queue call these."""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from ..core.records import type_name
from ..core.results import Result, json_field
from ..errors import InputError
from ..graph.engine import Engine
from .case import STATUSES, accepted_lesion_id


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ReviewDecision(Result):
    """The outcome of accepting or rejecting one proposal."""

    proposal_id: str
    status: str
    lesion_id: str | None = json_field(default=None, omit_none=True)
    already_accepted: bool | None = json_field(default=None, omit_none=True)
    already_rejected: bool | None = json_field(default=None, omit_none=True)



def list_proposals(engine: Engine, status: str | None = None, patient: str | None = None,
                   proposal: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Proposals as flat dicts (proposal properties + studyId, studyIndex, studyUid, patientId, trackingUid)."""
    if status is not None and status not in STATUSES:
        raise InputError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}", "--status")
    rows = engine.run("proposals", status=status, patientId=patient, proposalId=proposal, limit=limit or 10**9)
    return [{**r["proposal"], "studyId": r["studyId"], "studyIndex": r.get("studyIndex"), "studyUid": r.get("studyUid"),
             "patientId": r["patientId"], "trackingUid": r.get("trackingUid") or r["proposal"].get("trackingUid")}
            for r in rows]


def _one(engine: Engine, pid: str) -> dict[str, Any]:
    got = list_proposals(engine, proposal=pid)
    if not got:
        raise InputError(f"no proposal {pid!r}; `lesiondb review list` shows the ids", pid)
    return got[0]


def accept(engine: Engine, pid: str, by: str | None = None, at: str | None = None) -> ReviewDecision:
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
    return ReviewDecision(pid, "accepted", lesion_id=res[0]["lesionId"], already_accepted=p["status"] == "accepted")


def reject(engine: Engine, pid: str, by: str | None = None, reason: str | None = None,
           at: str | None = None) -> ReviewDecision:
    """Mark a proposal rejected (idempotent). An accepted proposal cannot be rejected."""
    p = _one(engine, pid)
    if p["status"] == "accepted":
        raise InputError(f"proposal {pid} was accepted as lesion {p.get('lesionId')}; it cannot be rejected", pid)
    engine.execute("reject_proposal", proposalId=pid, reviewedBy=by or "unknown", reviewedAt=at or now_iso(),
                   reason=reason or "")
    return ReviewDecision(pid, "rejected", already_rejected=p["status"] == "rejected")


def _lesion_props(p: dict[str, Any], by: str, at: str) -> dict[str, Any]:
    """The annotated lesion an accepted proposal becomes (DeepLesion-like properties)."""
    sx = float(p.get("spacingXMm") or 1.0)
    type_code = p.get("typeCode")
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
        "seriesId": p.get("seriesId"),
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
