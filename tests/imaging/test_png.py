"""DeepLesion 16-bit PNG reader on the 80 real slices, and the 3-slice stack."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from lesiondb.errors import ImageError
from lesiondb.imaging import png as P


@pytest.fixture(scope="module")
def images(shared_data):
    root = shared_data / "deeplesion_images"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    return root


def _all_pngs(images):
    return sorted(images.rglob("*.png"))


def test_all_80_real_slices_have_plausible_hu(images):
    from lesiondb.imaging.location import body_mask

    files = _all_pngs(images)
    assert len(files) == 80
    for f in files:
        hu = P.read_slice(f)
        assert hu.dtype == np.int16 and hu.shape == (512, 512), f
        assert -2100 <= hu.min() and hu.max() <= 3100, f
        body = body_mask(hu)
        assert body.mean() > 0.05, f  # every slice shows a body
        # Air outside the body is about -1000 HU (-2048 is DeepLesion's padding outside the FOV).
        outside = hu[~body]
        air = outside[outside > -1500]
        hist, edges = np.histogram(air, bins=np.arange(-1100, 1001, 20))
        assert -1050 <= edges[np.argmax(hist)] <= -900, f  # the most common value outside is air
        # Inside the body: soft tissue (0..100 HU) is a large share and the median is tissue-like.
        inside = hu[body]
        assert ((inside >= 0) & (inside <= 100)).mean() > 0.15, f
        assert -100 <= np.median(inside) <= 100, f


def test_hu_offset_is_applied(tmp_path):
    import png

    raw = np.array([[0, 32768, 33768], [31768, 65535, 32768 + 40]], dtype=np.uint16)
    p = tmp_path / "t.png"
    with open(p, "wb") as fh:
        png.Writer(width=3, height=2, greyscale=True, bitdepth=16).write(fh, raw.tolist())
    for use_pillow in (True, False):
        hu = P.read_slice(p, use_pillow=use_pillow)
        assert hu.tolist() == [[-32768, 0, 1000], [-1000, 32767, 40]]


def test_pillow_and_pypng_agree_on_real_slice(images):
    f = _all_pngs(images)[0]
    assert np.array_equal(P.read_slice(f, use_pillow=True), P.read_slice(f, use_pillow=False))


@pytest.mark.parametrize("use_pillow", [True, False])
def test_truncated_and_missing_files_raise_image_error(images, tmp_path, use_pillow):
    src = _all_pngs(images)[0]
    bad = tmp_path / "trunc.png"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(ImageError, match="truncated") as ei:
        P.read_slice(bad, use_pillow=use_pillow)
    assert str(bad) in str(ei.value)
    with pytest.raises(ImageError, match="not found"):
        P.read_slice(tmp_path / "nope.png", use_pillow=use_pillow)
    eight = tmp_path / "eight.png"
    import png

    with open(eight, "wb") as fh:
        png.Writer(width=2, height=2, greyscale=True, bitdepth=8).write(fh, [[0, 1], [2, 3]])
    with pytest.raises(ImageError, match="16-bit"):
        P.read_slice(eight, use_pillow=use_pillow)


def _dl_interval(dl_info, series):
    with open(dl_info, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["File_name"].startswith(series + "_"):
                return float(row["Spacing_mm_px_"].split(",")[2]), int(row["Key_slice_index"])
    raise AssertionError(f"no DL_info row for {series}")


def test_stack_on_real_series_interpolates_neighbours(images, dl_info):
    interval, key = _dl_interval(dl_info, "000062_01_01")
    assert interval == 5.0
    folder = "series_000062_01_01"
    stack = P.read_stack(images, folder, key, interval, offset_mm=2.0)
    assert stack.shape == (3, 512, 512) and stack.dtype == np.float32
    k = P.read_slice(images / folder / f"{key:03d}.png").astype(np.float64)
    up = P.read_slice(images / folder / f"{key - 1:03d}.png").astype(np.float64)
    down = P.read_slice(images / folder / f"{key + 1:03d}.png").astype(np.float64)
    np.testing.assert_allclose(stack[1], k)
    np.testing.assert_allclose(stack[0], 0.6 * k + 0.4 * up, atol=1e-3)
    np.testing.assert_allclose(stack[2], 0.6 * k + 0.4 * down, atol=1e-3)
    # Neighbouring slices of a real series are similar but not equal.
    assert 0 < np.abs(stack[0] - stack[1]).mean() < 100
    # An offset of exactly two intervals reads the slices two away, unblended.
    s2 = P.read_stack(images, folder, key, interval, offset_mm=10.0)
    np.testing.assert_allclose(s2[0], P.read_slice(images / folder / f"{key - 2:03d}.png"))


def test_stack_at_series_edges_and_strict(images, tmp_path):
    folder = "series_000062_01_01"
    # Slice 056 is the first in the folder: the upper neighbour falls back to the key slice.
    s = P.read_stack(images, folder, 56, 5.0)
    np.testing.assert_allclose(s[0], s[1])
    assert not np.allclose(s[2], s[1])
    with pytest.raises(ImageError, match="neighbour slice 55"):
        P.read_stack(images, folder, 56, 5.0, strict=True)
    with pytest.raises(ImageError, match="key slice 50 not found"):
        P.read_stack(images, folder, 50, 5.0)
    # Images_png layout with a truncated neighbour.
    ser = tmp_path / "Images_png" / "000062_01_01"
    ser.mkdir(parents=True)
    for i in (61, 62, 63):
        shutil.copy(images / folder / f"{i:03d}.png", ser / f"{i:03d}.png")
    (ser / "063.png").write_bytes((images / folder / "063.png").read_bytes()[:5000])
    with pytest.raises(ImageError, match="063.png"):
        P.read_stack(tmp_path, "000062_01_01", 62, 5.0, offset_mm=2.0)


def test_key_slice_path_from_dl_file_name(tmp_path):
    ser = tmp_path / "Images_png" / "000062_01_01"
    ser.mkdir(parents=True)
    assert P.key_slice_path(tmp_path, "000062_01_01_078.png") == ser / "078.png"
    with pytest.raises(ImageError, match="not found"):
        P.series_dir(tmp_path, "000001_01_01")
