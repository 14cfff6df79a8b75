"""``lesiondb eval mining COHORT`` on a tiny synthetic cohort written here."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from lesiondb.synth.generate import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "c"
    generate_cohort(out, 4, seed=3, workers=1)
    return out


def test_eval_mining_json(cohort):
    r = CliRunner().invoke(cli, ["--no-progress", "eval", "mining", str(cohort), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    gt = json.loads((cohort / "ground_truth.json").read_text())
    assert d["withheld"] == sum(1 for i in gt["instances"] if not i["annotated"])
    assert 0 < d["withheldMinable"] <= d["withheld"]
    assert d["recall"] == d["correct"] / d["withheldMinable"]
    assert d["precision"] == d["correct"] / d["proposals"]
    # on the lesion (radius or extent) is more lenient than the radius alone, never stricter
    assert d["recall_radius_only"] <= d["recall"] and d["precision_radius_only"] <= d["precision"]
    # mining finds most withheld lesions of this small cohort, within a few mm
    assert d["recall"] >= 0.6 and d["precision"] >= 0.75
    assert d["median_error_mm"] <= 5.0
    assert d["seconds_per_candidate_study"] > 0
    curve = {c["threshold"]: c for c in d["curve"]}
    assert curve[0.05]["proposals"] >= curve[0.6]["proposals"]


def test_eval_mining_needs_ground_truth(tmp_path):
    r = CliRunner().invoke(cli, ["--no-progress", "eval", "mining", str(tmp_path), "--json"])
    assert r.exit_code != 0 and "ground_truth.json" in r.output


def test_eval_mining_on_matched_tracks(cohort, engine, monkeypatch):
    """--tracks matched: the annotated lesions matched as `lesiondb match` does (scratch graph), then mined."""
    from lesiondb.cli.common import AppContext

    monkeypatch.setattr(AppContext, "engine", lambda self: engine)
    monkeypatch.setattr(AppContext, "close", lambda self: None)
    r = CliRunner().invoke(cli, ["--no-progress", "eval", "mining", str(cohort), "--tracks", "matched", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    gt = json.loads((cohort / "ground_truth.json").read_text())
    annotated = sum(1 for i in gt["instances"] if i["annotated"])
    assert d["tracks"].startswith("matched")
    assert d["matching"]["ingested"] == annotated and d["matching"]["matchedTracks"] >= 1
    assert d["withheld"] == sum(1 for i in gt["instances"] if not i["annotated"])
    assert 0 < d["withheldMinable"] <= d["withheld"]
    # each withheld lesion counts once in recall, each proposal once in precision
    assert d["correct"] <= d["proposals"] and d["precision"] == d["correct"] / d["proposals"]
    assert d["recall"] * d["withheldMinable"] <= d["correct"] + 1e-9
    assert d["recall"] >= 0.6 and d["precision"] >= 0.75 and d["median_error_mm"] <= 5.0
    # the user's graph is untouched: matching ran in a scratch graph
    assert engine.run("count_nodes") == []
