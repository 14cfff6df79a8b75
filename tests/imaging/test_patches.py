"""Lesion patches: geometry of the box, resampling, neighbour slices, windowing, both sources."""
from __future__ import annotations

import numpy as np
import pytest

from lesiondb.errors import ImageError
from lesiondb.imaging.limits import BOX_SLACK_PX
from lesiondb.imaging.patches import (
    FILL_HU,
    PatchSpec,
    extract_patch,
    extract_patch_from_volume,
    stack_from_volume,
    stack_patches,
    window,
)


def _disc_volume(n=9, rows=200, cols=220, cx=90.0, cy=120.0, r_px=10.0, hu=300.0, bg=0.0):
    yy, xx = np.mgrid[0:rows, 0:cols]
    sl = np.where((xx - cx) ** 2 + (yy - cy) ** 2 <= r_px ** 2, hu, bg).astype(np.float32)
    return np.repeat(sl[None], n, axis=0)


def _extent(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), xs.max() + 1, ys.min(), ys.max() + 1


def test_box_maps_onto_the_lesion_at_the_target_spacing():
    sx = 0.7
    vol = _disc_volume(cx=90, cy=120, r_px=10)
    box = (80.0, 110.0, 100.0, 130.0)  # the disc's box in source pixels (centres at 80..100)
    spec = PatchSpec(size_px=64, spacing_mm=1.0, context_mm=10.0, window_hu=(-100, 500))
    p = extract_patch_from_volume(vol, 4, box, (sx, sx), 2.5, spec)
    assert p.image.shape == (3, 64, 64) and p.image.dtype == np.float32
    assert p.spacing_mm == 1.0
    # 20 source px × 0.7 mm = 14 mm = 14 patch px, centred on the patch centre (32)
    assert np.allclose(p.box_px, [25.0, 25.0, 39.0, 39.0], atol=1e-4)
    # the bright disc (diameter 20 px × 0.7 mm ≈ 14 mm + 1 source px of blur) sits inside the box
    x0, x1, y0, y1 = _extent(p.image[1] > 0.5)
    assert 24 <= x0 <= 26 and 38 <= x1 <= 40 and 24 <= y0 <= 26 and 38 <= y1 <= 40


def test_anisotropic_pixels_and_off_centre_box():
    vol = _disc_volume(rows=100, cols=100, cx=30, cy=40, r_px=4)
    spec = PatchSpec(size_px=32, spacing_mm=2.0, context_mm=5.0)
    p = extract_patch(vol[:3], (26, 36, 34, 44), (0.5, 1.0), spec)
    # x: 8 px × 0.5 mm = 4 mm = 2 patch px; y: 8 px × 1.0 mm = 8 mm = 4 patch px
    assert np.allclose(p.box_px, [15, 14, 17, 18], atol=1e-4)


def test_big_lesion_enlarges_spacing_so_box_and_context_fit():
    vol = _disc_volume(rows=400, cols=400, cx=200, cy=200, r_px=100)
    spec = PatchSpec(size_px=64, spacing_mm=1.0, context_mm=10.0)
    p = extract_patch(vol[:3], (100, 100, 300, 300), (1.0, 1.0), spec)
    assert p.spacing_mm == pytest.approx((200 + 20) / 64)
    x1, y1, x2, y2 = p.box_px
    assert x1 >= 0 and y1 >= 0 and x2 <= 64 and y2 <= 64
    assert (x1 - 0) == pytest.approx(10.0 / p.spacing_mm, abs=1e-3)  # the context margin, in patch px


