"""Synthetic cohorts: DICOM round trip, ground truth vs the rendered images, determinism, --like."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from lesiondb.core.progress import NullBar
from lesiondb.errors import InputError
from lesiondb.synth import dl_stats
from lesiondb.synth import generate as synth

pydicom = pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    synth.generate_cohort(out, 3, seed=7, workers=1)
    return out


def _gt(out: Path) -> dict:
    return json.loads((out / "ground_truth.json").read_text())


def _rows(out: Path) -> list[dict]:
    with open(out / "annotations.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _read_series(folder: Path):
    files = sorted(folder.glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    dss.sort(key=lambda d: -float(d.ImagePositionPatient[2]))  # head first
    hu = np.stack([d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for d in dss])
    return dss, hu


def test_cohort_folder_layout(cohort):
    meta = json.loads((cohort / "cohort.json").read_text())
    assert meta["generator"] == "lesiondb synth" and meta["seed"] == 7 and meta["patients"] == 3
    assert meta["images"] is True
    gt = _gt(cohort)
    assert len(gt["patients"]) == 3
    assert {s["series_dir"] for s in meta["series"]} == {
        s["series_dir"] for p in gt["patients"] for s in p["studies"]}
    for p in gt["patients"]:
        assert 1 <= len(p["studies"]) <= 6
        dates = [s["study_date"] for s in p["studies"]]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
        for s in p["studies"]:
            d = cohort / s["series_dir"]
            assert d.parts[-3:] == (p["patient_id"], s["study_uid"], s["series_uid"])
            assert len(list(d.glob("*.dcm"))) == s["n_slices"]
    header = next(csv.reader(open(cohort / "annotations.csv")))
    assert header == synth.ANNOTATION_COLUMNS


def test_dicom_headers_and_hu_round_trip(cohort):
    gt = _gt(cohort)
    p = gt["patients"][0]
    st = p["studies"][0]
    dss, hu = _read_series(cohort / st["series_dir"])
    assert len(dss) == st["n_slices"]
    for k, ds in enumerate(dss):
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == synth.CT_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "CT" and ds.PatientID == p["patient_id"]
        assert ds.StudyInstanceUID == st["study_uid"] and ds.SeriesInstanceUID == st["series_uid"]
        assert ds.StudyDate == st["study_date"].replace("-", "")
        assert ds.PatientSex == p["sex"]
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx(st["spacing_mm"][::-1])
        assert float(ds.SliceThickness) == st["slice_interval_mm"]
        ipp = [float(v) for v in ds.ImagePositionPatient]
        assert ipp[:2] == pytest.approx(st["image_position_mm"][:2])
        assert ipp[2] == pytest.approx(st["z_range_mm"][0] - k * st["slice_interval_mm"], abs=1e-3)
        assert ds.InstanceNumber == k + 1
        assert ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1
        assert float(ds.RescaleIntercept) == st["rescale_intercept"] and float(ds.RescaleSlope) == 1.0
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    # HU after rescale equal the rendered volume (rounded to integers).
    plan = synth.plan_cohort(3, seed=7)
    vol = synth.render_study(plan.patients[0], plan.patients[0].studies[0])
    assert np.abs(hu - np.clip(vol, -1024, 3071)).max() <= 0.5 + 1e-6
    assert hu.min() >= -1024 and -1100 < np.median(hu[:, :4, :4]) < -900  # air in the corners


def test_series_writer_is_byte_identical_to_pydicom(cohort):
    plan = synth.plan_cohort(1, seed=4)
    p, s = plan.patients[0], plan.patients[0].studies[0]
    px = (np.arange(256 * 256).reshape(256, 256) % 3000 - 1000).astype(np.int16)
    ours = synth.SeriesWriter(synth.series_dataset(p, s)).encode("1.2.3.4", 7, (-12.5, 3.25, -100.0), px)
    ds = synth.series_dataset(p, s)
    ds.SOPInstanceUID = "1.2.3.4"
    ds.InstanceNumber = "7"
    ds.ImagePositionPatient = ["-12.5", "3.25", "-100"]
    ds.SliceLocation = "-100"
    ds.PixelData = px.tobytes()
    ds["PixelData"].VR = "OW"
    fm = pydicom.dataset.FileMetaDataset()
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    fm.MediaStorageSOPInstanceUID = "1.2.3.4"
    fm.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    fm.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = "LESIONDB_SYNTH"
    ds.file_meta = fm
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    assert ours == buf.getvalue()


def test_uids_are_pydicom_generate_uid_with_deterministic_entropy():
    assert synth._uid("7", 1, "study", 2) == pydicom.uid.generate_uid(
        entropy_srcs=["lesiondb-synth", "7", "1", "study", "2"])


def test_annotated_plus_withheld_is_every_instance(cohort):
    gt = _gt(cohort)
    rows = _rows(cohort)
    by_study = defaultdict(list)
    for inst in gt["instances"]:
        by_study[inst["study_uid"]].append(inst)
    studies = [s["study_uid"] for p in gt["patients"] for s in p["studies"]]
    assert set(by_study) == set(studies)  # every study has lesions
    ann_ids = {r["annotation_id"] for r in rows}
    assert len(ann_ids) == len(rows)
    for uid, insts in by_study.items():
        annotated = [i for i in insts if i["annotated"]]
        withheld = [i for i in insts if not i["annotated"]]
        assert len(annotated) >= 1
        assert len(annotated) + len(withheld) == len(insts)
        assert {i["annotation_id"] for i in annotated} == {r["annotation_id"] for r in rows if r["study_uid"] == uid}
        for i in withheld:  # withheld ones keep their measurements for mining evaluation
            assert i["annotation_id"] not in ann_ids and len(i["recist_px"]) == 8 and len(i["bbox_px"]) == 4
    assert 0 < sum(not i["annotated"] for i in gt["instances"]) < len(gt["instances"])


def test_annotation_rows_equal_ground_truth(cohort):
    gt = {i["annotation_id"]: i for i in _gt(cohort)["instances"]}
    for r in _rows(cohort):
        i = gt[r["annotation_id"]]
        assert int(r["key_slice_index"]) == i["key_slice_index"] == i["center_voxel"][2]
        recist = [float(r[f"recist_{c}{n}"]) for n in (1, 2, 3, 4) for c in "xy"]
        assert recist == pytest.approx(i["recist_px"])
        assert [float(r[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")] == pytest.approx(i["bbox_px"])
        assert int(r["type_code"]) == i["type_code"]
        assert [float(r[f"location_{c}"]) for c in "xyz"] == pytest.approx(i["location"])
        # DeepLesion box: RECIST extent padded by 5 px.
        xs, ys = recist[0::2], recist[1::2]
        assert float(r["bbox_x1"]) == pytest.approx(max(0.0, min(xs) - 5), abs=1e-3)
        assert float(r["bbox_y2"]) == pytest.approx(min(255.0, max(ys) + 5), abs=1e-3)
        assert float(r["long_diameter_px"]) * float(r["spacing_x_mm"]) == pytest.approx(i["long_diameter_mm"], abs=0.01)


def _measure(p, s, inst):
    """Lesion pixels on the key slice: rendered with minus without lesions (no noise)."""
    on = synth.render_study(p, s, lesions=True, noise=False)[inst.key_slice_index]
    off = synth.render_study(p, s, lesions=False, noise=False)[inst.key_slice_index]
    return on, off


def _instances_by_type(n_patients=40, seed=11):
    plan = synth.plan_cohort(n_patients, seed=seed, type_probs={t: 1.0 for t in range(1, 9)})
    found = {}
    for p in plan.patients:
        for s in p.studies:
            for inst in s.instances:
                # Isolated lesions only: the measurement is not confused by a neighbour.
                others = [o for o in s.instances if o is not inst and math.dist(o.center_mm, inst.center_mm)
                          < o.semi_mm[0] + inst.semi_mm[0] + 5]
                if inst.type_code not in found and not others and inst.long_diameter_mm > 8:
                    found[inst.type_code] = (p, s, inst)
    return found


@pytest.fixture(scope="module")
def by_type():
    found = _instances_by_type()
    assert set(found) == set(range(1, 9)), f"types found: {sorted(found)}"
    return found


def test_recist_long_axis_matches_rendered_lesion(by_type):
    for t, (p, s, inst) in by_type.items():
        on, off = _measure(p, s, inst)
        top = max(hu for _, hu in inst.layers_hu)
        diff = np.abs(on - off)
        full = np.abs(top - off)
        ys, xs = np.nonzero((diff >= 0.5 * full) & (full > 20))
        x1, y1, x2, y2 = inst.recist_px[:4]
        d = np.array([x2 - x1, y2 - y1]) / math.hypot(x2 - x1, y2 - y1)
        cx, cy = inst.center_px
        along = (xs - cx) * d[0] + (ys - cy) * d[1]
        across = -(xs - cx) * d[1] + (ys - cy) * d[0]
        on_axis = np.abs(across) < 1.0
        length_px = along[on_axis].max() - along[on_axis].min() + 1.0
        assert length_px == pytest.approx(inst.long_diameter_px, abs=2.0), (t, inst.appearance)
        spacing = s.geometry.spacing_x_mm
        assert length_px * spacing == pytest.approx(inst.long_diameter_mm, abs=2 * spacing)


def test_lesion_appearance_matches_its_type(by_type):
    for t, (p, s, inst) in by_type.items():
        on, off = _measure(p, s, inst)
        cx, cy = inst.center_px
        yy, xx = np.mgrid[0:on.shape[0], 0:on.shape[1]]
        core = np.hypot(xx - cx, yy - cy) < max(1.0, 0.3 * inst.short_diameter_px)
        lesion = float(on[core].mean())
        background = float(off[core].mean())  # the tissue the lesion sits in
        hu_outer = inst.layers_hu[0][1]
        hu_core = inst.layers_hu[-1][1]
        assert lesion == pytest.approx(hu_core, abs=15), (t, inst.appearance)
        look = inst.appearance
        if t == 4:  # liver: hypodense (or cystic) against enhancing liver parenchyma
            assert background > 70 and lesion < background - 25
        elif t == 5:  # lung: solid or ground-glass nodule in aerated lung
            assert background < -700 and lesion > background + 300
        elif t == 6:  # kidney: cyst near water or a hypoenhancing mass, in enhancing kidney
            assert background > 80 and lesion < background - 40
            if look == "cyst":
                assert -10 < lesion < 25
        elif t == 1:  # bone: lytic (darker) or sclerotic (brighter) than bone
            assert (look == "lytic" and lesion < 120) or (look == "sclerotic" and lesion > 700)
        elif t == 3:  # enlarged node: soft tissue
            assert 20 < hu_outer < 90
        elif t in (2, 7, 8):  # masses: soft tissue or fluid
            assert -5 < hu_core < 100 and 0 < hu_outer < 100


def test_location_matches_body_outline_and_body_extent(cohort):
    gt = _gt(cohort)
    studies = {s["study_uid"]: s for p in gt["patients"] for s in p["studies"]}
    inst = [i for i in gt["instances"] if i["study_uid"] == gt["patients"][0]["studies"][0]["study_uid"]]
    st = studies[inst[0]["study_uid"]]
    _, hu = _read_series(cohort / st["series_dir"])
    top, bottom = st["body_z_mm"]
    assert top > bottom
    for i in inst:
        k = i["key_slice_index"]
        body = hu[k] > -500
        rows = np.flatnonzero(body.any(axis=1))
        cols = np.flatnonzero(body.any(axis=0))
        col, row = i["center_voxel"][:2]
        x = (col - cols[0]) / (cols[-1] - cols[0])
        y = (row - rows[0]) / (rows[-1] - rows[0])
        assert i["location"][0] == pytest.approx(x, abs=0.02)
        assert i["location"][1] == pytest.approx(y, abs=0.02)
        z_key = st["z_range_mm"][0] - k * st["slice_interval_mm"]
        assert i["location"][2] == pytest.approx((top - z_key) / (top - bottom), abs=1e-3)
        # The lesion centre lies within half a slice of the key slice.
        assert abs(i["center_mm"][2] - z_key) <= 0.5 * st["slice_interval_mm"] + 1e-6


def test_locations_follow_deeplesion_anatomy():
    """Normalised z by type follows the body: lung/mediastinum above liver/kidney above pelvis."""
    plan = synth.plan_cohort(150, seed=3)
    z = defaultdict(list)
    x = defaultdict(list)
    for _, _, i in plan.instances():
        z[i.type_code].append(i.location[2])
        x[i.type_code].append(i.location[0])
    med = {t: float(np.median(v)) for t, v in z.items()}
    assert med[5] < med[4] < med[8] and med[3] < med[6] < med[8]
    assert 0.35 < med[5] < 0.6 and 0.5 < med[4] < 0.7 and med[8] > 0.7
    assert float(np.median(x[4])) < 0.45  # liver on the patient's right = image left


def test_lesions_of_one_patient_never_overlap():
    """Two lesions sharing space would render as one (and be matched as one): each is placed
    clear of the patient's earlier ones, at both lesions' largest sizes."""
    plan = synth.plan_cohort(300, seed=101)
    pairs = overlapping = 0
    for p in plan.patients:
        for x, a in enumerate(p.tracks):
            for b in p.tracks[x + 1:]:
                ra = 0.5 * max(long_mm for long_mm, _ in a.sizes.values())
                rb = 0.5 * max(long_mm for long_mm, _ in b.sizes.values())
                pairs += 1
                overlapping += math.dist(a.anat_mm, b.anat_mm) < ra + rb
    assert pairs > 1000 and overlapping == 0


def test_tracks_evolve_and_patients_shift_between_studies():
    plan = synth.plan_cohort(30, seed=5)
    courses = Counter(t.course for p in plan.patients for t in p.tracks)
    assert {"grow", "shrink", "stable", "new", "resolve"} <= set(courses)
    statuses = Counter(i.status for _, _, i in plan.instances())
    assert {"new", "growing", "shrinking", "stable", "resolved"} <= set(statuses)
    moved = 0
    for p in plan.patients:
        n = len(p.studies)
        tracks = {t.track_id: t for t in p.tracks}
        per_track = defaultdict(list)
        for s in p.studies:
            for i in s.instances:
                per_track[i.track_id].append((s, i))
        for tid, seq in per_track.items():
            tr = tracks[tid]
            assert {i.type_code for _, i in seq} == {tr.type_code}
            idx = [s.study_index for s, _ in seq]
            assert idx == list(range(idx[0], idx[-1] + 1))  # contiguous
            if tr.course == "new":
                assert idx[0] > 1 and seq[0][1].status == "new"
            if tr.course == "resolve":
                assert idx[-1] < n and seq[-1][1].status == "resolved"
            if tr.course == "grow" and len(seq) > 1 and seq[-1][0].months_from_baseline > 6:
                assert seq[-1][1].long_diameter_mm > seq[0][1].long_diameter_mm * 0.9
            if len(seq) > 1:
                moved += math.dist(seq[0][1].center_mm, seq[1][1].center_mm) > 1.0
    assert moved > 0  # follow-ups are not aligned with the baseline


def test_same_seed_same_files_different_seed_different(tmp_path):
    a = synth.generate_cohort(tmp_path / "a", 4, seed=21, images=False)
    synth.generate_cohort(tmp_path / "b", 4, seed=21, images=False)
    synth.generate_cohort(tmp_path / "c", 4, seed=22, images=False)
    for name in ("annotations.csv", "ground_truth.json", "cohort.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert a.images is False and not (tmp_path / "a" / "dicom").exists()


def test_dicom_is_deterministic_and_independent_of_workers(tmp_path):
    synth.generate_cohort(tmp_path / "one", 2, seed=9, workers=1)
    synth.generate_cohort(tmp_path / "two", 2, seed=9, workers=2)

    def digest(root: Path) -> dict[str, str]:
        return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted(root.rglob("*")) if f.is_file()}

    one, two = digest(tmp_path / "one"), digest(tmp_path / "two")
    assert one == two and any(k.endswith(".dcm") for k in one)


def test_output_folder_rules(tmp_path):
    out = tmp_path / "c"
    synth.generate_cohort(out, 1, seed=1, images=False)
    with pytest.raises(InputError, match="not empty"):
        synth.generate_cohort(out, 1, seed=1, images=False)
    synth.generate_cohort(out, 2, seed=1, images=False, overwrite=True)
    assert json.loads((out / "cohort.json").read_text())["patients"] == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="holds no lesiondb cohort"):
        synth.generate_cohort(other, 1, seed=1, images=False, overwrite=True)
    assert (other / "keep.txt").exists()
    with pytest.raises(InputError):
        synth.plan_cohort(0, seed=1)
    with pytest.raises(InputError):
        synth.plan_cohort(2, seed=-1)


def _like_counts(path: Path) -> tuple[int, int, int]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    patients = {r["Patient_index"] for r in rows}
    studies = {(r["Patient_index"], r["Study_index"]) for r in rows}
    return len(patients), len(studies), len(rows)


def test_like_reproduces_a_real_cohorts_structure(dl_info):
    n_p, n_s, n_l = _like_counts(dl_info)
    plan = synth.plan_cohort(seed=1, like=dl_info)  # the file's patient count by default
    gt = synth.ground_truth(plan)
    assert (len(gt["patients"]), plan.n_studies, len(gt["instances"])) == (n_p, n_s, n_l)
    # Lesions per study and the labelled type mix follow the file.
    per_study_real = Counter()
    types_real = Counter()
    with open(dl_info, newline="", encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            per_study_real[(r["Patient_index"], r["Study_index"])] += 1
            types_real[int(r["Coarse_lesion_type"])] += 1
    per_study_syn = Counter(i["study_uid"] for i in gt["instances"])
    assert sorted(per_study_real.values()) == sorted(per_study_syn.values())
    types_syn = Counter(i["type_code"] for i in gt["instances"])
    for t in range(1, 9):  # labelled rows keep their type; unlabelled ones add a few
        assert types_real[t] <= types_syn[t] <= types_real[t] + types_real[-1]
    assert sum(types_syn.values()) == n_l
    # every annotation lies on its image (a large lesion at the body's edge used to reach past a
    # field of view fitted to the body: `ingest dicom` then rejected its negative coordinates)
    outside = [i.annotation_id for p in plan.patients for s in p.studies for i in s.instances
               if min(i.recist_px + i.bbox_px) < 0
               or max(i.recist_px[0::2] + i.bbox_px[0::2]) > s.geometry.cols - 1
               or max(i.recist_px[1::2] + i.bbox_px[1::2]) > s.geometry.rows - 1]
    assert outside == []


def test_like_skips_bad_rows(tmp_path, dl_info):
    lines = open(dl_info, encoding="utf-8-sig").read().splitlines()[:31]
    lines[5] = lines[5].split(",")[0] + ",oops"  # a short row
    lines[9] = lines[9].replace('"0.', '"x.', 1)  # a non-number in a quoted cell
    p = tmp_path / "small.csv"
    p.write_text("\n".join(lines) + "\n")
    like = dl_stats.read_like(p)
    assert like.rows_skipped == 2 and like.n_lesions == 28 and len(like.errors) == 2
    with pytest.raises(InputError, match="missing column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        dl_stats.read_like(bad)


def test_shipped_statistics_are_derived_from_dl_info(dl_info):
    assert dl_stats.derive_stats(dl_info) == dl_stats.load_stats()


def test_sizes_follow_the_per_type_distribution():
    plan = synth.plan_cohort(300, seed=8)
    stats = dl_stats.load_stats()
    by_type = defaultdict(list)
    for p in plan.patients:
        for tr in p.tracks:
            first = min(tr.sizes)
            by_type[tr.type_code].append(tr.sizes[first][0])
    for t in (2, 3, 4, 5):
        q = stats["types"][str(t)]["long_mm_quantiles"]
        median_real = q[stats["quantile_probs"].index(0.5)]
        median_syn = float(np.median(by_type[t]))
        assert median_syn == pytest.approx(median_real, rel=0.35), t


def test_progress_reports_studies_done_so_far(tmp_path):
    bars = []

    def progress(stage, total):
        bars.append(NullBar(total))
        return bars[-1]

    s = synth.generate_cohort(tmp_path / "p", 2, seed=3, workers=1, progress=progress)
    assert len(bars) == 1 and bars[0].total == s.studies and bars[0].n == s.studies


def test_large_cohorts_are_planned_in_worker_processes_alike(tmp_path):
    """From 400 patients the plan is drawn in worker processes: the same cohort either way."""
    one = synth.generate_cohort(tmp_path / "one", 400, seed=9, images=False, workers=1)
    two = synth.generate_cohort(tmp_path / "two", 400, seed=9, images=False, workers=2)
    assert one.instances == two.instances and one.tracks == two.tracks
    assert (tmp_path / "one" / "annotations.csv").read_bytes() == (tmp_path / "two" / "annotations.csv").read_bytes()


def test_ct_series_pass_dciodvfy(cohort):
    """Every slice of a generated series passes dicom3tools' IOD validator without an error
    (the Type 2 AcquisitionNumber was once missing from every slice)."""
    from tests.dicom_tools import dciodvfy_errors

    meta = json.loads((cohort / "cohort.json").read_text())
    files = sorted((cohort / meta["series"][0]["series_dir"]).glob("*.dcm"))
    assert files
    assert dciodvfy_errors(files) == {}
