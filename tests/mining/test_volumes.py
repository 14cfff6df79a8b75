"""``lesiondb.mining.volumes``: mining DeepLesion studies from their PNG slices.

Synthetic scene written as DeepLesion PNGs (Images_png/000001_SS_01/KKK.png), one patient, three
studies, 1 mm pixels and 2 mm slices; study 2's content is shifted by (+3, −2) px:

- S1: slices 010–049, every one present;
- S2 and S3: only 010–019 and 040–049 (the gap 020–039 is not released); S3's 012.png is truncated.

Lesion A (slice 14) is annotated in S1 only and present everywhere: it must be proposed in S2 at
slice 14 (a slice number, not the index 4 into the volume of present slices), and S3 must fail
alone, naming its broken file. Lesion B (slice 44) is annotated in every study (it aligns them).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lesiondb import mining
from lesiondb.core import mining as M
from lesiondb.errors import ImageError, InputError
from lesiondb.mining.volumes import StudyVolumes, has_deeplesion_studies

_SLAB_TESTS = Path(__file__).resolve().parent.parent / "imaging" / "test_png_series_slab.py"
N_PX, SX, DZ = 96, 1.0, 2.0
A = (30.0, 40.0, 14)  # col, row, slice number
B = (65.0, 60.0, 44)
SHIFT = {1: (0, 0), 2: (3, -2), 3: (0, 0)}
SLICES = {1: list(range(10, 50)), 2: list(range(10, 20)) + list(range(40, 50)),
          3: list(range(10, 20)) + list(range(40, 50))}


def _write_png():
    spec = importlib.util.spec_from_file_location("_slab_tests", _SLAB_TESTS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write_png


def _slice(study: int, k: int, rng) -> np.ndarray:
    dc, dr = SHIFT[study]
    r, c = np.mgrid[0:N_PX, 0:N_PX].astype(float)
    img = np.where(((c - 48 - dc) / 44) ** 2 + ((r - 48 - dr) / 40) ** 2 <= 1, 45.0, -1000.0)
    for lc, lr, lk in (A, B):
        d2 = (c - lc - dc) ** 2 + (r - lr - dr) ** 2 + ((k - lk) * DZ) ** 2
        img[d2 <= 6.0 ** 2] = -25.0
    return np.rint(img + rng.normal(0, 6, img.shape))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    write_png = _write_png()
    root = tmp_path_factory.mktemp("dl") / "Images_png"
    rng = np.random.default_rng(5)
    for s, ks in SLICES.items():
        folder = root / f"000001_{s:02d}_01"
        folder.mkdir(parents=True)
        for k in ks:
            write_png(folder / f"{k:03d}.png", _slice(s, k, rng))
    broken = root / "000001_03_01" / "012.png"
    broken.write_bytes(broken.read_bytes()[:300])
    return root


def _row(study: int, lesion, name: str, **extra):
    dc, dr = SHIFT[study]
    c, r, k = lesion[0] + dc, lesion[1] + dr, lesion[2]
    return {
        "patient": {"patientId": "P1", "source": "deeplesion"},
        "study": {"studyId": f"S{study}", "studyIndex": study},
        "lesion": {"lesionId": f"L-{name}{study}", "source": "deeplesion", "keySliceIndex": k,
                   "bboxPx": [c - 6, r - 6, c + 6, r + 6], "longDiameterPx": 12.0, "longDiameterMm": 12.0,
                   "shortDiameterMm": 11.0, "spacingXMm": SX, "spacingYMm": SX, "sliceIntervalMm": DZ,
                   "imageRows": N_PX, "imageCols": N_PX, "typeCode": 4,
                   "contentHash": f"{name}{study}", **extra},
    }


@pytest.fixture
def graph(engine):
    ref = {s: f"000001_{s:02d}_01" for s in SLICES}
    rows = [_row(1, A, "a", imageRef=f"{ref[1]}/014.png")]
    rows += [_row(s, B, "b", imageRef=f"{ref[s]}/044.png") for s in SLICES]
    engine.write("upsert_lesions", rows)
    for lid, t in (("L-a1", "TA"), ("L-b1", "TB"), ("L-b2", "TB"), ("L-b3", "TB")):  # stands in for `lesiondb match`
        engine._write("MATCH (l:Lesion {lesionId: $l}) MERGE (t:Track {trackingUid: $t}) "
                      "MERGE (l)-[:IN_TRACK]->(t)", {"l": lid, "t": t})
    return engine


def test_mining_deeplesion_pngs_with_gaps_and_a_broken_slice(graph, images):
    out = mining.mine(graph, StudyVolumes(images), model_id="test")
    props = mining.list_proposals(graph)
    assert len(props) == 1, props
    p = props[0]
    assert p["studyId"] == "S2" and p["trackingUid"] == "TA"
    assert p["sliceIndex"] == 14 and p["imageRef"] == "000001_02_01"
    # in S2's frame (mm from the image centre, z = −slice × interval) lesion A sits at
    true = ((A[0] + 3 - N_PX / 2) * SX, (A[1] - 2 - N_PX / 2) * SX, -A[2] * DZ)
    assert np.linalg.norm(np.subtract([p["positionXMm"], p["positionYMm"], p["positionZMm"]], true)) <= 3.0
    assert p["predictionMethod"] == "matched-lesions"
    # the broken slice fails its study only, named with the file
    assert out["proposals"] == 1 and out["skipped"] == 1
    assert "S3" in out["errors"][0]["item"] and "012.png" in out["errors"][0]["reason"]


def test_missing_images_are_reported_per_study(graph, tmp_path):
    empty = tmp_path / "Images_png"
    empty.mkdir()
    out = mining.mine(graph, StudyVolumes(empty))
    assert out["proposals"] == 0 and out["skipped"] >= 1
    assert all("not found" in e["reason"] and "000001_" in e["reason"] for e in out["errors"])
    with pytest.raises(InputError, match="--images.*Images_png"):  # said before any work
        mining.mine(graph, StudyVolumes(None))


def test_without_references_the_error_asks_for_dl_info(engine):
    rows = [_row(1, A, "a"), _row(2, A, "a")]
    engine.write("upsert_lesions", rows)
    case = mining.cases_from_rows(engine.run("mining_patient_data", patientIds=["P1"]))[0]
    assert has_deeplesion_studies([case])
    loader = StudyVolumes("/nonexistent")
    loader.prepare_case(case)
    with pytest.raises(ImageError, match="--dl-info"):
        loader(case.studies[0])
    # with the lesionId → File_name map of the ingested DL_info, the series is found
    loader = StudyVolumes("/nonexistent", file_names={"L-a1": "000001_01_01_014.png", "L-a2": "000001_02_01_014.png"})
    prepared = loader.prepare_case(case)
    assert [loader._frames[s.study_id].ref for s in prepared.studies] == ["000001_01_01", "000001_02_01"]
    assert [s.image_ref for s in prepared.studies] == [None, None]  # not recorded: the graph keeps no folders
    o = prepared.lesions["S1"][0]
    assert o.position_mm == pytest.approx(((A[0] - 48) * SX, (A[1] - 48) * SX, -A[2] * DZ))
    assert o.slice_index is None  # no folder there: no volume index


def test_prepare_maps_slice_numbers_to_volume_indices(graph, images):
    case = next(mining.read_cases(graph))
    loader = StudyVolumes(images)
    prepared = loader.prepare_case(case)
    b2 = next(o for o in prepared.lesions["S2"] if o.lesion_id == "L-b2")
    assert b2.slice_index == SLICES[2].index(44) == 14
    hu, grid = loader(prepared.studies[1])
    assert hu.shape[0] == 20 and grid.z_range() == (-49 * DZ, -10 * DZ)
    assert grid.to_mm(b2.slice_index, 0, 0)[2] == -44 * DZ
    # a DICOM study (no DeepLesion lesion, no PNG reference) is left to the DICOM loader
    dicom_case = mining.PatientCase("P", [mining.StudyData("D1", 0.0, image_ref="dicom/P/1.2/1.3")], {})
    assert not has_deeplesion_studies([dicom_case])


def test_a_prediction_in_a_gap_is_not_proposed():
    loader = StudyVolumes("/x")
    frame_case = mining.PatientCase("P", [mining.StudyData("S2", 0.0, image_ref="000001_02_01/044.png")], {},
                                    lesions={"S2": [M.Observation("L", "S2", 0.0, 12.0)]},
                                    lesion_props={"L": {"source": "deeplesion", "spacingXMm": 1.0,
                                                        "sliceIntervalMm": DZ, "keySliceIndex": 44}})
    loader.prepare_case(frame_case)
    loader._numbers["S2"] = SLICES[2]
    grid = M.Grid(-np.asarray(SLICES[2], float) * DZ, 1.0, 1.0)

    def record(pred_slice: float, cand_index: int):
        cand = M.Candidate(cand_index, 40.0, 30.0, grid.to_mm(cand_index, 40.0, 30.0), 6.0, 1.0, -1, score=0.9)
        pred = M.Prediction((0.0, 0.0, -pred_slice * DZ), 4.0, "matched-lesions", 12.0, ())
        return mining.ProposalRecord("PR-x", "P", "S2", "T", cand, pred, grid)

    stats = mining.MiningStats(candidate_studies=2, proposals=2)
    kept = loader.finish_records(frame_case, [record(30, 9), record(15, 5)], stats)
    assert [r.candidate.slice_index for r in kept] == [15]  # index 5 of the present slices is slice 015
    assert stats.proposals == 1 and stats.candidate_studies == 1
    why = stats.skipped[0]["reason"]
    assert "gap" in why and "019.png" in why and "040.png" in why
