"""Lesion tracking on the graph (lesiondb/tracking.py): edges, tracks, idempotency, re-matching,
the Browser queries and Client.tracks — on every configured engine."""
from __future__ import annotations

import pytest

from lesiondb.client import Client
from lesiondb.core import matching as M
from lesiondb.core.records import Annotated, Lesion, Patient, Study
from lesiondb.ingest.records import IngestReport, write_annotated
from lesiondb.tracking import match as tracking

SPACING = 0.8


def lesion(pid: str, study: int, key: str, loc, long_mm: float, type_code: int = 4, series: int = 1) -> Annotated:
    """A DeepLesion-like lesion record; ids readable for the test. Its box lies where its location
    says (DeepLesion's normalised units span ≈ 370 mm in-plane)."""
    sid = f"S-{pid}-{study}"
    long_px = long_mm / SPACING
    x0, y0 = loc[0] * 370.0 / SPACING - long_px / 2, loc[1] * 370.0 / SPACING - 5.0
    return Annotated(
        patient=Patient(f"P-{pid}", sex="F"),
        study=Study(sid, f"P-{pid}", study),
        lesion=Lesion(
            lesion_id=f"L-{pid}-{study}-{series}-{key}", study_id=sid, patient_id=f"P-{pid}", series_index=series,
            key_slice_index=10, recist_long_px=(0.0, 0.0, long_px, 0.0), recist_short_px=(0.0, 0.0, 0.0, 1.0),
            bbox_px=(x0, y0, x0 + long_px, y0 + 10.0), long_diameter_px=long_px, short_diameter_px=5.0,
            spacing_mm=(SPACING, SPACING), slice_interval_mm=5.0, location=tuple(loc), type_code=type_code,
        ),
    )


def cohort(shift=(0.02, -0.015, 0.004)):
    """Patient A: three lesions over three studies, the later studies shifted; lesion 'grow' grows
    from 10 to 20 mm (progressing), 'shrink' responds, 'gone' is not seen at study 3, 'new'
    appears at study 2. Patient B: one study, one lesion."""
    dx, dy, dz = shift
    out = []
    for st, k in ((1, 0), (2, 1), (3, 2)):
        s = (dx * k, dy * k, dz * k)
        out.append(lesion("A", st, "grow", (0.30 + s[0], 0.50 + s[1], 0.60 + s[2]), (10.0, 14.0, 20.0)[k]))
        out.append(lesion("A", st, "shrink", (0.36 + s[0], 0.52 + s[1], 0.61 + s[2]), (30.0, 24.0, 19.0)[k]))
        if st < 3:
            out.append(lesion("A", st, "gone", (0.65 + s[0], 0.40 + s[1], 0.45 + s[2]), 15.0, type_code=5))
        if st > 1:
            out.append(lesion("A", st, "new", (0.55 + s[0], 0.70 + s[1], 0.75 + s[2]), 12.0, type_code=8))
    out.append(lesion("B", 1, "only", (0.5, 0.5, 0.5), 25.0))
    return out


def ingest(engine, items):
    write_annotated(engine, items, IngestReport(source="test"))


def counts(engine):
    rels = {r["type"]: int(r["count"]) for r in engine.run("count_relationships")}
    nodes = {r["label"]: int(r["count"]) for r in engine.run("count_nodes")}
    return nodes, rels


def tracks_by_key(engine, pid="P-A"):
    """{lesion key: trackingUid} of a patient, from the Browser timeline query."""
    return {r["lesionId"].split("-", 4)[-1] + "@" + str(r["studyIndex"]): r["trackingUid"]
            for r in engine.run("patient_timeline", patientId=pid)}


