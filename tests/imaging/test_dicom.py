"""DICOM series reader: real CT files, series built with pydicom, geometry, and bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from lesiondb.errors import ImageError
from lesiondb.imaging import dicom as D
from tests.ct_factory import phantom, write_series


@pytest.fixture(scope="module")
def ct(shared_data):
    root = shared_data / "ct_dicom"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    return root


# -- real files ------------------------------------------------------------------------------------


def test_ct_small_has_documented_hu_range(ct):
    v = D.read_series(ct / "pydicom" / "CT_small.dcm")
    assert v.shape == (1, 128, 128) and v.hu.dtype == np.int16
    assert (int(v.hu.min()), int(v.hu.max())) == (-896, 1167)  # PROVENANCE.md
    assert v.spacing_xy_mm == pytest.approx((0.661468, 0.661468))
    assert v.slice_interval_mm == 5.0  # one slice: from SliceThickness
    assert v.study_date == "2004-01-19" and v.patient_id == "1CT1"


def test_pydicom_testdata_matches_shared_copy(ct):
    pydicom_data = pytest.importorskip("pydicom.data")
    path = pydicom_data.get_testdata_file("CT_small.dcm")
    a, b = D.read_series(path), D.read_series(ct / "pydicom" / "CT_small.dcm")
    assert np.array_equal(a.hu, b.hu)


@pytest.mark.parametrize("rel", ["pydicom-data/693_UNCI.dcm", "pydicom/J2K_pixelrep_mismatch.dcm",
                                 "pydicom-data/explicit_VR-UN.dcm"])
def test_real_head_and_body_ct_have_air_and_tissue(ct, rel):
    """Air outside the patient ≈ -1000 HU, soft tissue inside in 0..100 (JPEG 2000 decodes via Pillow).

    CT_small is left out: it is a crop inside the body (its exact range is checked above)."""
    from lesiondb.imaging.location import body_mask

    try:
        v = D.read_series(ct / rel)
    except ImageError as exc:  # a missing decoder must say how to fix it
        assert "lesiondb[dicom-codecs]" in str(exc) and rel.split("/")[-1] in str(exc)
        pytest.skip(f"no decoder here: {exc}")
    hu = v.hu[0].astype(float)
    body = body_mask(hu)
    assert 0.05 < body.mean() < 0.95
    outside = hu[~body & (hu > -1500)]  # below -1500: padding outside the field of view
    hist, edges = np.histogram(outside, bins=np.arange(-1100, 1001, 20))
    assert -1060 <= edges[np.argmax(hist)] <= -900
    inside = hu[body]
    tissue = inside[(inside > -200) & (inside < 200)]
    assert ((tissue >= 0) & (tissue <= 100)).mean() > 0.3


def test_real_five_slice_series_sorted_head_first(ct):
    v = D.read_series(ct / "pydicom" / "dicomdirtests_98892001_CT5N")
    assert v.shape == (5, 16, 16)
    # z = 8.76 → -1.24 in 2.5 mm steps (PROVENANCE.md); head first = decreasing z.
    np.testing.assert_allclose(v.positions_mm[:, 2], [8.7625, 6.2625, 3.7625, 1.2625, -1.2375])
    assert v.slice_interval_mm == pytest.approx(2.5)
    assert [f.name for f in v.files] == ["2062", "2392", "2693", "3023", "3353"]
    assert -1100 < v.hu.min() < -800 and v.hu.max() < 200


def test_real_four_slice_series_with_a_gap_is_rejected_naming_the_files(ct):
    with pytest.raises(ImageError, match="inconsistent slice spacing") as ei:
        D.read_series(ct / "pydicom" / "dicomdirtests_77654033_CT2")
    msg = str(ei.value)
    assert "17106" in msg and "17136" in msg and "1.250 mm" in msg


def test_secondary_capture_rgb_is_rejected_with_reason(ct):
    with pytest.raises(ImageError, match="secondary capture") as ei:
        D.read_series(ct / "deid-data")
    assert "ctbrain1.dcm" in str(ei.value) and "not CT data in HU" in str(ei.value)


def test_jpeg_lossless_without_decoder_names_file_and_fix(ct):
    path = ct / "pydicom-data" / "bad_sequence.dcm"
    try:
        v = D.read_series(path)
    except ImageError as exc:
        assert str(path) in str(exc)
        assert "JPEG Lossless" in str(exc) and "pip install lesiondb[dicom-codecs]" in str(exc)
    else:  # decoders installed: the malformed-sequence file must still give neck-CT HU
        assert -1100 < float(np.median(v.hu)) < 200 and v.hu.max() > 300


def test_list_series_over_the_real_folder(ct):
    series, skipped = D.list_series(ct)
    by_patient = {s.patient_id: s for s in series}
    assert by_patient["98890234"].n_files == 5 and by_patient["77654033"].n_files == 4
    assert {"1CT1", "CQ500-CT-310", "PANCREAS_0001"} <= set(by_patient)
    assert any("ctbrain1.dcm" in p and "secondary capture" in r for p, r in skipped.items())


# -- written series: sorting, rescale, geometry -----------------------------------------------------


def test_series_sorted_by_position_not_file_name(tmp_path):
    hu = phantom(6, 32, 32)
    hu[:, 0, 0] = np.arange(6) * 10 - 900  # tag each slice
    write_series(tmp_path / "s", hu, interval_mm=2.5)
    v = D.read_series(tmp_path / "s")
    assert v.hu[:, 0, 0].tolist() == (np.arange(6) * 10 - 900).tolist()
    np.testing.assert_array_equal(v.hu, hu.astype(np.int16))
    assert v.slice_interval_mm == pytest.approx(2.5)
    assert np.all(np.diff(v.positions_mm[:, 2]) < 0)  # head first


def test_feet_first_normal_still_sorts_head_first(tmp_path):
    # Column direction flipped: the normal points to the feet, so larger positions along it are lower.
    hu = phantom(5, 16, 16)
    hu[:, 0, 0] = np.arange(5) * 10 - 900
    write_series(tmp_path / "s", hu, orientation=(1, 0, 0, 0, -1, 0), top_position=(0, 0, 50))
    v = D.read_series(tmp_path / "s")
    assert v.hu[:, 0, 0].tolist() == (np.arange(5) * 10 - 900).tolist()
    assert np.all(np.diff(v.positions_mm[:, 2]) < 0)


def test_float_rescale_gives_float_hu(tmp_path):
    hu = phantom(3, 16, 16)
    write_series(tmp_path / "s", hu, slope=0.5, intercept=-1000.0)
    v = D.read_series(tmp_path / "s")
    assert v.hu.dtype == np.float32
    np.testing.assert_allclose(v.hu, hu, atol=0.5)


def test_voxel_patient_round_trip_on_oblique_series(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    iop = (1, 0, 0, 0, c, -s)  # gantry tilt about x
    write_series(tmp_path / "s", phantom(7, 20, 24), orientation=iop, spacing_xy_mm=(0.9, 0.6),
                 interval_mm=3.0, top_position=(-10, -20, 40))
    v = D.read_series(tmp_path / "s")
    normal = np.cross(iop[:3], iop[3:])
    # Independent expectation: top + col*dx*row_dir + row*dy*col_dir - k*interval*normal.
    expect = (np.array([-10, -20, 40]) + 5 * 0.9 * np.array(iop[:3]) + 7 * 0.6 * np.array(iop[3:])
              - 4 * 3.0 * normal)
    np.testing.assert_allclose(v.voxel_to_patient(5, 7, 4), expect, atol=1e-3)
    pts = np.array([[1.5, 2.0, 0.0], [10.25, 3.5, 6.0], [23.0, 19.0, 2.5]])
    xyz = v.voxel_to_patient(pts[:, 0], pts[:, 1], pts[:, 2])
    np.testing.assert_allclose(v.patient_to_voxel(xyz), pts, atol=1e-4)  # headers hold 4 decimals
    np.testing.assert_allclose(D.patient_to_voxel(v, v.affine[:3, 3]), [0, 0, 0], atol=1e-9)


# -- bad input ---------------------------------------------------------------------------------------


def _series(tmp_path, n=8, **kw):
    paths = write_series(tmp_path / "s", phantom(n, 24, 24), **kw)
    v = D.read_series(tmp_path / "s")
    return v, {p: v.files.index(p) for p in paths}


def test_truncated_slice_raises_naming_file_or_is_listed_with_allow_gaps(tmp_path):
    v, index = _series(tmp_path)
    victim = next(p for p, k in index.items() if k == 3)
    victim.write_bytes(victim.read_bytes()[:-300])
    with pytest.raises(ImageError, match="truncated") as ei:
        D.read_series(tmp_path / "s")
    assert victim.name in str(ei.value)
    v2 = D.read_series(tmp_path / "s", allow_gaps=True)
    assert list(v2.bad_slices) == [3] and "truncated" in v2.bad_slices[3]
    assert v2.is_usable(2) and not v2.is_usable(3)
    assert victim.name in v2.slice_problem(3)


def test_file_cut_before_pixels_has_no_pixel_data(tmp_path):
    v, index = _series(tmp_path)
    victim = next(p for p, k in index.items() if k == 0)
    victim.write_bytes(victim.read_bytes()[:700])
    v2 = D.read_series(tmp_path / "s", allow_gaps=True)
    reasons = " ".join(v2.skipped_files.values())
    assert str(victim) in v2.skipped_files and ("no pixel data" in reasons or "truncated" in reasons)


def test_deleted_middle_slice_keeps_the_index_grid(tmp_path):
    v, index = _series(tmp_path, n=8)
    victim = next(p for p, k in index.items() if k == 5)
    victim.unlink()
    with pytest.raises(ImageError, match="1 slice\\(s\\) missing"):
        D.read_series(tmp_path / "s")
    v2 = D.read_series(tmp_path / "s", allow_gaps=True)
    assert v2.n_slices == 8 and v2.missing_slices == (5,)
    np.testing.assert_array_equal(v2.hu[6], v.hu[6])  # later slices keep their index
    np.testing.assert_allclose(v2.positions_mm, v.positions_mm, atol=1e-6)
    assert "missing" in v2.slice_problem(5)


def test_inconsistent_orientation_spacing_size_name_the_file(tmp_path):
    import pydicom

    for tag, value, words in [("ImageOrientationPatient", ["0", "1", "0", "1", "0", "0"], "orientation"),
                              ("PixelSpacing", ["0.5", "0.5"], "pixel spacing")]:
        d = tmp_path / tag
        paths = write_series(d, phantom(5, 16, 16))
        ds = pydicom.dcmread(paths[2])
        setattr(ds, tag, value)
        ds.save_as(paths[2])
        with pytest.raises(ImageError, match=words) as ei:
            D.read_series(d)
        assert paths[2].name in str(ei.value)
    d = tmp_path / "size"
    paths = write_series(d, phantom(4, 16, 16))
    write_series(d, phantom(1, 20, 20), series_uid=D.read_series(paths[0]).series_uid,
                 top_position=(-25.0, -22.0, 80.0), names=["odd"])
    with pytest.raises(ImageError, match="image size 20×20") as ei:
        D.read_series(d)
    assert "odd" in str(ei.value)


def test_irregular_spacing_and_duplicate_positions(tmp_path):
    import pydicom

    d = tmp_path / "irr"
    paths = write_series(d, phantom(6, 16, 16), interval_mm=5.0, top_position=(0, 0, 0))
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = ["0", "0", "-13.0"]  # 2 mm off the 5 mm grid
    ds.save_as(paths[3])
    with pytest.raises(ImageError, match="inconsistent slice spacing") as ei:
        D.read_series(d, allow_gaps=True)
    assert paths[3].name in str(ei.value)
    ds.ImagePositionPatient = ["0", "0", "-10.0"]  # same as slice 2
    ds.save_as(paths[3])
    with pytest.raises(ImageError, match="same position"):
        D.read_series(d)


def test_non_ct_and_no_pixel_data_are_rejected(tmp_path):
    import pydicom

    paths = write_series(tmp_path / "mr", phantom(2, 16, 16), modality="MR")
    with pytest.raises(ImageError, match="modality MR is not CT"):
        D.read_series(tmp_path / "mr")
    paths = write_series(tmp_path / "np", phantom(2, 16, 16))
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.PixelData
        ds.save_as(p)
    with pytest.raises(ImageError, match="no pixel data"):
        D.read_series(tmp_path / "np")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.dat").write_text("hello")
    with pytest.raises(ImageError, match="not a DICOM file"):
        D.read_series(tmp_path / "txt")
    with pytest.raises(ImageError, match="not found"):
        D.read_series(tmp_path / "nowhere")


def test_two_series_in_one_folder_need_a_uid(tmp_path):
    a = write_series(tmp_path / "mix", phantom(3, 16, 16), names=["a1", "a2", "a3"])
    write_series(tmp_path / "mix", phantom(2, 16, 16), names=["b1", "b2"])
    with pytest.raises(ImageError, match="2 series"):
        D.read_series(tmp_path / "mix")
    uid = D.read_series(a).series_uid
    v = D.read_series(tmp_path / "mix", uid)
    assert v.n_slices == 3 and v.skipped_files == {} and list(v.other_series.values()) == [2]


def test_copy_of_real_series_with_one_slice_removed(ct, tmp_path):
    src = ct / "pydicom" / "dicomdirtests_98892001_CT5N"
    shutil.copytree(src, tmp_path / "s")
    (tmp_path / "s" / "2693").unlink()  # the middle slice
    v = D.read_series(tmp_path / "s", allow_gaps=True)
    assert v.n_slices == 5 and v.missing_slices == (2,)
    assert v.positions_mm[2, 2] == pytest.approx(3.7625)


# -- headers once, pixels of the needed slices only -------------------------------------------------


def test_lazy_series_has_read_series_geometry_and_reads_only_asked_slices(tmp_path):
    write_series(tmp_path / "s", phantom(10, 24, 24), interval_mm=2.5)
    full = D.read_series(tmp_path / "s")
    lazy = D.read_series_lazy(tmp_path / "s")
    v = lazy.volume
    assert lazy.shape == full.shape and lazy.dtype == full.hu.dtype and lazy.files_read == 0
    assert v.spacing_xy_mm == full.spacing_xy_mm and v.slice_interval_mm == pytest.approx(full.slice_interval_mm)
    np.testing.assert_allclose(v.positions_mm, full.positions_mm)
    assert v.files == full.files and v.sop_uids == full.sop_uids
    np.testing.assert_array_equal(lazy.slice_hu(4), full.hu[4])
    sub = lazy.sub_volume(3, 6)
    np.testing.assert_array_equal(sub, full.hu[3:7])
    assert lazy.files_read == 4  # slice 4 once, then 3, 5 and 6


def test_lazy_series_lost_and_broken_slices(tmp_path):
    paths = write_series(tmp_path / "s", phantom(8, 24, 24))
    full = D.read_series(tmp_path / "s")
    index = {p: full.files.index(p) for p in paths}
    gone = next(p for p, k in index.items() if k == 5)
    gone.unlink()
    broken = next(p for p, k in index.items() if k == 2)
    broken.write_bytes(broken.read_bytes()[:-300])  # header intact, pixels truncated
    with pytest.raises(ImageError, match="missing"):
        D.read_series_lazy(tmp_path / "s")  # like read_series without allow_gaps
    lazy = D.read_series_lazy(tmp_path / "s", allow_gaps=True)
    assert lazy.shape[0] == 8 and lazy.volume.missing_slices == (5,)
    assert "missing" in lazy.slice_problem(5) and lazy.slice_problem(4) is None
    assert broken.name in lazy.slice_problem(2) and "truncated" in lazy.slice_problem(2)
    with pytest.raises(ImageError, match="truncated"):
        lazy.slice_hu(2)
    sub = lazy.sub_volume(1, 6)  # lost and unreadable slices hold air, as read_series(allow_gaps) gives
    assert (sub[1] == -1024).all() and (sub[4] == -1024).all()
    np.testing.assert_array_equal(sub[0], full.hu[1])
    np.testing.assert_array_equal(sub[5], full.hu[6])
