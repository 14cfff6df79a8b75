"""lesiondb.web.images: slices found by their series pseudonym, in DICOM trees (by headers) and
DeepLesion Images_png folders (by folder name), and why a slice cannot be shown."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.datasets import deeplesion as DL
from lesiondb.datasets.cohort import read_ground_truth
from lesiondb.datasets.dicom_tree import DicomTree
from lesiondb.imaging.dicom import read_series
from lesiondb.imaging.png import read_slice
from lesiondb.web.images import ImageLibrary, SliceNotFound, SliceRef

from .conftest import KEY

IDS = Pseudonymizer.from_text(KEY)


def test_dicom_slices_are_found_by_series_pseudonym(web_cohort):
    lib = ImageLibrary([web_cohort], IDS)
    gt = read_ground_truth(web_cohort)
    study = gt.patients[0]["studies"][0]
    sid = IDS.series("dicom", gt.patients[0]["patient_id"], study["series_uid"])
    vol = read_series(web_cohort / study["series_dir"])
    for k in (0, vol.hu.shape[0] // 2, vol.hu.shape[0] - 1):
        assert np.array_equal(lib.slice_hu(SliceRef(sid, k)), vol.hu[k])
    n_series = sum(len(p["studies"]) for p in gt.patients)
    assert lib.summary() == {"folders": 1, "series": n_series, "dicomSeries": n_series, "deeplesionSeries": 0}
    # the index is the DicomTree's, under the graph's key
    assert set(lib.index()) == set(DicomTree(web_cohort).by_series_id(IDS))
    with pytest.raises(SliceNotFound) as exc:
        lib.slice_hu(SliceRef(sid, vol.hu.shape[0] + 5))
    assert exc.value.code == "slice-unreadable"


@pytest.mark.parametrize(("roots", "ref", "code"), [
    ([], SliceRef("R-x", 1), "no-images-folder"),
    (["cohort"], SliceRef("R-not-there", 1), "series-not-found"),
    (["cohort"], SliceRef("R-x", None), "no-slice-index"),
])
def test_why_a_slice_cannot_be_shown(web_cohort, roots, ref, code):
    lib = ImageLibrary([web_cohort for _ in roots], IDS)
    with pytest.raises(SliceNotFound) as exc:
        lib.slice_hu(ref)
    assert exc.value.code == code


def test_another_key_finds_nothing(web_cohort):
    lib = ImageLibrary([web_cohort], Pseudonymizer.from_text("another-key-another-key-0123"))
    assert set(lib.index()).isdisjoint(ImageLibrary([web_cohort], IDS).index())


@pytest.fixture(scope="module")
def key_slices(shared_data):
    folder = shared_data / "deeplesion_images" / "key_slices"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    return folder


def test_deeplesion_slices_by_series_pseudonym_or_stored_folder_name(key_slices):
    ref = sorted(p.name for p in key_slices.iterdir() if p.is_dir())[0]
    k = int(sorted((key_slices / ref).glob("*.png"))[0].stem)
    lib = ImageLibrary([key_slices], IDS)
    want = read_slice(key_slices / ref / DL.slice_file(k))
    assert np.array_equal(lib.slice_hu(SliceRef(DL.series_id(IDS, ref), k)), want)
    assert np.array_equal(lib.slice_hu(SliceRef(None, k, image_ref=f"{ref}/{DL.slice_file(k)}")), want)
    assert lib.summary()["deeplesionSeries"] == len([p for p in key_slices.iterdir() if p.is_dir()])


def test_deeplesion_crops_through_the_app(key_slices, shared_data, engine, tmp_path):
    """`lesiondb ingest deeplesion` rows of the shared key slices: their crops are real images."""
    from starlette.testclient import TestClient

    from lesiondb.ingest import ingest_deeplesion
    from lesiondb.web import create_app

    have = {(p.parent.name, int(p.stem)) for p in key_slices.glob("*/*.png")}
    with open(shared_data / "deeplesion" / "DL_info_available_merged.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if DL.split_file_name(r["File_name"]) in have][:4]
        fields = reader.fieldnames
    if not rows:
        pytest.skip("no DL_info row for the shared key slices")
    dl = tmp_path / "DL_info.csv"
    with open(dl, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    ingest_deeplesion(engine, dl, IDS, embed=False)
    lesions = engine.run("lesions", patientId=None, studyId=None, typeName=None, limit=10)
    assert len(lesions) == len(rows)
    app = create_app(engine, IDS, [key_slices])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for le in lesions:
            r = c.get(f"/crops/lesion/{le['lesionId']}.png?window=soft&size=96")
            assert r.status_code == 200 and r.headers["x-lesiondb-crop"] == "image", le["lesion"].get("seriesId")
        page = c.get(f"/lesions/{lesions[0]['lesionId']}")
        assert page.status_code == 200 and "has no embedding" in page.text