def test_match_writes_tracks_edges_and_recist_status(engine):
    ingest(engine, cohort())
    rep = tracking.match_graph(engine, calibrate=False, workers=1)
    assert rep.patients == 2 and rep.lesions == 11 and not rep.skipped
    nodes, rels = counts(engine)
    # grow (3), shrink (3), gone (2), new (2), only (1): 5 tracks, 3 + 3 + 1 + 1 = 8 edges
    assert nodes["Track"] == 5 and rels["IN_TRACK"] == 11 and rels["SAME_LESION"] == 8
    assert rep.tracks == 5 and rep.edges == 8 and rep.tracks_written == 5 and rep.edges_written == 8
    assert rep.statuses == {"progressing": 1, "responding": 1, "disappeared": 1, "new": 1, "baseline": 1}

    t = tracks_by_key(engine)
    for key in ("grow", "shrink"):
        assert t[f"{key}@1"] == t[f"{key}@2"] == t[f"{key}@3"]
    assert t["gone@1"] == t["gone@2"] and t["new@2"] == t["new@3"]
    assert len({t["grow@1"], t["shrink@1"], t["gone@1"], t["new@2"]}) == 4
    assert all(uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit() for uid in t.values())

    prog = engine.run("progressing_lesions", patientId=None, limit=10)
    assert [r["lesionId"] for r in prog] == ["L-A-3-1-grow"]
    assert prog[0]["nadirMm"] == pytest.approx(10.0) and prog[0]["lastMm"] == pytest.approx(20.0)
    assert prog[0]["changeFromNadirPct"] == pytest.approx(100.0) and prog[0]["studyIndex"] == 3
    assert engine.run("progressing_lesions", patientId="P-B", limit=10) == []

    rows = engine.run("lesion_track", lesionId="L-A-1-1-shrink")
    assert [r["studyIndex"] for r in rows] == [1, 2, 3]
    assert [r["response"] for r in rows] == ["baseline", "stable", "responding"]
    assert rows[0]["sameLesionCost"] is None and rows[1]["sameLesionCost"] is not None
    assert all(r["status"] == "responding" for r in rows)
    assert 0 < rows[2]["sameLesionConfidence"] <= 1


