"""lesiondb.web.crops: windowing, cropping, the drawn box, PNG encoding (Pillow and pypng give the
same pixels), the placeholder, and the crop cache (LRU bound, private folder)."""
from __future__ import annotations

import stat

import numpy as np
import pytest

from lesiondb.web import crops as C


def _decode(data: bytes) -> np.ndarray:
    import png

    w, h, rows, _ = png.Reader(bytes=data).asRGB8()
    return np.vstack([np.asarray(r, np.uint8) for r in rows]).reshape(h, w, 3)


def _phantom(rows=128, cols=160) -> np.ndarray:
    """Air, a soft-tissue disc (40 HU) with a bone rim (700 HU) and a lung patch (-800 HU)."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    hu = np.full((rows, cols), -1000, np.int16)
    r = np.hypot(yy - 64, xx - 80)
    hu[r < 50] = 40
    hu[(r >= 44) & (r < 50)] = 700
    hu[(np.abs(yy - 64) < 8) & (np.abs(xx - 60) < 8)] = -800
    return hu


def test_window_presets_map_their_range_to_0_255():
    for name, (w, level) in C.WINDOWS.items():
        hu = np.array([level - w / 2 - 10, level - w / 2, level, level + w / 2, level + w / 2 + 10])
        got = C.window_u8(hu, name)
        assert got[0] == got[1] == 0 and got[-1] == got[-2] == 255 and abs(int(got[2]) - 127) <= 1
    assert C.WINDOWS == {"soft": (400.0, 40.0), "lung": (1500.0, -600.0), "bone": (1800.0, 400.0)}


def test_crop_is_centred_on_the_box_and_padded_with_air_off_the_image():
    hu = _phantom()
    box = [72, 56, 88, 72]  # a 16-px box on the disc's centre
    out = C.crop_square(hu, box, 64)
    assert out.shape == (64, 64)
    # the centre of the crop is the disc's centre (soft tissue)
    assert abs(out[32, 32] - 40) < 1
    # a box at the corner: the square reaches off the image, which reads as air
    corner = C.crop_square(hu, [0, 0, 10, 10], 64)
    assert corner[0, 0] == pytest.approx(-1024, abs=1)
    whole = C.crop_square(hu, None, 80)
    assert whole.shape == (80, 80)


def test_box_lands_where_the_lesion_is_in_the_crop():
    hu = _phantom()
    box = [52, 56, 68, 72]  # the lung patch
    x1, y1, x2, y2 = C.box_in_crop(hu.shape, box, 100)
    crop = C.crop_square(hu, box, 100)
    inner = crop[int(y1) + 3:int(y2) - 2, int(x1) + 3:int(x2) - 2]
    assert inner.max() < -700  # inside the box: the lung patch


def test_render_draws_the_box_in_its_colour_and_only_then():
    hu = _phantom()
    plain = C.render_crop(hu, [72, 56, 88, 72], window="soft", size_px=96)
    boxed = C.render_crop(hu, [72, 56, 88, 72], window="soft", size_px=96, box_colour=(255, 170, 0))
    assert plain.shape == boxed.shape == (96, 96, 3) and plain.dtype == np.uint8
    assert np.array_equal(plain[:, :, 0], plain[:, :, 2])  # grey
    changed = np.any(plain != boxed, axis=2)
    assert changed.sum() > 100 and np.all(boxed[changed] == (255, 170, 0))
    with pytest.raises(ValueError):
        C.render_crop(hu, None, window="brain")


def test_windows_give_different_pixels():
    hu = _phantom()
    got = {w: C.render_crop(hu, [40, 40, 120, 90], window=w, size_px=64) for w in C.WINDOWS}
    assert len({g.tobytes() for g in got.values()}) == 3


@pytest.mark.skipif(not C.HAVE_PILLOW, reason="Pillow not installed: only pypng encodes")
def test_pillow_and_pypng_encode_the_same_pixels():
    rgb = C.render_crop(_phantom(), [72, 56, 88, 72], size_px=72, box_colour=(64, 220, 96))
    a, b = C.encode_png(rgb, use_pillow=True), C.encode_png(rgb, use_pillow=False)
    assert a[:8] == b[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(_decode(a), rgb) and np.array_equal(_decode(b), rgb)


def test_placeholder_is_a_png_of_the_size_asked():
    for size in (64, 160):
        img = _decode(C.placeholder_png(size, "image not found"))
        assert img.shape == (size, size, 3) and img.std() > 1


def test_geometry_version_changes_with_series_slice_or_box():
    v = C.geometry_version("R-1", 3, [1, 2, 3, 4])
    assert v == C.geometry_version("R-1", 3, [1.0, 2.0, 3.0, 4.0])
    assert len({v, C.geometry_version("R-2", 3, [1, 2, 3, 4]), C.geometry_version("R-1", 4, [1, 2, 3, 4]),
                C.geometry_version("R-1", 3, [1, 2, 3, 5])}) == 4


def test_cache_is_an_lru_bounded_by_bytes_over_a_private_folder(tmp_path):
    folder = tmp_path / "cache" / "crops"
    cache = C.CropCache(folder, max_bytes=250)
    keys = [C.CropKey("lesion", f"L-{i}", "", "soft", 64) for i in range(4)]
    for k in keys:
        cache.put(k, bytes(100))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert len(files) == 4 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not any(f.name.startswith(".") for f in files)  # no temporary file left
    assert len(cache._mem) == 2  # 250 bytes hold two entries of 100 in memory
    assert cache.get(keys[0]) == bytes(100)  # from the folder
    assert cache.get(C.CropKey("lesion", "L-9", "", "soft", 64)) is None
    assert (cache.hits, cache.misses) == (1, 1)
    memory_only = C.CropCache(None)
    memory_only.put(keys[0], b"x")
    assert memory_only.get(keys[0]) == b"x"
    assert memory_only.get(C.CropKey("lesion", "L-0", "", "lung", 64)) is None  # the window is in the key