def test_neighbour_slices_are_interpolated_by_slice_interval():
    n, rows, cols = 7, 40, 40
    vol = np.stack([np.full((rows, cols), 100.0 * k, np.float32) for k in range(n)])
    st = stack_from_volume(vol, 3, slice_interval_mm=1.6, offset_mm=2.0)  # ±1.25 slices
    assert st[0, 0, 0] == pytest.approx(100 * (3 - 1.25))
    assert st[1, 0, 0] == pytest.approx(300.0)
    assert st[2, 0, 0] == pytest.approx(100 * (3 + 1.25))
    # clamped at the ends of the series
    st = stack_from_volume(vol, 0, slice_interval_mm=1.0, offset_mm=2.0)
    assert st[0, 0, 0] == 0.0 and st[2, 0, 0] == pytest.approx(200.0)
    spec = PatchSpec(size_px=16, spacing_mm=1.0, context_mm=2.0, window_hu=(0, 600))
    p = extract_patch_from_volume(vol, 3, (15, 15, 25, 25), (1.0, 1.0), 5.0, spec)  # ±0.4 slices
    assert np.allclose(p.image[:, 8, 8], [260 / 600, 300 / 600, 340 / 600], atol=1e-5)


def test_window_and_outside_fill():
    assert np.allclose(window(np.array([-2000.0, -1000.0, 0.0, 1000.0, 5000.0]), (-1000, 1000)),
                       [0, 0, 0.5, 1, 1])
    vol = np.zeros((3, 30, 30), np.float32)  # 0 HU everywhere in the image
    spec = PatchSpec(size_px=32, spacing_mm=1.0, context_mm=2.0, window_hu=(-1024, 1024))
    p = extract_patch(vol, (0, 0, 4, 4), 1.0, spec)  # box at the image corner: half the patch is outside
    assert p.image[1, 0, 0] == pytest.approx(0.5 * (FILL_HU + 1024) / 1024, abs=1e-6)
    assert p.image[1, 31, 31] == pytest.approx(0.5)


@pytest.mark.parametrize("box", [(10, 10, 5, 20), (np.nan, 0, 5, 5)])
def test_bad_box_raises_image_error(box):
    with pytest.raises(ImageError, match="bad lesion box"):
        extract_patch(np.zeros((3, 20, 20)), box, 1.0)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ImageError, match="3-slice"):
        extract_patch(np.zeros((2, 20, 20)), (1, 1, 5, 5), 1.0)
    with pytest.raises(ImageError, match="outside"):
        stack_from_volume(np.zeros((4, 8, 8)), 4, 1.0)
    with pytest.raises(ImageError, match="slice interval"):
        stack_from_volume(np.zeros((4, 8, 8)), 1, 0.0)
    with pytest.raises(ValueError):
        PatchSpec(window_hu=(100, 0))


def test_stack_patches_and_spec_round_trip():
    spec = PatchSpec(size_px=24, window_hu=(-500, 500))
    assert PatchSpec.from_dict(spec.to_dict()) == spec
    vol = _disc_volume(rows=60, cols=60, cx=30, cy=30, r_px=5)
    ps = [extract_patch(vol[:3], (25, 25, 35, 35), 1.0, spec) for _ in range(3)]
    imgs, boxes = stack_patches(ps)
    assert imgs.shape == (3, 3, 24, 24) and boxes.shape == (3, 4)


def test_real_deeplesion_key_slices(shared_data):
    """Patches from the real DeepLesion PNG stacks: the lesion box sits where the lesion is."""
    import csv

    from lesiondb.imaging.png import read_stack

    root = shared_data / "deeplesion_images" / "key_slices"
    if not root.is_dir():
        pytest.skip(f"{root} missing")
    rows = {r["File_name"]: r for r in csv.DictReader(open(shared_data / "deeplesion" / "DL_info_available_merged.csv"))}
    done = 0
    spec = PatchSpec()
    for png in sorted(root.glob("*/*.png"))[:6]:
        row = rows[f"{png.parent.name}_{png.name}"]
        sx, sy, sz = (float(v) for v in row["Spacing_mm_px_"].split(","))
        box = [float(v) for v in row["Bounding_boxes"].split(",")]
        stack = read_stack(png.parent, int(png.stem), sz, spec.offset_mm)
        p = extract_patch(stack, box, (sx, sy), spec)
        assert p.image.shape == (3, 64, 64) and np.isfinite(p.image).all()
        x1, y1, x2, y2 = p.box_px
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        # box size in mm is preserved by the resampling
        assert (x2 - x1) * p.spacing_mm == pytest.approx((box[2] - box[0]) * sx, rel=1e-4)
        # real CT: the patch is not flat (tissue inside the window)
        assert p.image[1].std() > 0.01
        done += 1
    assert done == 6


