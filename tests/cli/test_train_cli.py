"""`lesiondb train` and `lesiondb eval embedding` through click's CliRunner, on a tiny synthetic cohort."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli

TINY = {"encoder": "resnet18_ms",
        "encoder_cfg": {"width": 8, "depths": [1, 1], "feature_stages": [0, 1], "roi_size": [2, 1],
                        "stage_dim": 16, "embed_dim": 16},
        "patch": {"size_px": 32, "spacing_mm": 2.0, "context_mm": 8.0},
        "batch_anchors": 8, "warmup_steps": 2, "num_threads": 1}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from lesiondb.synth.generate import generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "c"
    generate_cohort(root, 5, seed=5, image_size=128, workers=1)
    return root


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def _run(*args, ok=True):
        res = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "--no-progress", *args],
                            catch_exceptions=False)
        if ok:
            assert res.exit_code == 0, res.output
        return res

    return _run


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(TINY))
    return p


def _train(run, cohort, config, out, *extra):
    res = run("train", str(cohort), "--config", str(config), "--epochs", "2", "--seed", "7",
              "--deterministic", "--out", str(out), "--json", *extra)
    return json.loads(res.stdout)


def test_train_writes_model_card_and_resume_matches_uninterrupted(run, cohort, config, tmp_path, monkeypatch):
    import torch

    a = _train(run, cohort, config, tmp_path / "a")
    assert a["epochs"] == 2 and a["lesions"] > 10 and len(a["model_id"]) == 16
    for f in ("model.pt", "model_card.json", "MODEL_CARD.md", "checkpoint.pt"):
        assert (tmp_path / "a" / f).is_file(), f
    card = json.loads((tmp_path / "a" / "model_card.json").read_text())
    assert card["model_id"] == a["model_id"]
    assert card["config"]["seed"] == 7 and card["config"]["deterministic"] is True
    assert card["command"].startswith("lesiondb train ") and "--seed 7" in card["command"]
    assert card["data"]["train"]["seed"] == 5 and card["data"]["train"]["lesions"] == a["lesions"]

    # same command again: same weights
    assert _train(run, cohort, config, tmp_path / "a2")["model_id"] == a["model_id"]

    # interrupted run: Ctrl-C right after the first epoch's checkpoint is written
    import lesiondb.nn.train as tr

    real_save = tr._save_checkpoint

    def save_then_interrupt(*args, **kw):
        real_save(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "_save_checkpoint", save_then_interrupt)
    res = run("train", str(cohort), "--config", str(config), "--epochs", "2", "--seed", "7", "--deterministic",
              "--out", str(tmp_path / "b"), ok=False)
    assert res.exit_code == 1 and "Aborted" in res.output  # click's answer to Ctrl-C
    monkeypatch.setattr(tr, "_save_checkpoint", real_save)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "b" / "model.pt").exists()
    b = _train(run, cohort, config, tmp_path / "b", "--resume")
    assert b["resumed_from_epoch"] == 1 and b["epochs"] == 2
    assert b["model_id"] == a["model_id"]

    # resume with other settings is refused with a clear message
    res = run("train", str(cohort), "--config", str(config), "--epochs", "2", "--seed", "8", "--deterministic",
              "--out", str(tmp_path / "b"), "--resume", ok=False)
    assert res.exit_code == 1 and "seed" in res.output and "other settings" in res.output

    # eval embedding: the exact JSON keys, for the model and both baselines
    ev = json.loads(run("eval", "embedding", str(cohort), "--model", str(tmp_path / "a"), "--json").stdout)
    assert ev["model"]["model_id"] == a["model_id"]
    for block in (ev, ev["baselines"]["location_only"], ev["baselines"]["untrained"]):
        assert set(block["retrieval"]) == {"type_error_at_5", "location_error_at_5", "size_error_at_5"}
        assert set(block["clustering"]) == {"purity", "nmi"}
        assert 0.0 <= block["classification_accuracy"] <= 1.0
        assert all(0.0 <= v <= 1.0 for v in block["clustering"].values())
    assert set(ev["baselines"]) == {"location_only", "untrained"}
    assert set(ev["beats_baselines"]["untrained"]) == {
        "retrieval.type_error_at_5", "retrieval.location_error_at_5", "retrieval.size_error_at_5",
        "classification_accuracy", "clustering.purity", "clustering.nmi"}
    text = run("eval", "embedding", str(cohort), "--model", str(tmp_path / "a")).stdout
    assert "location_only" in text and "retrieval.type_error_at_5" in text


def test_bad_inputs_give_clear_errors(run, tmp_path, config, dl_info):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("train", str(empty), "--config", str(config), ok=False)
    assert res.exit_code == 1 and "annotations.csv not found" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochz": 2}')
    res = run("train", str(empty), "--config", str(bad), ok=False)
    assert res.exit_code == 1 and "epochz" in res.output
    res = run("eval", "embedding", str(dl_info), ok=False)
    assert res.exit_code == 1 and "--metadata-only" in res.output
    res = run("eval", "embedding", str(empty), "--model", str(tmp_path / "nope.pt"), ok=False)
    assert res.exit_code == 2  # click: path does not exist


def test_metadata_only_on_real_dl_info(run, dl_info, tmp_path):
    # val and test rows of a slice of the real file (keeps the test fast)
    import csv

    rows = list(csv.DictReader(open(dl_info)))
    keep = [r for r in rows if r["Train_Val_Test"] in ("2", "3")][:1500]
    p = tmp_path / "dl.csv"
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    out = json.loads(run("eval", "embedding", str(p), "--metadata-only", "--json").stdout)
    assert out["labelled_rows"] == sum(1 for r in keep if r["Coarse_lesion_type"] not in ("-1",))
    acc = out["accuracy"]
    assert set(acc) == {"val_to_test", "leave_one_out"}
    for setting in acc.values():
        assert set(setting) == {"location", "location_size"}
        # location says a lot about type in DeepLesion: far above the majority class
        assert setting["location"] > out["majority_class_accuracy"] + 0.2


def test_help():
    res = CliRunner().invoke(cli, ["train", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output and "--deterministic" in res.output
    res = CliRunner().invoke(cli, ["eval", "embedding", "--help"])
    assert res.exit_code == 0 and "--metadata-only" in res.output
