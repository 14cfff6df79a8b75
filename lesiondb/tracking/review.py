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
from dataclasses import dataclass
from typing import Any

from ..core import matching as M
from ..core.results import Result, json_field
from ..errors import InputError
from ..graph.engine import Engine
from .match import match_graph

STATUSES = ("pending", "accepted", "rejected")


@dataclass
class LinkDecision(Result):
    """The outcome of accepting or rejecting one POSSIBLE_SAME_LESION review item."""

    review_id: str
    status: str
    patient_id: str | None = json_field(default=None, omit_none=True)
    member_lesion_id: str | None = json_field(default=None, omit_none=True)
    candidate_lesion_id: str | None = json_field(default=None, omit_none=True)
    tracking_uid: str | None = json_field(default=None, omit_none=True)  # the track the candidate is in now
    already_accepted: bool | None = json_field(default=None, omit_none=True)
    already_rejected: bool | None = json_field(default=None, omit_none=True)
    rematch: dict[str, Any] | None = json_field(default=None, omit_none=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_possible(engine: Engine, status: str | None = None, patient: str | None = None, review_id: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """POSSIBLE_SAME_LESION review items as flat dicts (query ``possible_same_lesion``), most
    probable first within each patient."""
    if status is not None and status not in STATUSES:
        raise InputError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}", "--status")
    return [dict(r) for r in engine.run("possible_same_lesion", status=status, patientId=patient,
                                        reviewId=review_id, limit=limit or 10 ** 9)]


def _one(engine: Engine, review_id: str) -> dict[str, Any]:
    got = list_possible(engine, review_id=review_id)
    if not got:
        raise InputError(f"no POSSIBLE_SAME_LESION edge {review_id!r}; `lesiondb query possible_same_lesion` "
                         "lists them", review_id)
    return got[0]


def accept_possible(engine: Engine, review_id: str, by: str | None = None, at: str | None = None,
                    rematch: bool = True, params: M.MatchParams | None = None) -> LinkDecision:
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
    out = LinkDecision(review_id, "accepted", patient_id=item["patientId"], member_lesion_id=item["memberLesionId"],
                       candidate_lesion_id=item["candidateLesionId"], already_accepted=item["status"] == "accepted")
    if rematch:
        report = match_graph(engine, item["patientId"], params=params, calibrate=params is None, workers=1)
        out.rematch = {k: v for k, v in report.to_json().items() if k in ("tracks", "written", "deleted")}
        rows = engine.run("lesion_track", lesionId=item["candidateLesionId"])
        out.tracking_uid = rows[0]["trackingUid"] if rows else None
    return out


def reject_possible(engine: Engine, review_id: str, by: str | None = None, reason: str | None = None,
                    at: str | None = None) -> LinkDecision:
    """Reject a POSSIBLE edge (idempotent): who, when and why are kept on it, and every later match
    keeps the two lesions out of one track. An accepted edge cannot be rejected."""
    item = _one(engine, review_id)
    if item["status"] == "accepted":
        raise InputError(f"{review_id} was accepted: {item['candidateLesionId']} joined the track of "
                         f"{item['memberLesionId']}; it cannot be rejected", review_id)
    engine.execute("reject_possible_same_lesion", reviewId=review_id, reviewedBy=by or "unknown",
                   reviewedAt=at or _now(), reason=reason or "")
    return LinkDecision(review_id, "rejected", already_rejected=item["status"] == "rejected")
