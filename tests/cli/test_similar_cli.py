"""CLI: ``embed``, ``similar`` (by id and by a new region), ``classify``, ``cluster`` through CliRunner."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from lesiondb.cli.main import cli


@pytest.fixture
def run(tmp_path):
    """The CLI on one data dir, its server shared between commands (`engine start`, as users do
    for a session of commands; a server per command costs seconds to stop)."""
    runner = CliRunner()

    def _run(*args, ok=True):
        res = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), *args], catch_exceptions=False)
        if ok:
            assert res.exit_code == 0, res.output
        return res

    _run("engine", "start")
    yield _run
    _run("engine", "stop")


@pytest.fixture
def embedded(run, image_cohort, tiny_model):
    run("ingest", "dicom", str(image_cohort), "--no-embed", "--keep-source-ids", "--json")  # tests find files by imageRef
    out = json.loads(run("embed", "--cohort", str(image_cohort), "--model", str(tiny_model), "-k", "3", "--json").output)
    lesions = json.loads(run("query", "lesions", "--json").output)
    return out["cohort"], lesions


def test_embed_then_similar_by_id(run, embedded):
    out, lesions = embedded
    n = len(lesions)
    assert out["embedded"] == n and out["similarEdgesWritten"] == 3 * n and out["vectorIndex"] == "created"
    stats = json.loads(run("stats", "--json").output)
    assert stats["relationships"]["SIMILAR_TO"] == 3 * n and stats["nodes"]["Model"] == 1
    lid = lesions[0]["lesionId"]
    rows = json.loads(run("similar", lid, "-k", "3", "--json").output)
    assert [r["rank"] for r in rows] == [1, 2, 3] and all(r["source"] == "edges" for r in rows)
    assert lid not in {r["lesionId"] for r in rows}
    assert rows == sorted(rows, key=lambda r: r["distance"])
    text = run("similar", lid, "-k", "2").output
    assert rows[0]["lesionId"] in text and "precomputed SIMILAR_TO edges" in text
    # filters: never the same patient, scanning when the stored edges do not suffice
    mine = lesions[0]["patientId"]
    rows = json.loads(run("similar", lid, "-k", "5", "--exclude-same-patient", "--json").output)
    assert rows and all(r["patientId"] != mine for r in rows)


def test_embed_again_is_a_no_op_and_k_rebuilds(run, embedded, image_cohort, tiny_model):
    out, lesions = embedded
    again = json.loads(run("embed", "--cohort", str(image_cohort), "--model", str(tiny_model), "-k", "3", "--json").output)
    assert again["cohort"]["embedded"] == 0 and again["cohort"]["similarEdgesWritten"] == 0
    edges = json.loads(run("embed", "-k", "4", "--json").output)["edges"]
    assert edges["k"] == 4 and edges["lesionsRewired"] == len(lesions)
    stats = json.loads(run("stats", "--json").output)
    assert stats["relationships"]["SIMILAR_TO"] == 4 * len(lesions)


def test_similar_by_a_new_dicom_region_finds_the_lesion(run, embedded, image_cohort, tiny_model):
    _, lesions = embedded
    les = lesions[0]["lesion"]
    dcm = image_cohort / les["imageRef"] / f"{les['keySliceIndex']:04d}.dcm"
    box = ",".join(str(v) for v in les["bboxPx"])
    out = json.loads(run("similar", "--image", str(dcm), "--box", box, "--model", str(tiny_model), "-k", "2",
                         "--json").output)
    assert out["query"]["kind"] == "dicom" and out["query"]["sliceIndex"] == les["keySliceIndex"]
    assert out["results"][0]["lesionId"] == lesions[0]["lesionId"] and out["results"][0]["distance"] < 1e-3
    exact = json.loads(run("similar", "--image", str(dcm), "--box", box, "--model", str(tiny_model), "-k", "2",
                           "--exact", "--json").output)
    assert exact["results"][0]["source"] == "scan" and exact["results"][0]["lesionId"] == lesions[0]["lesionId"]


def test_similar_says_what_is_wrong(run, embedded, image_cohort, tiny_model, tmp_path):
    _, lesions = embedded
    res = run("similar", "L-not-there", ok=False)
    assert res.exit_code == 1 and "no lesion 'L-not-there'" in res.output
    res = run("similar", ok=False)
    assert res.exit_code == 2 and "LESION_ID" in res.output
    res = run("similar", "--image", str(image_cohort / "annotations.csv"), ok=False)
    assert res.exit_code == 2 and "--box" in res.output
    res = run("similar", lesions[0]["lesionId"], "--type", "spleen", ok=False)
    assert res.exit_code == 1 and "unknown lesion type" in res.output
    res = run("similar", lesions[0]["lesionId"], "--box", "1,2,3,4", ok=False)
    assert res.exit_code == 2 and "go with --image" in res.output
    other = tmp_path / "other"
    import torch

    from lesiondb.imaging.patches import PatchSpec
    from lesiondb.nn.encoders import create_encoder
    from lesiondb.nn.model_io import save_model

    torch.manual_seed(1)
    save_model(create_encoder("resnet18_ms", width=8, embed_dim=32), other, patch=PatchSpec(size_px=48))
    les = lesions[0]["lesion"]
    dcm = image_cohort / les["imageRef"] / f"{les['keySliceIndex']:04d}.dcm"
    res = run("similar", "--image", str(dcm), "--box", "10,10,30,30", "--model", str(other), ok=False)
    assert res.exit_code == 1 and "pass --model with the graph's model" in res.output


def test_classify_and_cluster(run, embedded):
    _, lesions = embedded
    out = json.loads(run("classify", "-k", "3", "--json").output)
    labelled = sum(1 for r in lesions if r["lesion"].get("labelled"))
    assert out["unlabelled"] == len(lesions) - labelled
    assert out["written"] == out["predicted"] == len(out["predictions"])
    dry = json.loads(run("classify", "--dry-run", "--method", "edges", "--json").output)
    assert dry["written"] == 0
    cl = json.loads(run("cluster", "--seed", "2", "--json").output)
    assert cl["lesions"] == len(lesions) and cl["assigned"] == len(lesions)
    assert cl["method"] == "louvain-networkx"  # auto: the embedded engine has no GDS
    res = run("cluster", "--method", "gds", ok=False)
    assert res.exit_code != 0 and "Graph Data Science" in res.output and "--method networkx" in res.output
    shown = json.loads(run("cluster", "--show", "--json").output)
    assert sum(c["size"] for c in shown) == len(lesions)
    assert "cluster" in run("cluster", "--show").output
    first = shown[0]
    members = json.loads(run("cluster", "--members", first["clusterId"], "--json").output)
    assert len(members) == first["size"] and {m["lesionId"] for m in members} <= {r["lesionId"] for r in lesions}
    res = run("cluster", "--members", "C9999", ok=False)
    assert res.exit_code == 1 and "no cluster 'C9999'" in res.output


def test_similar_by_a_deeplesion_png(run, shared_data, dl_info, tiny_model, tmp_path):
    images = shared_data / "deeplesion_images" / "key_slices"
    have = {f"{p.parent.name}_{p.name}": p for p in images.glob("*/*.png")}
    with open(dl_info, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [r for r in rows[1:] if r[0] in have][:12]
    sub = tmp_path / "dl.csv"
    with open(sub, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *keep])
    run("ingest", "deeplesion", str(sub))
    out = json.loads(run("embed", "--images", str(images), "--dl-info", str(sub), "--model", str(tiny_model),
                         "-k", "3", "--json").output)["deeplesion"]
    assert out["embedded"] == 12
    r = dict(zip(rows[0], keep[0], strict=True))
    spacing = r["Spacing_mm_px_"].split(",")[0].strip()
    box = ",".join(v.strip() for v in r["Bounding_boxes"].split(","))
    res = json.loads(run("similar", "--image", str(have[r["File_name"]]), "--box", box, "--spacing", spacing,
                         "--model", str(tiny_model), "-k", "1", "--json").output)
    assert res["query"]["kind"] == "png" and "neighbour slices" in res["query"]["note"]
    assert res["results"][0]["distance"] < 1e-3


def test_ingest_deeplesion_with_images_embeds_on_the_way(run, shared_data, dl_info, tiny_model, tmp_path, monkeypatch):
    from lesiondb.ingest import records

    real = records.load_encoder
    monkeypatch.setattr(records, "load_encoder", lambda path=None: real(path or tiny_model))  # the "shipped" model
    images = shared_data / "deeplesion_images" / "key_slices"
    have = {f"{p.parent.name}_{p.name}" for p in images.glob("*/*.png")}
    with open(dl_info, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [r for r in rows[1:] if r[0] in have][:6] + [r for r in rows[1:] if r[0] not in have][:2]
    sub = tmp_path / "dl.csv"
    with open(sub, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *keep])
    out = json.loads(run("ingest", "deeplesion", str(sub), "--images", str(images), "--json").output)
    assert out["written"] == 8 and out["embedded"] == 6 and out["notEmbedded"] == 2
    assert out["similarEdgesWritten"] == 6 * 5  # k = 10 capped by the 5 other embedded lesions
    again = json.loads(run("ingest", "deeplesion", str(sub), "--images", str(images), "--json").output)
    assert again["written"] == 0 and again["embedded"] == 0 and again["similarEdgesWritten"] == 0
