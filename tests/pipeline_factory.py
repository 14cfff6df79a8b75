"""The whole pipeline on one engine, as a user runs it: what the engine parity and bulk-import
tests build and compare.

``run_pipeline(engine, cohort, model, ids)``: ingest the DICOM cohort (embedding every lesion
with ``model``) → ingest again (a no-op) → match → mine → accept one proposal, reject another →
accept one POSSIBLE_SAME_LESION edge, reject another → match again → classify → cluster
(networkx, seeded). Reviews carry a fixed time, so two runs differ only in the stamps the graph
takes from the clock (:data:`CLOCK`).
"""
from __future__ import annotations

from typing import Any

from lesiondb.embedding import EmbedOptions, services
from lesiondb.ingest import ingest_dicom
from lesiondb.mining import StudyVolumes, mine
from lesiondb.mining import review as proposal_review
from lesiondb.tracking import match_graph
from lesiondb.tracking import review as possible_review

AT = "2026-01-02T03:04:05Z"
#: Properties and result keys the clock or a random token sets.
CLOCK = {"createdAt", "updatedAt", "keyClaimedAt", "embeddingsVersion"}
#: Result keys that are timings.
TIMINGS = {"seconds", "timings", "totalSeconds", "secondsLoading", "secondsMining", "secondsPerCandidateStudy"}


def _plain(res: Any) -> Any:
    """A use case's result as JSON, without its timings."""
    data = res.to_json() if hasattr(res, "to_json") else res
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items() if k not in TIMINGS and k not in CLOCK}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def run_pipeline(engine, cohort, model, ids) -> dict[str, Any]:
    """Every step's result (timings dropped), by step name."""
    out: dict[str, Any] = {}
    opts = EmbedOptions(k=5, workers=0)
    out["ingest"] = ingest_dicom(engine, cohort, ids, model=model, embed_options=opts)
    out["ingest again"] = ingest_dicom(engine, cohort, ids, model=model, embed_options=opts)
    out["match"] = match_graph(engine, workers=1)
    out["mine"] = mine(engine, StudyVolumes(cohort, ids))
    proposals = proposal_review.list_proposals(engine)
    if proposals:
        out["accept proposal"] = proposal_review.accept(engine, proposals[0]["proposalId"], by="parity", at=AT)
    if len(proposals) > 1:
        out["reject proposal"] = proposal_review.reject(engine, proposals[-1]["proposalId"], by="parity",
                                                        reason="not a lesion", at=AT)
    possible = possible_review.list_possible(engine)
    if possible:
        out["accept possible"] = possible_review.accept_possible(engine, possible[0]["reviewId"], by="parity", at=AT)
    if len(possible) > 1:
        out["reject possible"] = possible_review.reject_possible(engine, possible[-1]["reviewId"], by="parity",
                                                                 reason="other lesion", at=AT)
    out["match again"] = match_graph(engine, workers=1)
    out["classify"] = services.predict_types(engine, k=5)
    out["cluster"] = services.cluster(engine, method="networkx")
    return {k: _plain(v) for k, v in out.items()}
