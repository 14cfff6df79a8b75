"""lesiondb.web.pages: the page data functions on a synthetic cohort's graph."""
from __future__ import annotations

import pytest

from lesiondb.errors import InputError
from lesiondb.mining import list_proposals
from lesiondb.tracking import list_possible
from lesiondb.web import pages


def test_score_terms_are_parsed_from_the_proposal_text():
    assert pages.score_terms("position=0.69, size=0.01, hu=-0.5, x=1e-3") == [
        ("position", 0.69), ("size", 0.01), ("hu", -0.5), ("x", 0.001)]
    assert pages.score_terms({"a": 0.5, "b": "n/a"}) == [("a", 0.5)]
    assert pages.score_terms(None) == [] and pages.score_terms("garbage, =1") == []


def test_patients_overview_pages_through_the_patients(site):
    everyone = pages.patients_overview(site.engine)
    assert [p["patientId"] for p in everyone] == sorted(p["patientId"] for p in site.engine.run("patients"))
    assert pages.patients_overview(site.engine, skip=1, limit=1) == everyone[1:2]
    assert sum(p["pendingProposals"] for p in everyone) == len(list_proposals(site.engine, status="pending"))
    assert sum(p["pendingLinks"] for p in everyone) == len(list_possible(site.engine, status="pending"))
    assert all(isinstance(p["tracks"], int) for p in everyone)


def test_timeline_places_each_lesion_in_its_track_and_study(site):
    pid = max(site.engine.run("patients"), key=lambda p: p["studies"])["patientId"]
    t = pages.patient_timeline(site.engine, pid)
    assert [s["studyIndex"] for s in t["studies"]] == sorted(s["studyIndex"] for s in t["studies"])
    assert t["studies"][0]["studyDay"] == 0
    placed = {(uid, sid, le["lesionId"]) for uid, tr in ((x["trackingUid"], x) for x in t["tracks"])
              for sid, ls in tr["cells"].items() for le in ls}
    expected = {(r["trackingUid"], r["studyId"], r["lesionId"]) for r in site.engine.run("patient_tracks", patientId=pid)}
    assert placed == expected and t["untracked"] == {}
    for tr in t["tracks"]:
        assert tr["chart"].count("<circle") == len(tr["cells"])  # one mark per visit
    props = {(p["trackingUid"], p["studyId"]) for p in list_proposals(site.engine, status="pending", patient=pid)}
    assert {(tr["trackingUid"], sid) for tr in t["tracks"] for sid in tr["proposals"]} == props
    assert pages.patient_timeline(site.engine, "P-none") is None


def test_lesion_view_lists_only_the_shown_fields_and_its_neighbours(site):
    lid = site.engine.run("patient_timeline", patientId=site.engine.run("patients")[0]["patientId"])[0]["lesionId"]
    v = pages.lesion_view(site.engine, lid, k=3)
    labels = [label for label, _ in v["fields"]]
    assert "type" in labels and "long diameter" in labels
    assert not any("Hash" in value or "[" in value for _, value in v["fields"])  # no hashes, no raw lists
    assert len(v["similar"]) == 3 and v["similarNote"] is None
    assert [n["rank"] for n in v["similar"]] == [1, 2, 3]
    assert pages.lesion_view(site.engine, "L-none") is None


def test_lesion_view_says_why_there_are_no_similar_lesions(pristine):
    lid = pristine.run("patient_timeline", patientId=pristine.run("patients")[0]["patientId"])[0]["lesionId"]
    v = pages.lesion_view(pristine, lid)
    assert v["similar"] == [] and "no embedding" in v["similarNote"]


def test_review_queue_limits_each_kind_but_counts_all(site):
    q = pages.review_queue(site.engine, limit=2)
    n = len(list_proposals(site.engine, status="pending"))
    assert len(q["proposals"]) == min(2, n) and q["pendingProposals"] == n
    assert q["pendingLinks"] == len(list_possible(site.engine, status="pending")) == len(q["links"])
    for it in q["proposals"]:
        assert it["members"] and it["studyIndex"] is not None and it["terms"]
        assert all(m["studyIndex"] is not None for m in it["members"])


def test_decide_refuses_unknown_kinds_actions_and_items(pristine):
    with pytest.raises(InputError):
        pages.decide(pristine, "lesion", "L-1", "accept")
    with pytest.raises(InputError):
        pages.decide(pristine, "proposal", "PR-1", "approve")
    with pytest.raises(InputError, match="no proposal"):
        pages.decide(pristine, "proposal", "PR-none", "accept")
    with pytest.raises(InputError):
        pages.decide(pristine, "link", "PS-none", "reject")
