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


def test_demo_then_serve_shows_its_patients_timelines_and_proposals_with_real_crops(demo, monkeypatch):
    """`lesiondb demo` then `lesiondb serve` (no --images: the demo's cohort), uvicorn replaced by
    a test client on the app the command built."""
    import re
    from html import unescape

    from starlette.testclient import TestClient

    import lesiondb.web

    data, out, runner = demo
    assert any(c.endswith("serve        # the review queue and patient timelines in your browser")
               and c.startswith(f"lesiondb --data-dir {data} serve") for c in out["try"])
    seen = {}

    def browse(app, host, port, **kw):
        with TestClient(app, base_url=f"http://{host}") as c:
            index = c.get("/").text
            seen["patients"] = re.findall(r'<a href="/patients/(P-[0-9a-f]+)', index)
            seen["timeline"] = c.get(f"/patients/{seen['patients'][0]}").text
            queue = c.get("/proposals").text
            seen["proposals"] = queue.count('data-kind="proposal"')
            urls = [unescape(u) for u in re.findall(r'<img src="(/crops/[^"]+)"', queue + seen["timeline"])]
            seen["crops"] = {c.get(u).headers["x-lesiondb-crop"] for u in urls}

    monkeypatch.setattr(lesiondb.web, "serve", browse)
    res = runner.invoke(cli, ["--data-dir", str(data), "--no-progress", "serve"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "the demo cohort" in res.stderr
    assert len(seen["patients"]) == out["stats"]["nodes"]["Patient"]
    assert "study #1" in seen["timeline"] and '<svg class="chart"' in seen["timeline"]
    assert seen["proposals"] == out["stats"]["nodes"].get("Proposal", 0) > 0
    assert seen["crops"] == {"image"}
