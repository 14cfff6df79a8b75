"""``lesiondb demo`` through click's CliRunner on a temporary data dir."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("lesiondb.synth.generate")
    data = tmp_path_factory.mktemp("demo") / "data"
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", str(data), "demo", "--patients", "3", "--seed", "5", "--json"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return data, json.loads(res.output), runner


def test_demo_builds_the_graph_from_a_synthetic_cohort(demo):
    from lesiondb.datasets.cohort import read_ground_truth

    data, out, _ = demo
    gt = read_ground_truth(data / "demo")
    steps = {s["name"]: s for s in out["steps"]}
    assert steps["synth"]["status"] == "done" and steps["synth"]["patients"] == 3
    assert steps["ingest"]["status"] == "done" and steps["ingest"]["rejected"] == 0
    nodes = out["stats"]["nodes"]
    assert nodes["Patient"] == len(gt.patients) == 3
    assert nodes["Study"] == len(gt.studies)
    assert nodes["Lesion"] == len(gt.annotated()) == steps["ingest"]["written"]
    # ingest embeds: every lesion has an embedding and its SIMILAR_TO edges
    assert steps["ingest"]["embedded"] == nodes["Lesion"] == steps["ingest"]["totalEmbedded"]
    assert out["stats"]["relationships"]["SIMILAR_TO"] > 0
    assert out["nodesBefore"] == 0
    assert any("stats" in c for c in out["try"]) and any("lesiondb.connect" in c for c in out["try"])


def test_demo_rerun_is_idempotent_and_text_says_how_to_query(demo):
    data, out, runner = demo
    res = runner.invoke(cli, ["--data-dir", str(data), "demo", "--patients", "3", "--seed", "5"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = res.output
    assert f"{out['stats']['nodes']['Lesion']} unchanged" in text and "0 lesions written" in text
    assert f"lesiondb --data-dir {data} stats" in text and "note:" not in text
    # What the demo says is in the graph is what `lesiondb stats` sees.
    stats = json.loads(runner.invoke(cli, ["--data-dir", str(data), "stats", "--json"]).output)
    assert stats == out["stats"]
