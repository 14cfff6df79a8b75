"""``lesiondb export sr`` and ``lesiondb ingest sr`` through click's CliRunner: thin commands over
the library, JSON without source identifiers, clear errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.common import AppContext
from lesiondb.cli.main import cli
from lesiondb.datasets import cohort as C
from tests.interop.helpers import KEY

pytest.importorskip("highdicom")


def _identifiers(root):
    gt = C.read_ground_truth(root)
    out = {p["patient_id"] for p in gt.patients}
    for s in gt.studies:
        out |= {s["study_uid"], s["series_uid"], s["study_date"], s["study_date"].replace("-", "")}
    return out


def _run(data, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--no-progress", *args], catch_exceptions=False)


def test_export_and_ingest_sr_commands(sr_source, engine, tmp_path, monkeypatch):
    current = {"engine": sr_source.engine}
    monkeypatch.setattr(AppContext, "engine", lambda self: current["engine"])
    monkeypatch.setattr(AppContext, "close", lambda self: None)
    key = ["--pseudonym-key", KEY.decode()]
    ids = _identifiers(sr_source.root)
    out = tmp_path / "sr"

    r = _run(tmp_path / "a", "export", "sr", str(out), "--images", str(sr_source.root), *key, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["reports"] == sr_source.result.reports and got["pendingProposals"] == 0
    assert sorted(p.name for p in out.iterdir()) == got["files"]
    assert not {i for i in ids if i in r.output}

    r = _run(tmp_path / "a", "export", "sr", str(out), "--images", str(sr_source.root), *key)
    assert r.exit_code == 1 and "--overwrite" in r.output and "Traceback" not in r.output
    r = _run(tmp_path / "a", "export", "sr", str(tmp_path / "x"), "--images", str(sr_source.root), "--patient", "P-0",
             *key)
    assert r.exit_code == 1 and "no patient 'P-0'" in r.output

    current["engine"] = engine  # a fresh graph, its own key
    r = _run(tmp_path / "b", "ingest", "sr", str(out), "--images", str(sr_source.root), "--no-embed", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["written"] == sr_source.result.lesions and got["rejected"] == 0 and got["trackingUidEdges"] > 0
    assert not {i for i in ids if i in r.output}
    r = _run(tmp_path / "b", "ingest", "sr", str(out), "--images", str(sr_source.root), "--no-embed")
    assert r.exit_code == 0 and "written 0" in r.output and f"unchanged {sr_source.result.lesions}" in r.output
    r = _run(tmp_path / "b", "match", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["tracks"] == len(
        {x["trackingUid"] for x in sr_source.engine.run("sr_export_lesions", patientId=None)})

    r = _run(tmp_path / "b", "ingest", "sr", str(out), "--images", str(tmp_path / "nowhere"))
    assert r.exit_code == 2 and "nowhere" in r.output


def test_export_is_a_group_of_formats():
    r = CliRunner().invoke(cli, ["export", "--help"])
    assert r.exit_code == 0 and "  sr " in r.output
    r = CliRunner().invoke(cli, ["ingest", "--help"])
    assert "  sr " in r.output
