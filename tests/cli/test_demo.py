"""``lesiondb demo`` through click's CliRunner on a temporary data dir."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli import cmd_demo
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


def test_steps_with_missing_modules_are_skipped():
    ran = []
    steps = [
        cmd_demo.Step("later", ("lesiondb.no_such_module_yet",), lambda run: ran.append("later") or {}),
        cmd_demo.Step("present", ("lesiondb.ingest.records",), lambda run: ran.append("present") or {"x": 1}),
    ]

    class App:
        data_dir = "/nonexistent-demo-dir"

        def client(self):
            class C:
                def stats(self):
                    return {"nodes": {}, "relationships": {}}
            return C()

    out = cmd_demo.run_demo(App(), 1, 0, steps=steps)
    assert ran == ["present"]
    assert out["steps"][0]["status"] == "skipped" and "lesiondb.no_such_module_yet" in out["steps"][0]["reason"]
    assert out["steps"][1]["status"] == "done" and out["steps"][1]["x"] == 1
    assert [s.name for s in cmd_demo.STEPS][:2] == ["synth", "ingest"]


def test_mine_step_scores_with_the_default_encoder(monkeypatch, tmp_path):
    """The demo's mine step hands `lesiondb mine`'s embedder (the default encoder) to mining."""
    from lesiondb.mining import run as mining

    sentinel = object()
    seen = {}
    monkeypatch.setattr(mining, "embedder_or_note", lambda: (sentinel, "model-x", None))

    def fake_mine(engine, loader, **kw):
        seen.update(kw)
        return {"patients": 0, "proposals": 0, "errors": []}

    monkeypatch.setattr(mining, "mine", fake_mine)

    class App:
        progress = False

        def engine(self):
            return "engine"

    out = cmd_demo._mine(cmd_demo.DemoRun(App(), 1, 0, tmp_path))
    assert seen["embedder"] is sentinel and seen["model_id"] == "model-x"
    assert out["modelId"] == "model-x" and "embedNote" not in out
    # without an encoder the step still mines, and says why it scored without embeddings
    monkeypatch.setattr(mining, "embedder_or_note", lambda: (None, None, "no encoder available"))
    out = cmd_demo._mine(cmd_demo.DemoRun(App(), 1, 0, tmp_path))
    assert seen["embedder"] is None and out["embedNote"] == "no encoder available" and out["modelId"] == "none"
