"""``lesiondb mine`` and ``lesiondb review …`` through click's CliRunner, on the test engine."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lesiondb.cli.common import AppContext
from lesiondb.cli.main import cli
from lesiondb.mining import DicomVolumes

_SCENE = Path(__file__).resolve().parent.parent / "mining" / "test_run.py"


def _scene():
    spec = importlib.util.spec_from_file_location("_mining_scene", _SCENE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def app_engine(engine, monkeypatch, tmp_path):
    """Every CLI command in the test talks to the fixture's engine; the scene's volumes are the images."""
    scene = _scene()
    engine.write("upsert_lesions", scene.ROWS)
    for lid, t in scene.TRACKS.items():  # stands in for `lesiondb match` (test setup only)
        engine._write("MATCH (l:Lesion {lesionId: $l}) MERGE (t:Track {trackingUid: $t}) "
                      "MERGE (l)-[:IN_TRACK]->(t)", {"l": lid, "t": t})
    monkeypatch.setattr(AppContext, "engine", lambda self: engine)
    monkeypatch.setattr(AppContext, "close", lambda self: None)
    monkeypatch.setattr(DicomVolumes, "__call__", lambda self, study: scene._loader(study))
    return engine


def _run(*args):
    res = CliRunner().invoke(cli, ["--no-progress", *args], catch_exceptions=False)
    return res


def test_mine_then_review_accept_reject_export(app_engine, tmp_path):
    r = _run("mine", "--json", "--no-embed")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["created"] == 1 and out["proposals"] == 1

    r = _run("review", "list", "--json")
    rows = json.loads(r.output)
    assert len(rows) == 1 and rows[0]["status"] == "pending"
    pid = rows[0]["proposalId"]

    r = _run("review", "list")  # human table
    assert pid in r.output and "pending" in r.output

    r = _run("review", "accept", pid, "--by", "dr.x", "--json")
    assert r.exit_code == 0, r.output
    acc = json.loads(r.output)
    assert acc["status"] == "accepted" and not acc["alreadyAccepted"]
    r2 = _run("review", "accept", pid, "--by", "dr.y", "--json")
    assert json.loads(r2.output)["lesionId"] == acc["lesionId"] and json.loads(r2.output)["alreadyAccepted"]

    r = _run("review", "reject", pid, "--by", "dr.z")
    assert r.exit_code != 0 and "accepted" in r.output

    out_csv = tmp_path / "p.csv"
    r = _run("review", "export", "--format", "csv", "-o", str(out_csv))
    assert r.exit_code == 0
    got = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [g["proposalId"] for g in got] == [pid]
    assert got[0]["status"] == "accepted" and got[0]["reviewedBy"] == "dr.x"
    assert len(got[0]["bboxPx"].split()) == 4

    r = _run("review", "export", "--format", "json", "--status", "pending")
    assert json.loads(r.output) == []


def test_reject_via_cli_and_unknown_id(app_engine):
    _run("mine", "--no-embed")
    pid = json.loads(_run("review", "list", "--json").output)[0]["proposalId"]
    r = _run("review", "reject", pid, "--by", "dr.x", "--reason", "vessel", "--json")
    assert json.loads(r.output)["status"] == "rejected"
    r = _run("review", "list", "--status", "rejected", "--json")
    row = json.loads(r.output)[0]
    assert row["rejectReason"] == "vessel" and row["reviewedBy"] == "dr.x"
    r = _run("review", "accept", "PR-doesnotexist")
    assert r.exit_code != 0 and "no proposal" in r.output


def test_mine_unknown_patient_says_what_to_do(app_engine):
    r = _run("mine", "--patient", "nobody")
    assert r.exit_code != 0 and "lesiondb match" in r.output


def test_possible_links_are_review_items_too(engine, monkeypatch):
    """`lesiondb review` lists, accepts and rejects matching's possible links (PS-…) through the
    same functions as the tracking library."""
    from lesiondb.tracking import list_possible, match_graph
    from tests.tracking.test_match import gap_cohort, ingest

    ingest(engine, gap_cohort())
    match_graph(engine, calibrate=False, workers=1)
    monkeypatch.setattr(AppContext, "engine", lambda self: engine)
    monkeypatch.setattr(AppContext, "close", lambda self: None)
    items = list_possible(engine, status="pending")
    assert items
    r = _run("review", "list", "--kind", "links", "--json")
    assert [x["reviewId"] for x in json.loads(r.output)] == [x["reviewId"] for x in items]
    assert items[0]["reviewId"] in _run("review", "list", "--kind", "links").output
    rid = items[0]["reviewId"]
    r = _run("review", "reject", rid, "--by", "dr.y", "--reason", "another lesion", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "rejected"
    assert list_possible(engine, review_id=rid)[0]["rejectReason"] == "another lesion"
    r = _run("review", "accept", rid)
    assert r.exit_code == 1 and "cannot be accepted" in r.output
