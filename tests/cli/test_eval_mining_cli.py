"""``lesiondb eval mining COHORT`` on a tiny synthetic cohort written here."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from lesiondb.imaging.synth import generate_cohort

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
    # mining finds most withheld lesions of this small cohort, within a few mm
    assert d["recall"] >= 0.6 and d["precision"] >= 0.75
    assert d["median_error_mm"] <= 5.0
    assert d["seconds_per_candidate_study"] > 0
    curve = {c["threshold"]: c for c in d["curve"]}
    assert curve[0.05]["proposals"] >= curve[0.6]["proposals"]


def test_eval_mining_needs_ground_truth(tmp_path):
    r = CliRunner().invoke(cli, ["--no-progress", "eval", "mining", str(tmp_path), "--json"])
    assert r.exit_code != 0 and "ground_truth.json" in r.output