def test_edges_go_from_earlier_to_later_and_one_lesion_per_scan(engine):
    ingest(engine, cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    data = {d.patient_id: d for d in tracking.read_patients(engine, ["P-A", "P-B"])}
    study_of = {p["lesionId"]: p["studyIndex"] for d in data.values() for p in d.props}
    client = Client(engine, owns_engine=False)
    df = client.tracks("P-A")
    assert len(df) == 10 and df["trackingUid"].nunique() == 4
    for _uid, g in df.groupby("trackingUid"):
        assert g["studyIndex"].is_unique  # never two lesions of one study (one series each here)
    grow = df[df["lesionId"].str.endswith("grow")]
    assert list(grow["response"]) == ["baseline", "stable", "progressing"]
    assert set(grow["status"]) == {"progressing"}
    # every SAME_LESION edge: earlier → later study, both ends in one track
    uid = dict(zip(df["lesionId"], df["trackingUid"], strict=True))
    for r in engine.run("patient_lesion_links", patientId="P-A"):
        if r["type"] == "SAME_LESION":
            src, dst = r["lesion"]["lesionId"], r["target"]["lesionId"]
            assert study_of[src] < study_of[dst] and uid[src] == uid[dst]
            assert r["rel"]["method"] in ("assigned", "track")
    assert client.tracks("P-nobody").empty


def test_match_patient_edges_lists_each_same_lesion_edge_under_its_patient(engine):
    ingest(engine, cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    links = {(r["lesion"]["lesionId"], r["target"]["lesionId"]): r["rel"]
             for r in engine.run("patient_lesion_links", patientId="P-A") if r["type"] == "SAME_LESION"}
    rows = engine.run("match_patient_edges", patientIds=["P-A", "P-B", "P-nobody"])
    assert len(links) == 8 and len(rows) == 8  # patient B has a single lesion: no edge
    assert {r["patientId"] for r in rows} == {"P-A"}
    assert {(r["src"], r["dst"]): (r["cost"], r["confidence"], r["method"]) for r in rows} == {
        k: (v["cost"], v["confidence"], v["method"]) for k, v in links.items()}
    assert all(isinstance(r["cost"], float) and 0 < r["confidence"] <= 1 for r in rows)
    assert engine.run("match_patient_edges", patientIds=["P-B"]) == []


def test_rerun_changes_nothing_and_uids_are_stable(engine):
    ingest(engine, cohort())
    first = tracking.match_graph(engine, calibrate=False, workers=1)
    before = counts(engine), tracks_by_key(engine)
    again = tracking.match_graph(engine, calibrate=False, workers=1)
    assert again.tracks_written == 0 and again.edges_written == 0
    assert again.edges_deleted == 0 and again.links_deleted == 0 and again.tracks_deleted == 0
    assert (counts(engine), tracks_by_key(engine)) == before
    assert again.tracks == first.tracks and again.statuses == first.statuses
    # one patient alone is matched as in the full run
    one = tracking.match_graph(engine, patient="P-A", calibrate=False, workers=1)
    assert one.patients == 1 and one.tracks_written == 0
    # the UID depends on the members only
    assert tracking.tracking_uid(["b", "a"]) == tracking.tracking_uid(["a", "b"]) != tracking.tracking_uid(["a"])


def test_rematch_replaces_stale_edges_and_tracks(engine):
    ingest(engine, cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    old = tracks_by_key(engine)
    # the study-3 'grow' lesion was mis-annotated: it is really far away (another lesion)
    moved = lesion("A", 3, "grow", (0.90, 0.10, 0.20), 20.0)
    ingest(engine, [moved])
    rep = tracking.match_graph(engine, calibrate=False, workers=1)
    new = tracks_by_key(engine)
    assert new["grow@1"] == new["grow@2"] != new["grow@3"]
    assert new["grow@1"] != old["grow@1"]  # its member set changed, so did its UID
    assert new["shrink@1"] == old["shrink@1"]  # untouched tracks keep theirs
    # the two 'grow' tracks are new; tracks of study-3 lesions get new edge costs (the 1–3 and 2–3
    # alignments moved) and are rewritten; nothing else
    assert 2 <= rep.tracks_written <= 4 and rep.links_deleted == 3 and rep.tracks_deleted == 1
    assert rep.edges_deleted == 2  # grow@1 → grow@3 and grow@2 → grow@3
    nodes, rels = counts(engine)
    assert nodes["Track"] == 6 and rels["IN_TRACK"] == 11 and rels["SAME_LESION"] == 6
    assert tracking.match_graph(engine, calibrate=False, workers=1).tracks_written == 0


def test_retired_track_keeps_its_proposal(engine):
    ingest(engine, cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    uid = tracks_by_key(engine)["gone@1"]
    engine.write("upsert_proposals", [{"proposalId": "PR-test", "studyId": "S-A-3", "trackingUid": uid,
                                       "createdAt": "2026-01-01T00:00:00Z", "props": {"score": 0.5}}])
    # the 'gone' lesion of study 2 disappears from the annotations: its track changes members
    engine._write("MATCH (l:Lesion {lesionId: 'L-A-2-1-gone'}) DETACH DELETE l", {})  # test setup only
    rep = tracking.match_graph(engine, calibrate=False, workers=1)
    assert rep.tracks_deleted == 0 and rep.tracks_retired == 1  # a proposal points at it: retired
    rows = engine.run("proposals", status=None, patientId=None, proposalId=None, limit=10)
    assert [r["trackingUid"] for r in rows] == [uid]
    statuses = {r["trackingUid"]: r["trackStatus"] for r in engine.run("patient_timeline", patientId="P-A")}
    assert uid not in statuses  # no lesion is in it any more
    assert engine._read("MATCH (t:Track {trackingUid: $u}) RETURN t.status AS s", {"u": uid}) == [{"s": "retired"}]
    again = tracking.match_graph(engine, calibrate=False, workers=1)
    assert again.tracks_written == 0 and again.tracks_deleted == 0


def test_a_failing_patient_is_reported_and_the_others_written(engine, monkeypatch):
    ingest(engine, cohort())
    real = tracking.plan_patient

    def flaky(data, params, *rest):
        if data.patient_id == "P-B":
            raise RuntimeError("boom")
        return real(data, params, *rest)

    monkeypatch.setattr(tracking, "plan_patient", flaky)
    rep = tracking.match_graph(engine, calibrate=False, workers=1)
    assert rep.skipped == [{"patientId": "P-B", "reason": "RuntimeError: boom"}]
    assert rep.patients == 1 and counts(engine)[1]["IN_TRACK"] == 10


def test_unknown_patient_is_an_input_error(engine):
    from lesiondb.errors import InputError

    ingest(engine, cohort())
    with pytest.raises(InputError, match="lesiondb query patients"):
        tracking.match_graph(engine, patient="P-nobody", calibrate=False)


def test_calibrated_run_and_empty_graph(engine):
    assert tracking.match_graph(engine).patients == 0
    ingest(engine, cohort())
    rep = tracking.match_graph(engine, calibrate=True, workers=1)
    assert rep.calibration is not None and rep.tracks == 5
    assert set(rep.calibration) == {"pairs", "scanPairs", "measured", "params"}


def gap_cohort():
    """Patient C: lesion 'a' at the same place in studies 1 and 3; in study 2 a lesion of
    another type, three times the size, 37 mm and 22 mm away — gated out of a's track, but
    plausible (POSSIBLE_SAME_LESION); lesion 'b' is unambiguous in all three studies."""
    out = []
    for st in (1, 2, 3):
        if st == 2:
            out.append(lesion("C", st, "a", (0.40, 0.5, 0.62), 60.0, type_code=5))
        else:
            out.append(lesion("C", st, "a", (0.30, 0.5, 0.60), 20.0, type_code=4))
        out.append(lesion("C", st, "b", (0.60, 0.4, 0.40), 15.0, type_code=5))
    return out


def test_possible_edges_are_written_counted_and_idempotent(engine):
    ingest(engine, gap_cohort())
    rep = tracking.match_graph(engine, calibrate=False, workers=1)
    _nodes, rels = counts(engine)
    assert rep.possible == rels["POSSIBLE_SAME_LESION"] == rep.possible_written == 1
    assert rep.to_dict()["possibleSameLesionEdges"] == 1
    t = tracks_by_key(engine, "P-C")
    assert t["a@1"] == t["a@3"] != t["a@2"]  # the gap: study 2's lesion is not in a's track
    (edge,) = [r for r in engine.run("patient_lesion_links", patientId="P-C") if r["type"] == "POSSIBLE_SAME_LESION"]
    assert edge["target"]["lesionId"] == "L-C-2-1-a" and edge["lesion"]["lesionId"] in ("L-C-1-1-a", "L-C-3-1-a")
    rel = edge["rel"]
    assert rel["status"] == "pending" and rel["reviewId"].startswith("PS-") and rel["trackingUid"] == t["a@1"]
    # what the evaluations read of it, on this engine
    (row,) = engine.run("match_patient_possible", patientIds=["P-C"])
    assert (row["src"], row["dst"], row["trackingUid"]) == (edge["lesion"]["lesionId"], "L-C-2-1-a", t["a@1"])
    assert row["probability"] == pytest.approx(rel["probability"]) and row["status"] == "pending"
    # its probability is the track's pooled one, below the link threshold and above the POSSIBLE one
    data = next(tracking.read_patients(engine, ["P-C"]))
    pm = M.match_patient(data.lesions, M.MatchParams())
    assert len(pm.possible) == 1 and rel["probability"] == pytest.approx(pm.possible[0].probability, abs=1e-4)
    assert M.MatchParams().possible_probability <= rel["probability"] < M.MatchParams().link_probability
    # every SAME_LESION edge has a probability in (0, 1]
    same = [r["rel"] for r in engine.run("patient_lesion_links", patientId="P-C") if r["type"] == "SAME_LESION"]
    assert same and all(0.0 < r["probability"] <= 1.0 for r in same)
    again = tracking.match_graph(engine, calibrate=False, workers=1)
    assert again.possible_written == 0 and again.possible_deleted == 0 and again.tracks_written == 0
    assert counts(engine)[1]["POSSIBLE_SAME_LESION"] == 1
    # Client.tracks shows it as a 'possible' row of a's track
    df = Client(engine, owns_engine=False).tracks("P-C")
    poss = df[df["membership"] == "possible"]
    assert list(poss["lesionId"]) == ["L-C-2-1-a"] and list(poss["trackingUid"]) == [t["a@1"]]
    assert poss["probability"].iloc[0] == pytest.approx(rel["probability"])
    assert len(df[df["membership"] == "member"]) == 6
    assert len(Client(engine, owns_engine=False).tracks("P-C", possible=False)) == 6


def test_rematch_removes_a_stale_possible_edge(engine):
    ingest(engine, gap_cohort())
    tracking.match_graph(engine, calibrate=False, workers=1)
    # the study-2 lesion is re-annotated where the track expects it: it joins, the POSSIBLE edge goes
    ingest(engine, [lesion("C", 2, "a", (0.30, 0.5, 0.60), 21.0, type_code=4)])
    rep = tracking.match_graph(engine, calibrate=False, workers=1)
    assert rep.possible == 0 and rep.possible_deleted == 1
    assert "POSSIBLE_SAME_LESION" not in counts(engine)[1]
    t = tracks_by_key(engine, "P-C")
    assert t["a@1"] == t["a@2"] == t["a@3"]


def test_a_shared_tracking_uid_is_a_must_link_and_names_the_track(engine):
    """Lesions a DICOM SR gave one Tracking Unique Identifier (sourceTrackingUid) end in one track
    even when far apart, that track takes the UID, their SAME_LESION edge keeps the method
    'tracking-uid', and a re-run changes nothing; a UID on lesions of one scan links nothing."""
    from dataclasses import replace

    uid = "2.25.12345678901234567890"
    items = [lesion("C", 1, "x", (0.20, 0.30, 0.20), 20.0), lesion("C", 2, "x", (0.80, 0.75, 0.85), 21.0),
             lesion("C", 2, "y", (0.21, 0.30, 0.20), 20.0)]
    items = [replace(a, lesion=replace(a.lesion, source_tracking_uid=uid)) if a.lesion.lesion_id.endswith("-x")
             else a for a in items]
    ingest(engine, items)
    tracking.match_graph(engine, calibrate=False, workers=1)
    t = tracks_by_key(engine, "P-C")
    assert t["x@1"] == t["x@2"] == uid  # far apart, yet one track: the must-link
    assert t["y@2"] != uid  # 'y' sits where x@1 was: without the UID it would have matched x@1
    edges = engine.run("match_patient_edges", patientIds=["P-C"])
    assert [(e["src"], e["dst"], e["method"]) for e in edges] == [("L-C-1-1-x", "L-C-2-1-x", "tracking-uid")]
    again = tracking.match_graph(engine, calibrate=False, workers=1)
    assert again.tracks_written == 0 and again.edges_written == 0

    # one UID on two lesions of one scan: no must-link between them, the UID names one track only
    data = tracking.patients_from_rows([{"row": f"P-D|S-D-1|1||L-D-{k}|dicom|1|R-1|0.{k}|0.5|0.5||||10|5|4|{uid}"}
                                        for k in (1, 2)])[0]
    assert tracking.must_links(data) == []
    plan = tracking.plan_patient(data, M.MatchParams())
    assert [r["track"]["trackingUid"] == uid for r in plan.tracks].count(True) == 1


def test_bookmarks_of_one_lesion_share_its_track_unless_an_sr_names_them_apart(engine):
    """Two annotations of one series 4 mm apart (each centre inside the other lesion) are one
    lesion bookmarked twice: one track, each linked to the follow-up; placed in the scan by box
    centre × spacing and key slice × slice interval. Different Tracking UIDs keep them apart."""
    items = [lesion("E", 1, "a", (0.5, 0.5, 0.5), 20.0), lesion("E", 1, "b", (0.5 + 4 / 370, 0.5, 0.5), 18.0),
             lesion("E", 2, "c", (0.5, 0.5, 0.5), 21.0)]
    ingest(engine, items)
    (data,) = tracking.read_patients(engine, ["P-E"])
    obs = {o.lesion_id: o for o in data.lesions}
    box = items[0].lesion.bbox_px
    assert obs["L-E-1-1-a"].scan_position_mm == pytest.approx(
        ((box[0] + box[2]) / 2 * SPACING, (box[1] + box[3]) / 2 * SPACING, 10 * 5.0), abs=1e-5)
    tracking.match_graph(engine, calibrate=False, workers=1)
    t = tracks_by_key(engine, "P-E")
    assert t["a@1"] == t["b@1"] == t["c@2"]
    edges = {(e["src"], e["dst"]) for e in engine.run("match_patient_edges", patientIds=["P-E"])}
    assert edges == {("L-E-1-1-a", "L-E-2-1-c"), ("L-E-1-1-b", "L-E-2-1-c")}

    # the same two annotations from a DICOM SR that gave them different Tracking UIDs
    (data,) = tracking.read_patients(engine, ["P-E"])
    at = {p["lesionId"]: k for k, p in enumerate(data.props)}
    a, b = at["L-E-1-1-a"], at["L-E-1-1-b"]
    data.props[a]["sourceTrackingUid"], data.props[b]["sourceTrackingUid"] = "2.25.1", "2.25.2"
    assert (min(a, b), max(a, b)) in tracking.cannot_links(data)
    plan = tracking.plan_patient(data, M.MatchParams())
    assert not any({"L-E-1-1-a", "L-E-1-1-b"} <= {m["lesionId"] for m in r["members"]} for r in plan.tracks)


def test_matching_reads_the_same_numbers_from_either_engine(engine):
    """The features travel as the engine's toString(): FalkorDB's has 6 decimals, Neo4j's every
    digit; matching reads both at 6, so a lesion stored with more digits matches alike."""
    import dataclasses

    item = lesion("C", 1, "fine", (0.1234567891, 0.5000004999, 0.7654321987), 12.3456789)
    item = dataclasses.replace(item, lesion=dataclasses.replace(item.lesion, position_mm=(12.3456789012, -0.0000015, 3.0)))
    ingest(engine, [item])
    (data,) = tracking.read_patients(engine, ["P-C"])
    (obs,) = data.lesions
    assert obs.location == (0.123457, 0.5, 0.765432)
    assert obs.position_mm == (12.345679, -0.000002, 3.0)
    assert obs.long_diameter_mm == round(item.lesion.long_diameter_mm, 4)
