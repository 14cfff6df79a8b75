"""``lesiondb synth``: a thin command over lesiondb.synth.generate.generate_cohort."""
from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from lesiondb.cli.main import cli


def _run(*args, tmp_path):
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "synth", *args])


def test_synth_json_summary_matches_files(tmp_path):
    out = tmp_path / "cohort"
    res = _run(str(out), "--patients", "2", "--seed", "5", "--json", tmp_path=tmp_path)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    for key in ("patients", "studies", "lesion_instances", "annotated", "withheld", "seconds", "out"):
        assert key in summary
    assert summary["patients"] == 2 and summary["out"] == str(out) and summary["images"] is True
    gt = json.loads((out / "ground_truth.json").read_text())
    rows = list(csv.DictReader(open(out / "annotations.csv")))
    assert summary["lesion_instances"] == len(gt["instances"])
    assert summary["annotated"] == len(rows) == sum(i["annotated"] for i in gt["instances"])
    assert summary["withheld"] == summary["lesion_instances"] - summary["annotated"]
    assert summary["studies"] == sum(len(p["studies"]) for p in gt["patients"])
    assert summary["slices"] == len(list(out.rglob("*.dcm"))) > 0


def test_synth_no_images_writes_no_dicom_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "c"
    res = _run(str(out), "-n", "3", "--no-images", tmp_path=tmp_path)
    assert res.exit_code == 0, res.output
    assert "lesion instances" in res.output
    assert not (out / "dicom").exists()
    assert (out / "annotations.csv").exists() and (out / "ground_truth.json").exists()
    before = (out / "ground_truth.json").read_bytes()
    res = _run(str(out), "-n", "3", "--no-images", tmp_path=tmp_path)
    assert res.exit_code != 0 and "--force" in res.output
    res = _run(str(out), "-n", "3", "--no-images", "--seed", "1", "--force", tmp_path=tmp_path)
    assert res.exit_code == 0 and (out / "ground_truth.json").read_bytes() != before


def test_synth_like_uses_the_files_patient_count(tmp_path, dl_info):
    small = tmp_path / "small.csv"
    lines = open(dl_info, encoding="utf-8-sig").read().splitlines()
    small.write_text("\n".join(lines[:41]) + "\n")
    n_patients = len({r["Patient_index"] for r in csv.DictReader(open(small))})
    res = _run(str(tmp_path / "like"), "--like", str(small), "--no-images", "--json", tmp_path=tmp_path)
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["patients"] == n_patients and s["lesion_instances"] == 40 and s["like"] == str(small)


def test_synth_bad_options(tmp_path):
    res = _run(str(tmp_path / "x"), "--like", str(tmp_path / "missing.csv"), tmp_path=tmp_path)
    assert res.exit_code == 2 and "missing.csv" in res.output
    res = _run(str(tmp_path / "x"), "--patients", "0", tmp_path=tmp_path)
    assert res.exit_code == 2
    res = _run(str(tmp_path / "x"), "--withhold", "0.6", "0.2", "--no-images", tmp_path=tmp_path)
    assert res.exit_code == 1 and "withhold" in res.output
