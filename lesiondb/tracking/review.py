"""Review of POSSIBLE_SAME_LESION edges: a track's plausible lesion in a study where it has none.

``lesiondb match`` writes ``(:Lesion)-[:POSSIBLE_SAME_LESION {reviewId, status, probability, cost,
trackingUid}]->(:Lesion)`` from a track member to a lesion of a scan where the track has no
member, when the track's pooled probability for it is at least ``MatchParams.possible_probability``
(the candidate was gated out, or went to another track). They are review items, like mining
proposals:

- :func:`list_possible` — the items (``status`` pending / accepted / rejected, a patient, one id);
- :func:`accept_possible` — the candidate joins the member's track: the edge is marked accepted,
  and the patient is matched again with the pair as a must-link (a SAME_LESION edge and IN_TRACK
  membership follow, with the track's RECIST status recomputed);
- :func:`reject_possible` — the edge is marked rejected with who, when and why; every later match
  keeps the two lesions apart (a cannot-link) and never proposes the pair again.

Re-matching keeps every decision: reviewed edges are never rewritten or deleted, only pending ones.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

from ..core import matching as M
from ..errors import InputError
from .match import match_graph

STATUSES = ("pending", "accepted", "rejected")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_possible(engine, status: str | None = None, patient: str | None = None, review_id: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """POSSIBLE_SAME_LESION review items as flat dicts (query ``possible_same_lesion``), most
    probable first within each patient."""
    if status is not None and status not in STATUSES:
        raise InputError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}", "--status")
    return [dict(r) for r in engine.run("possible_same_lesion", status=status, patientId=patient,
                                        reviewId=review_id, limit=limit or 10 ** 9)]


def _one(engine, review_id: str) -> dict[str, Any]:
    got = list_possible(engine, review_id=review_id)
    if not got:
        raise InputError(f"no POSSIBLE_SAME_LESION edge {review_id!r}; `lesiondb query possible_same_lesion` "
                         "lists them", review_id)
    return got[0]


def accept_possible(engine, review_id: str, by: str | None = None, at: str | None = None, rematch: bool = True,
                    params: M.MatchParams | None = None) -> dict[str, Any]:
    """Accept a POSSIBLE edge: its candidate joins the member's track (idempotent). The edge is
    marked accepted, then (``rematch``) the patient is matched again with the pair as a must-link
    — with ``params`` (the graph's calibrated parameters) if given, else calibrating as ``lesiondb
    match`` does. A rejected edge cannot be accepted (InputError saying so)."""
    item = _one(engine, review_id)
    if item["status"] == "rejected":
        raise InputError(f"{review_id} was rejected by {item.get('reviewedBy') or 'someone'} at "
                         f"{item.get('reviewedAt')}; it cannot be accepted", review_id)
    engine.execute("accept_possible_same_lesion", reviewId=review_id, reviewedBy=by or "unknown",
                   reviewedAt=at or _now())
    out: dict[str, Any] = {"reviewId": review_id, "status": "accepted", "patientId": item["patientId"],
                           "memberLesionId": item["memberLesionId"], "candidateLesionId": item["candidateLesionId"],
                           "alreadyAccepted": item["status"] == "accepted", "trackingUid": None}
    if rematch:
        report = match_graph(engine, item["patientId"], params=params, calibrate=params is None, workers=1)
        out["rematch"] = {k: v for k, v in report.to_dict().items() if k in ("tracks", "written", "deleted")}
        rows = engine.run("lesion_track", lesionId=item["candidateLesionId"])
        out["trackingUid"] = rows[0]["trackingUid"] if rows else None
    return out


def reject_possible(engine, review_id: str, by: str | None = None, reason: str | None = None,
                    at: str | None = None) -> dict[str, Any]:
    """Reject a POSSIBLE edge (idempotent): who, when and why are kept on it, and every later match
    keeps the two lesions out of one track. An accepted edge cannot be rejected."""
    item = _one(engine, review_id)
    if item["status"] == "accepted":
        raise InputError(f"{review_id} was accepted: {item['candidateLesionId']} joined the track of "
                         f"{item['memberLesionId']}; it cannot be rejected", review_id)
    engine.execute("reject_possible_same_lesion", reviewId=review_id, reviewedBy=by or "unknown",
                   reviewedAt=at or _now(), reason=reason or "")
    return {"reviewId": review_id, "status": "rejected", "alreadyRejected": item["status"] == "rejected"}
