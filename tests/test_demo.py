"""lesiondb.demo: the demo's steps, each through the library function of its command."""
from __future__ import annotations

from lesiondb import demo
from lesiondb.workspace import Workspace


class _Engine:
    def run(self, name, **params):
        return []


def test_a_step_that_cannot_run_is_skipped_and_the_demo_goes_on(tmp_path):
    ran = []

    def cannot(run):
        ran.append("cannot")
        raise demo.StepSkipped("no encoder weights in this installation")

    steps = [demo.Step("later", cannot), demo.Step("present", lambda run: ran.append("present") or {"x": 1})]
    out = demo.run_demo(Workspace(tmp_path, _engine=_Engine()), 1, 0, steps=steps)
    assert ran == ["cannot", "present"]
    assert out["steps"][0] == {"name": "later", "status": "skipped", "reason": "no encoder weights in this installation"}
    assert out["steps"][1]["status"] == "done" and out["steps"][1]["x"] == 1
    assert [s.name for s in demo.STEPS] == ["synth", "ingest", "match", "mine"]


def test_mine_step_scores_with_the_default_encoder(monkeypatch, tmp_path):
    """The demo's mine step hands `lesiondb mine`'s embedder (the default encoder) to mining."""
    sentinel = object()
    seen = {}
    monkeypatch.setattr(demo, "load_embedder", lambda: (sentinel, "model-x", None))

    def fake_mine(engine, loader, **kw):
        seen.update(kw)
        from lesiondb.mining import MiningResult, MiningStats

        return MiningResult(MiningStats(), model_id=kw.get("model_id") or "none")

    monkeypatch.setattr(demo, "mine", fake_mine)
    ws = Workspace(tmp_path, _engine=_Engine())
    out = demo._mine(demo.DemoRun(ws, 1, 0, tmp_path))
    assert seen["embedder"] is sentinel and seen["model_id"] == "model-x"
    assert out["modelId"] == "model-x" and "embedNote" not in out
    # without an encoder the step still mines, and says why it scored without embeddings
    monkeypatch.setattr(demo, "load_embedder", lambda: (None, None, "no encoder available"))
    out = demo._mine(demo.DemoRun(ws, 1, 0, tmp_path))
    assert seen["embedder"] is None and out["embedNote"] == "no encoder available" and out["modelId"] == "none"
