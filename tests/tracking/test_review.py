"""Review of POSSIBLE_SAME_LESION edges (lesiondb/tracking/review.py): list, accept (the candidate
joins the track), reject (recorded, and the pair stays apart), decisions kept by re-matching."""
from __future__ import annotations

import pytest

from lesiondb.errors import InputError
from lesiondb.tracking import match as tracking
from lesiondb.tracking import review
from tests.tracking.test_match import counts, gap_cohort, ingest, tracks_by_key


@pytest.fixture
def matched(engine):
    ingest(engine, gap_cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    return engine


def test_list_possible_filters_and_rejects_an_unknown_status(matched):
    (item,) = review.list_possible(matched)
    assert item["status"] == "pending" and item["patientId"] == "P-C"
    assert item["candidateLesionId"] == "L-C-2-1-a" and item["candidateStudyIndex"] == 2
    assert item["candidateTrackingUid"] != item["trackingUid"]
    assert review.list_possible(matched, status="accepted") == []
    assert review.list_possible(matched, patient="P-nobody") == []
    assert review.list_possible(matched, review_id=item["reviewId"]) == [item]
    with pytest.raises(InputError, match="unknown status"):
        review.list_possible(matched, status="maybe")


def test_accept_joins_the_track_and_rematch_keeps_it(matched):
    (item,) = review.list_possible(matched)
    out = review.accept_possible(matched, item["reviewId"], by="dr. who", params=tracking.M.MatchParams())
    assert out["status"] == "accepted" and not out["alreadyAccepted"]
    t = tracks_by_key(matched, "P-C")
    assert t["a@1"] == t["a@2"] == t["a@3"] == out["trackingUid"]
    rels = counts(matched)[1]
    assert rels["POSSIBLE_SAME_LESION"] == 1  # the decision stays, as the record of the review
    (kept,) = review.list_possible(matched, status="accepted")
    assert kept["reviewedBy"] == "dr. who" and kept["reviewedAt"]
    # a SAME_LESION edge now joins the pair, with probability 1 (a reviewer's decision)
    links = matched.run("patient_lesion_links", patientId="P-C")
    same = {(r["lesion"]["lesionId"], r["target"]["lesionId"]): r["rel"] for r in links if r["type"] == "SAME_LESION"}
    pair = [v for k, v in same.items() if set(k) == {item["memberLesionId"], item["candidateLesionId"]}]
    assert pair and pair[0]["probability"] == pytest.approx(1.0)
    # re-matching keeps the candidate in the track and the edge accepted
    rep = tracking.match_graph(matched, calibrate=False, workers=1)
    assert rep.tracks_written == 0 and rep.possible == 0
    assert tracks_by_key(matched, "P-C") == t
    assert review.accept_possible(matched, item["reviewId"], rematch=False)["alreadyAccepted"]
    with pytest.raises(InputError, match="accepted"):
        review.reject_possible(matched, item["reviewId"])


def test_reject_records_why_and_rematch_keeps_the_pair_apart(matched):
    (item,) = review.list_possible(matched)
    before = tracks_by_key(matched, "P-C")
    out = review.reject_possible(matched, item["reviewId"], by="dr. who", reason="a different lesion")
    assert out.to_json() == {"reviewId": item["reviewId"], "status": "rejected", "alreadyRejected": False}
    (rej,) = review.list_possible(matched, status="rejected")
    assert rej["rejectReason"] == "a different lesion" and rej["reviewedBy"] == "dr. who"
    assert review.reject_possible(matched, item["reviewId"], reason="again")["alreadyRejected"]
    assert review.list_possible(matched, status="rejected")[0]["rejectReason"] == "a different lesion"
    rep = tracking.match_graph(matched, calibrate=False, workers=1)
    assert rep.possible == 0 and tracks_by_key(matched, "P-C") == before
    assert counts(matched)[1]["POSSIBLE_SAME_LESION"] == 1  # kept as the record of the decision
    with pytest.raises(InputError, match="rejected"):
        review.accept_possible(matched, item["reviewId"])
    with pytest.raises(InputError, match="no POSSIBLE_SAME_LESION edge"):
        review.reject_possible(matched, "PS-nothing")


def test_a_rejection_is_a_cannot_link_even_where_the_scan_pair_links(engine):
    """A reviewer's rejection wins over the matcher: the two lesions never share a track again."""
    ingest(engine, gap_cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    data = next(tracking.read_patients(engine, ["P-C"]))
    ids = [les.lesion_id for les in data.lesions]
    a1, a3 = ids.index("L-C-1-1-a"), ids.index("L-C-3-1-a")
    pm = tracking.M.match_patient(data.lesions, tracking.M.MatchParams(), cannot_link=[(a1, a3)])
    assert pm.track_of()[a1] != pm.track_of()[a3]
    assert tracking.M.match_patient(data.lesions, tracking.M.MatchParams()).track_of()[a1] == \
        tracking.M.match_patient(data.lesions, tracking.M.MatchParams()).track_of()[a3]
