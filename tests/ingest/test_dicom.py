"""DICOM cohort ingest: counts, positions, idempotence, bad input, and the CLI."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from lesiondb.client import Client
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.ingest import ingest_dicom
from tests.ct_factory import mini_cohort

IDS = Pseudonymizer(b"t" * 32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    info = mini_cohort(root, n_patients=2, studies_per_patient=2)
    return root, info


def _lesions(engine):
    df = Client(engine, owns_engine=False).lesions()
    return {r["annotationId"]: r for r in df.to_dict("records")}


def _files_of(root, series):
    return sorted((root / series["series_dir"]).iterdir())


def _slice_file(root, series, index):
    import pydicom

    for f in _files_of(root, series):
        if int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) == index + 1:
            return f
    raise AssertionError(index)


def test_counts_positions_and_locations(engine, cohort):
    root, info = cohort
    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    assert rep.rejected == [] and rep.written == len(info["rows"]) == 8
    stats = Client(engine, owns_engine=False).stats()
    assert stats["nodes"] == {"Patient": 2, "Study": 4, "Lesion": 8}
    assert stats["relationships"] == {"HAS_STUDY": 4, "HAS_LESION": 8}
    got = _lesions(engine)
    for t in info["truth"]:
        les = got[t["annotation_id"]]
        pos = np.array([les["positionXMm"], les["positionYMm"], les["positionZMm"]])
        # Within one voxel of the generated centre (0.8 × 0.7 × 5 mm).
        assert np.all(np.abs(pos - np.array(t["center_mm"])) <= np.array([0.8, 0.7, 5.0]) + 1e-6), t
        top, bottom = t["body_z_mm"]
        assert les["locationZ"] == pytest.approx((top - t["center_mm"][2]) / (top - bottom), abs=1e-5)
        assert 0 < les["locationX"] < 1 and 0 < les["locationY"] < 1
        assert les["spacingXMm"] == pytest.approx(0.8) and les["spacingYMm"] == pytest.approx(0.7)
        assert les["sliceIntervalMm"] == pytest.approx(5.0)
        assert les["imageRows"] == 64 and les["sliceRangeLast"] == 9
        assert les["imageRef"] == next(s["series_dir"] for s in info["series"] if s["series_uid"] == t["series_uid"])
        assert les["source"] == "dicom" and les["lesionId"].startswith("L-")
    studies = Client(engine, owns_engine=False).query("patient_studies", patientId=IDS.patient("dicom", "SYN0001"))
    assert sorted((s["study"]["studyIndex"], s["study"]["studyDate"]) for s in studies) == [
        (1, "2020-01-02"), (2, "2020-05-01")]


def test_reingest_is_idempotent(engine, cohort):
    root, _ = cohort
    ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    before = Client(engine, owns_engine=False).stats()
    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    assert rep.written == 0 and rep.unchanged == 8
    assert Client(engine, owns_engine=False).stats() == before


def test_lesion_ids_follow_the_contract(engine, cohort):
    root, info = cohort
    ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    got = _lesions(engine)
    r = info["rows"][0]
    coords = ",".join(f"{float(r[k]):.2f}" for k in
                      ("recist_x1", "recist_y1", "recist_x2", "recist_y2", "recist_x3", "recist_y3", "recist_x4", "recist_y4"))
    expect = IDS.lesion("dicom", f"{r['series_uid']}@{r['key_slice_index']}@{coords}")
    assert got[r["annotation_id"]]["lesionId"] == expect


def test_studies_without_annotations_are_written(engine, tmp_path):
    info = mini_cohort(tmp_path, n_patients=1, studies_per_patient=3)
    # Withhold every annotation of the last study.
    last = info["series"][-1]["study_uid"]
    rows = [r for r in info["rows"] if r["study_uid"] != last]
    with open(tmp_path / "annotations.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rep = ingest_dicom(engine, tmp_path, IDS, embed=False, keep_source_ids=True)
    stats = Client(engine, owns_engine=False).stats()
    assert stats["nodes"] == {"Patient": 1, "Study": 3, "Lesion": 4} and rep.extra["studies"] == 3


def test_corrupted_copy_ingests_the_intact_rest(engine, cohort, tmp_path):
    src, info = cohort
    root = tmp_path / "corrupt"
    shutil.copytree(src, root)
    rows = info["rows"]
    s0, s1 = info["series"][0], info["series"][1]
    # 1. truncate the key slice file of the first annotation (series 0, slice 3)
    trunc = _slice_file(root, s0, int(rows[0]["key_slice_index"]))
    trunc.write_bytes(trunc.read_bytes()[:-1000])
    # 2. delete the key slice of an annotation in series 1 (slice 6)
    victim_row = next(r for r in rows if r["series_uid"] == s1["series_uid"] and r["key_slice_index"] == 6)
    deleted = _slice_file(root, s1, 6)
    deleted.unlink()
    # 3. garble one CSV row (an annotation of series 2)
    g = next(k for k, r in enumerate(rows) if r["series_uid"] == info["series"][2]["series_uid"])
    garbled_id, garbled_line = rows[g]["annotation_id"], g + 2
    lines = (root / "annotations.csv").read_text().splitlines()
    assert lines[g + 1].startswith(garbled_id + ",")
    lines[g + 1] = lines[g + 1].replace(",", ";", 6)
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    # 4. an annotation pointing at a series that is not there
    shutil.rmtree(root / info["series"][3]["series_dir"])
    gone = [r["annotation_id"] for r in rows if r["series_uid"] == info["series"][3]["series_uid"]]

    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    errs = rep.rejected
    by_kind = {k: [e for e in errs if e["kind"] == k] for k in ("row", "image", "annotation")}
    assert [e["line"] for e in by_kind["row"]] == [garbled_line]
    assert any(e["source"] == str(trunc) and "truncated" in e["reason"] for e in by_kind["image"])
    rejected_ann = {e["annotationId"]: e for e in by_kind["annotation"]}
    assert trunc.name in rejected_ann[rows[0]["annotation_id"]]["reason"]
    assert "missing" in rejected_ann[victim_row["annotation_id"]]["reason"]
    assert rejected_ann[victim_row["annotation_id"]]["line"] == rows.index(victim_row) + 2
    for aid in gone:
        assert "not found" in rejected_ann[aid]["reason"]
    bad = {rows[0]["annotation_id"], victim_row["annotation_id"], garbled_id, *gone}
    intact = {r["annotation_id"] for r in rows} - bad
    got = _lesions(engine)
    assert set(got) == intact and rep.written == len(intact)
    assert rep.extra["rejectedRows"] == 1 and rep.extra["rejectedAnnotations"] == len(bad) - 1
    # The untouched annotations of the damaged series are there, with correct positions.
    for t in info["truth"]:
        if t["annotation_id"] in intact:
            les = got[t["annotation_id"]]
            assert abs(les["positionZMm"] - t["center_mm"][2]) < 1e-3


def test_wrong_patient_and_box_outside_image_are_rejected(engine, cohort, tmp_path):
    src, info = cohort
    root = tmp_path / "c"
    shutil.copytree(src, root)
    rows = [dict(r) for r in info["rows"]]
    rows[0]["bbox_x2"] = 80  # image is 64 wide
    rows[1]["key_slice_index"] = 10  # series has 10 slices: 0..9
    with open(root / "annotations.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    reasons = {e["annotationId"]: e["reason"] for e in rep.rejected}
    assert "outside the 64×64 image" in reasons[rows[0]["annotation_id"]]
    assert "outside the series (0..9)" in reasons[rows[1]["annotation_id"]]
    assert rep.written == len(rows) - 2


def test_annotation_only_cohort(engine, cohort, tmp_path):
    src, info = cohort
    root = tmp_path / "noimg"
    root.mkdir()
    shutil.copy(src / "annotations.csv", root)
    (root / "cohort.json").write_text(json.dumps({"images": False}))
    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    assert rep.written == 8 and rep.rejected == []
    got = _lesions(engine)
    assert all(les["locationZ"] == 0.5 and "positionXMm" not in les or les.get("positionXMm") is None
               for les in got.values())


def test_cli_ingest_dicom(cohort, tmp_path):
    from lesiondb.cli.main import cli

    root, _ = cohort
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path / "data"), "ingest", "dicom", str(root), "--json"]
    out = json.loads(runner.invoke(cli, args, catch_exceptions=False).output)
    assert out["written"] == 8 and out["rejected"] == 0 and out["studies"] == 4
    res = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "ingest", "dicom", str(root)])
    assert res.exit_code == 0 and "unchanged 8" in res.output
    res = runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "ingest", "dicom", str(tmp_path)])
    assert res.exit_code != 0 and "annotations.csv" in res.output


# -- end to end on a synthetic cohort (lesiondb.synth.generate) ----------------------------------------


@pytest.fixture(scope="module")
def synth_cohort(tmp_path_factory):
    synth = pytest.importorskip("lesiondb.synth.generate")
    root = tmp_path_factory.mktemp("synth") / "cohort"
    synth.generate_cohort(root, 5, seed=11, workers=1)
    from lesiondb.datasets.cohort import read_ground_truth

    return root, read_ground_truth(root)


def test_synth_cohort_counts_and_positions_match_ground_truth(engine, synth_cohort):
    root, gt = synth_cohort
    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    assert rep.rejected == []
    annotated = gt.annotated()
    assert len(annotated) > 0 and len(gt.withheld()) + len(annotated) == len(gt.instances)
    stats = Client(engine, owns_engine=False).stats()
    assert stats["nodes"]["Patient"] == len(gt.patients)
    assert stats["nodes"]["Study"] == len(gt.studies)  # studies whose annotations were all withheld too
    assert stats["nodes"]["Lesion"] == len(annotated) == rep.written
    series = {s["series_uid"]: s for s in gt.studies}
    got = _lesions(engine)
    for inst in annotated:
        les = got[inst["annotation_id"]]
        s = series[inst["series_uid"]]
        voxel = np.array([s["spacing_mm"][0], s["spacing_mm"][1], s["slice_interval_mm"]])
        pos = np.array([les["positionXMm"], les["positionYMm"], les["positionZMm"]])
        assert np.all(np.abs(pos - np.array(inst["center_mm"])) <= voxel), inst["annotation_id"]
        assert les["keySliceIndex"] == inst["key_slice_index"]
        assert les["typeCode"] == inst["type_code"]
        # Locations recomputed from the images agree with the generator's to a few percent.
        assert np.allclose([les["locationX"], les["locationY"], les["locationZ"]], inst["location"], atol=0.03)
    # Study order and dates come from the DICOM headers and match the generator's.
    pid = IDS.patient("dicom", gt.patients[0]["patient_id"])
    studies = Client(engine, owns_engine=False).query("patient_studies", patientId=pid)
    want = sorted((s["study_index"], s["study_date"]) for s in gt.patients[0]["studies"])
    assert sorted((r["study"]["studyIndex"], r["study"]["studyDate"]) for r in studies) == want


def test_corrupted_synth_cohort_reports_each_bad_item(engine, synth_cohort, tmp_path):
    import pydicom

    src, gt = synth_cohort
    root = tmp_path / "c"
    shutil.copytree(src, root)
    annotated = gt.annotated()
    by_series: dict[str, list] = {}
    for inst in annotated:
        by_series.setdefault(inst["series_uid"], []).append(inst)
    series_dirs = {s["series_uid"]: root / s["series_dir"] for s in gt.studies}
    uids = list(by_series)
    # Truncate the key slice of one annotation; delete the key slice of another (another series).
    a, b = by_series[uids[0]][0], by_series[uids[1]][0]

    def key_file(inst):
        f = series_dirs[inst["series_uid"]] / f"{inst['key_slice_index']:04d}.dcm"
        assert int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) == inst["key_slice_index"] + 1
        return f

    fa, fb = key_file(a), key_file(b)
    fa.write_bytes(fa.read_bytes()[: fa.stat().st_size // 2])
    fb.unlink()
    # Garble the CSV row of a third annotation.
    c = next(i for i in annotated if i["annotation_id"] not in (a["annotation_id"], b["annotation_id"]))
    lines = (root / "annotations.csv").read_text().splitlines()
    k = next(n for n, line in enumerate(lines) if line.startswith(c["annotation_id"] + ","))
    lines[k] = lines[k].replace(",", ",,", 3)
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")

    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    rejected = {e.get("annotationId"): e for e in rep.rejected if e["kind"] == "annotation"}
    assert fa.name in rejected[a["annotation_id"]]["reason"] and "truncated" in rejected[a["annotation_id"]]["reason"]
    assert "missing" in rejected[b["annotation_id"]]["reason"]
    assert [e["line"] for e in rep.rejected if e["kind"] == "row"] == [k + 1]
    assert any(e["source"] == str(fa) for e in rep.rejected if e["kind"] == "image")
    got = _lesions(engine)
    assert set(got) == {i["annotation_id"] for i in annotated} - {a["annotation_id"], b["annotation_id"],
                                                                  c["annotation_id"]}
    assert Client(engine, owns_engine=False).stats()["nodes"]["Study"] == len(gt.studies)


def test_non_contract_layout_with_two_series_in_one_folder(engine, tmp_path):
    from tests.ct_factory import ann_row, phantom, write_annotations, write_series

    root = tmp_path / "hospital"
    folder = root / "export"
    rows = []
    for k, (pid, study, series) in enumerate([("P1", "1.2.3.1", "1.2.3.1.1"), ("P2", "1.2.3.2", "1.2.3.2.1")]):
        write_series(folder, phantom(6, 32, 32, lesions=[(12, 14, 2, 3, 150.0)]), patient_id=pid,
                     study_uid=study, series_uid=series, names=[f"{pid}_{i}" for i in range(6)])
        rows.append(ann_row(f"H{k}", pid, study, series, "2020-01-02", 2, 12, 14, 3))
    write_annotations(root / "annotations.csv", rows)
    rep = ingest_dicom(engine, root, IDS, embed=False, keep_source_ids=True)
    assert rep.rejected == [] and rep.written == 2
    got = _lesions(engine)
    assert got["H1"]["imageRef"] == "export" and got["H1"]["locationZ"] is not None


# -- any folder layout: PACS-style names, folders reached through symbolic links ------------------------
def _pacs_layout(src, dst):
    """The cohort's series re-filed as a PACS export names them (no UID anywhere in a path), the
    export kept elsewhere and reached through a symbolic link, as archives are often assembled."""
    export = dst.parent / (dst.name + "-export")
    for k, series in enumerate(sorted(p for p in (src / "dicom").glob("*/*/*") if p.is_dir())):
        target = export / f"PAT{k // 3:03d}" / f"ST{k:04d}" / "SE000001"
        shutil.copytree(series, target)
    dst.mkdir()
    (dst / "images").symlink_to(export, target_is_directory=True)
    shutil.copy(src / "annotations.csv", dst / "annotations.csv")
    return dst


def test_a_pacs_layout_behind_symlinks_ingests_and_every_study_loads(engine, synth_cohort, tmp_path):
    from lesiondb.mining import StudyData, StudyVolumes

    root, gt = synth_cohort
    pacs = _pacs_layout(root, tmp_path / "pacs")
    assert not any(s["series_uid"] in str(p) for p in pacs.rglob("*") for s in gt.studies)
    rep = ingest_dicom(engine, pacs, IDS, embed=False)
    assert rep.rejected == [] and rep.written == len(gt.annotated())
    studies = engine._read("MATCH (s:Study) RETURN s.studyId AS id", {})
    assert len(studies) == len(gt.studies)  # the studies without any annotation too
    # mining's loader finds every study of the graph by its headers, annotated or not
    loader = StudyVolumes(pacs, IDS)
    shapes = {r["id"]: loader(StudyData(r["id"], 0.0))[0].shape for r in studies}
    want = {IDS.study("dicom", p["patient_id"], s["study_uid"]): s["n_slices"] for p in gt.patients for s in p["studies"]}
    assert {k: v[0] for k, v in shapes.items()} == want


def test_ingest_embeds_every_lesion_and_a_rerun_adds_nothing(engine, image_cohort, tiny_model, tmp_path):
    from lesiondb.embedding import EmbedOptions

    opts = EmbedOptions(k=3, workers=0, cache_dir=tmp_path / "emb")
    rep = ingest_dicom(engine, image_cohort, IDS, model=tiny_model, embed_options=opts)
    n = rep.written
    assert rep.rejected == [] and rep.embedding.embedded == n and rep.embedding.not_embedded == 0
    counts = engine._read("MATCH (l:Lesion) OPTIONAL MATCH (l)-[r:SIMILAR_TO]->() "
                          "RETURN l.lesionId AS id, l.embedded AS e, count(r) AS k", {})
    assert len(counts) == n and all(c["e"] is True and c["k"] == 3 for c in counts)
    again = ingest_dicom(engine, image_cohort, IDS, model=tiny_model, embed_options=opts).to_json()
    assert again["written"] == 0 and again["embedded"] == 0 and again["similarEdgesWritten"] == 0
    assert again["upToDate"] == n
    # --no-embed leaves the embedding step out (and says nothing about it)
    plain = ingest_dicom(engine, image_cohort, IDS, embed=False).to_json()
    assert "embedded" not in plain and "embedNote" not in plain
