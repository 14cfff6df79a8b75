"""``lesiondb ingest deeplesion`` → ``lesiondb match`` → ``lesiondb mine`` on real DeepLesion slices.

The shared folder ``deeplesion_images/series_000062_01_01`` holds 29 consecutive real slices
(056–084) of patient 62's study 1 with three bookmarks (key slices 062, 071, 078). Only that one
series has images, so the tests build the two-study cases mining needs around it:

- **pseudo follow-up**: a second study (``000062_02_01``) whose slices are the same files (links
  in a temporary Images_png) and whose DL_info rows are study 1's, minus the withheld bookmark.
  ``lesiondb match`` links the other two bookmarks across the studies; the withheld one's track
  (annotated in study 1 only) is mined in study 2. This runs the whole user path on real pixels:
  DL_info parsing, pseudonymised ids mapped back to series folders (``--dl-info``) or stored
  references (``--keep-source-ids``), the PNG volume and its mm frame, the alignment from matched
  lesions, detection and scoring, slice numbers written back. It does not test a real change
  between scans: the follow-up is the same image, so the prediction is nearly exact (the
  pinned test in tests/mining/test_run.py measures the same lesion predicted 7 mm off). It is
  asserted only for the bookmarks that pinned test finds (062, 078).
- **real follow-up**: study 1 minus one bookmark plus the real DL_info rows of study 2 (its
  images are not in the shared data). The withheld lesion is predicted in study 1 from its
  study-2 bookmark through the alignment of the two lesions matched across the real studies;
  study 2 fails to load (missing folder, reported) and mining goes on.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lesiondb.cli.common import AppContext
from lesiondb.cli.main import cli
from lesiondb.datasets.deeplesion import COLUMNS

SERIES = "000062_01_01"
_MINING_TESTS = Path(__file__).resolve().parent.parent / "mining" / "test_run.py"


def _pinned_found() -> list[int]:
    """The bookmarks the pinned real-image test (tests/mining/test_run.py) finds."""
    spec = importlib.util.spec_from_file_location("_mining_tests", _MINING_TESTS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return sorted(k for k, found in mod.REAL_SAME_LESION_FOUND.items() if found)


@pytest.fixture
def app_engine(engine, monkeypatch):
    monkeypatch.setattr(AppContext, "engine", lambda self: engine)
    monkeypatch.setattr(AppContext, "close", lambda self: None)
    return engine


@pytest.fixture(scope="module")
def real(shared_data):
    folder = shared_data / "deeplesion_images" / f"series_{SERIES}"
    info = shared_data / "deeplesion" / "DL_info_available_merged.csv"
    if not folder.is_dir() or not info.is_file():
        pytest.skip(f"{folder} or {info} is missing")
    with open(info, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["File_name"].startswith("000062_")]
    return folder, rows


def _study1(rows):
    out = {int(r["Key_slice_index"]): r for r in rows if r["File_name"].startswith(SERIES + "_")}
    assert sorted(out) == [62, 71, 78]
    return out


def _layout(tmp_path, folder, rows, series_with_images):
    """A DL_info.csv of ``rows`` and an Images_png whose series folders link to the real slices."""
    images = tmp_path / "Images_png"
    images.mkdir()
    for ref in series_with_images:
        os.symlink(folder, images / ref, target_is_directory=True)
    dl = tmp_path / "DL_info.csv"
    with open(dl, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return dl, images


def _cli(tmp_path, *args):
    r = CliRunner().invoke(cli, ["--no-progress", "--data-dir", str(tmp_path / "data"), *args],
                           catch_exceptions=False)
    return r


def _json(tmp_path, *args):
    r = _cli(tmp_path, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _true_mm(row) -> tuple[float, float, float]:
    """A bookmark's centre in the frame of docs/mining.md: mm from the image centre, z = −slice × interval."""
    x1, y1, x2, y2 = (float(v) for v in row["Bounding_boxes"].split(","))
    sx, sy, dz = (float(v) for v in row["Spacing_mm_px_"].split(","))
    rows_px, cols_px = (float(v) for v in row["Image_size"].split(","))
    return ((x1 + x2) / 2 - cols_px / 2) * sx, ((y1 + y2) / 2 - rows_px / 2) * sy, -int(row["Key_slice_index"]) * dz


def _pseudo_follow_up(real, tmp_path, withheld):
    folder, rows = real
    s1 = _study1(rows)
    s2 = []
    for k, r in sorted(s1.items()):
        if k != withheld:
            s2.append({**r, "Study_index": "2", "File_name": r["File_name"].replace(SERIES, "000062_02_01")})
    dl, images = _layout(tmp_path, folder, list(s1.values()) + s2, [SERIES, "000062_02_01"])
    return s1, dl, images