def test_volume_path_equals_stack_path_including_boxes_at_the_border():
    """extract_patch_from_volume only interpolates the window it needs: same result as the full stack."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 300, (12, 90, 110)).astype(np.float32)
    for _ in range(60):
        spec = PatchSpec(size_px=int(rng.choice([16, 32])), spacing_mm=float(rng.uniform(0.5, 3)),
                         context_mm=float(rng.uniform(0, 15)))
        cx, cy = rng.uniform(-15, 125, 2)
        r = rng.uniform(0.5, 40)
        box = (cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r)
        sp = (rng.uniform(0.4, 1.5), rng.uniform(0.4, 1.5))
        k, iv = int(rng.integers(0, 12)), float(rng.uniform(0.5, 6))
        s = BOX_SLACK_PX
        if min(box[:2]) < -s or box[2] > 110 + s or box[3] > 90 + s:  # outside the image: refused by both
            with pytest.raises(ImageError, match="lies outside the 90×110 image"):
                extract_patch_from_volume(vol, k, box, sp, iv, spec)
            with pytest.raises(ImageError, match="lies outside the 90×110 image"):
                extract_patch(stack_from_volume(vol, k, iv, spec.offset_mm), box, sp, spec)
            continue
        a = extract_patch_from_volume(vol, k, box, sp, iv, spec)
        b = extract_patch(stack_from_volume(vol, k, iv, spec.offset_mm), box, sp, spec)
        assert np.allclose(a.box_px, b.box_px) and np.allclose(a.image, b.image, atol=1e-6)


def test_window_path_equals_whole_stack_path():
    """source_window + extract_patch_from_window = extract_patch on the whole stack, borders included."""
    from lesiondb.imaging.patches import extract_patch_from_window, source_window

    rng = np.random.default_rng(5)
    stack = rng.normal(0, 300, (3, 200, 180)).astype(np.float32)
    spec = PatchSpec(size_px=32, spacing_mm=2.0, context_mm=10.0)
    boxes = [(90, 100, 110, 120), (0, 0, 8, 6), (170, 190, 179, 199), (10, 20, 170, 180), (-5, -3, 20, 20),
             (170, 190, 186, 206)]  # the last two reach past the image, within BOX_SLACK_PX
    for box in boxes:
        ya, yb, xa, xb = source_window(box, (0.9, 0.6), spec, stack.shape[1:])
        assert 0 <= ya < yb <= 200 and 0 <= xa < xb <= 180
        got = extract_patch_from_window(stack[:, ya:yb, xa:xb], (ya, xa), box, (0.9, 0.6), spec)
        ref = extract_patch(stack, box, (0.9, 0.6), spec)
        np.testing.assert_array_equal(got.image, ref.image)
        np.testing.assert_allclose(got.box_px, ref.box_px, atol=1e-5)
    # a box outside the image (drawn for another image) is refused, not embedded as air
    for box in [(300, 300, 310, 320), (170, 190, 190, 210), (-20, 5, 10, 30)]:
        with pytest.raises(ImageError, match="outside the 200×180 image"):
            source_window(box, (0.9, 0.6), spec, stack.shape[1:])
        with pytest.raises(ImageError, match="outside the 200×180 image"):
            extract_patch(stack, box, (0.9, 0.6), spec)
    # a small central box reads a small window only
    ya, yb, xa, xb = source_window((90, 100, 110, 120), (0.9, 0.6), spec, stack.shape[1:])
    assert (yb - ya) * (xb - xa) < 0.5 * 200 * 180


def test_span_is_the_weights_source_range():
    """source_window uses _span instead of building the matrix: it must give the same range."""
    from lesiondb.imaging.patches import _span, _weights

    rng = np.random.default_rng(3)
    for _ in range(500):
        n = int(rng.integers(1, 96))
        start = float(rng.uniform(-50, 600))
        step = float(rng.choice([rng.uniform(0.05, 1.0), rng.uniform(1.0, 12.0)]))
        w, first = _weights(n, start, step)
        assert _span(n, start, step) == (first, w.shape[1])