@pytest.mark.parametrize("withheld", _pinned_found())
@pytest.mark.parametrize("keep_ids", [False, True], ids=["dl-info", "keep-source-ids"])
def test_mine_finds_the_withheld_bookmark_in_a_pseudo_follow_up(app_engine, real, tmp_path, withheld, keep_ids):
    s1, dl, images = _pseudo_follow_up(real, tmp_path, withheld)
    ing = _json(tmp_path, "ingest", "deeplesion", str(dl), *(["--keep-source-ids"] if keep_ids else []))
    assert ing["written"] == 5 and ing["rejected"] == 0
    m = _json(tmp_path, "match")
    assert m["tracks"] == 3 and m["sameLesionEdges"] == 2  # the two bookmarks left in both studies
    out = _json(tmp_path, "mine", "--images", str(images), "--no-embed",
                *([] if keep_ids else ["--dl-info", str(dl)]))
    assert out["errors"] == [] and out["candidateStudies"] == 1
    assert out["proposals"] == 1 and out["created"] == 1
    props = _json(tmp_path, "review", "list")
    assert len(props) == 1
    p = props[0]
    # a slice number of the series (the PNG's name), not an index into the volume of present slices
    assert abs(p["sliceIndex"] - withheld) <= 2 and (images / "000062_02_01" / f"{p['sliceIndex']:03d}.png").is_file()
    assert p["predictionMethod"] == "matched-lesions"
    # the series mined, by its pseudonym (that of the study's lesions); its folder only with the source ids
    lesions = _json(tmp_path, "query", "lesions", "-p", f"studyId={p['studyId']}")
    assert {r["lesion"]["seriesId"] for r in lesions} == {p["seriesId"]}
    assert p.get("imageRef") == ("000062_02_01" if keep_ids else None)
    row = s1[withheld]
    true = _true_mm(row)
    got = (p["positionXMm"], p["positionYMm"], p["positionZMm"])
    radius = float(row["Lesion_diameters_Pixel_"].split(",")[0]) * float(row["Spacing_mm_px_"].split(",")[0]) / 2
    assert math.dist(got, true) <= radius, (got, true, radius)
    # the box is on the withheld lesion (its centre inside the bookmark's box)
    bx1, by1, bx2, by2 = (float(v) for v in row["Bounding_boxes"].split(","))
    cx, cy = (p["bboxPx"][0] + p["bboxPx"][2]) / 2, (p["bboxPx"][1] + p["bboxPx"][3]) / 2
    assert bx1 <= cx <= bx2 and by1 <= cy <= by2


def test_mine_on_a_real_follow_up_reports_the_study_without_images(app_engine, real, tmp_path):
    folder, rows = real
    withheld = _pinned_found()[0]
    s1 = _study1(rows)
    s2 = [r for r in rows if r["File_name"].startswith("000062_02_01_")]
    assert len(s2) == 3
    dl, images = _layout(tmp_path, folder, [r for k, r in s1.items() if k != withheld] + s2, [SERIES])
    _json(tmp_path, "ingest", "deeplesion", str(dl))
    assert _json(tmp_path, "match")["sameLesionEdges"] == 2  # the real study-2 bookmarks of the other two
    out = _json(tmp_path, "mine", "--images", str(images), "--dl-info", str(dl), "--no-embed")
    # study 2 has no images: reported by name with the folder looked for, and mining went on
    assert out["skipped"] == 1 and "000062_02_01" in out["errors"][0]["reason"]
    assert out["candidateStudies"] == 1 and out["proposals"] == 1
    p = _json(tmp_path, "review", "list")[0]
    assert p["seriesId"].startswith("R-") and "imageRef" not in p and 56 <= p["sliceIndex"] <= 84
    assert p["predictionMethod"] == "matched-lesions"  # aligned by the two lesions matched across studies


def test_mine_says_which_option_is_missing(app_engine, real, tmp_path):
    _s1, dl, images = _pseudo_follow_up(real, tmp_path, 78)
    _json(tmp_path, "ingest", "deeplesion", str(dl))
    _json(tmp_path, "match")
    r = _cli(tmp_path, "mine", "--no-embed", "--json")
    assert r.exit_code != 0 and "--images" in r.output and "Images_png" in r.output
    # a pseudonymised graph needs no DL_info: its lesions' seriesId pseudonyms find their folders
    out = _json(tmp_path, "mine", "--images", str(images), "--no-embed")
    assert out["candidateStudies"] == 1 and out["proposals"] == 1
    # another pseudonym key would find no folder: refused before any work, saying which key to use
    r = _cli(tmp_path, "mine", "--images", str(images), "--no-embed", "--json",
             "--pseudonym-key", "0123456789abcdef0123456789abcdef")
    assert r.exit_code == 1 and "pseudonym key" in r.output and "not the key this graph" in r.output


def test_mine_help_documents_deeplesion():
    r = CliRunner().invoke(cli, ["mine", "--help"])
    assert r.exit_code == 0
    for w in ("Images_png", "--dl-info", "--image-format", "deeplesion"):
        assert w in r.output


@pytest.mark.slow
def test_mine_with_images_and_encoder_as_a_user_would(app_engine, real, tmp_path):
    """Ingest with --images (embedded by the shipped encoder when present) and mine with it."""
    withheld = _pinned_found()[-1]
    s1, dl, images = _pseudo_follow_up(real, tmp_path, withheld)
    _json(tmp_path, "ingest", "deeplesion", str(dl), "--images", str(images), "--workers", "0")
    _json(tmp_path, "match")
    out = _json(tmp_path, "mine", "--images", str(images), "--dl-info", str(dl))
    assert out["proposals"] == 1 and out["errors"] == []
    p = _json(tmp_path, "review", "list")[0]
    row = s1[withheld]
    radius = float(row["Lesion_diameters_Pixel_"].split(",")[0]) * float(row["Spacing_mm_px_"].split(",")[0]) / 2
    assert math.dist((p["positionXMm"], p["positionYMm"], p["positionZMm"]), _true_mm(row)) <= radius
