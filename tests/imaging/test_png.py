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

    raw = np.full((16, 16), 32768, dtype=np.uint16)  # the smallest slice read (limits.MIN_SIDE_PX)
    raw[:2, :3] = [[0, 32768, 33768], [31768, 65535, 32768 + 40]]
    p = tmp_path / "t.png"
    with open(p, "wb") as fh:
        png.Writer(width=16, height=16, greyscale=True, bitdepth=16).write(fh, raw.tolist())
    for use_pillow in (True, False):
        hu = P.read_slice(p, use_pillow=use_pillow)
        assert hu[:2, :3].tolist() == [[-32768, 0, 1000], [-1000, 32767, 40]] and hu.shape == (16, 16)


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
    stack = P.read_stack(images / folder, key, interval, offset_mm=2.0)
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
    s2 = P.read_stack(images / folder, key, interval, offset_mm=10.0)
    np.testing.assert_allclose(s2[0], P.read_slice(images / folder / f"{key - 2:03d}.png"))


def test_stack_at_series_edges_and_strict(images, tmp_path):
    folder = "series_000062_01_01"
    # Slice 056 is the first in the folder: the upper neighbour falls back to the key slice.
    s = P.read_stack(images / folder, 56, 5.0)
    np.testing.assert_allclose(s[0], s[1])
    assert not np.allclose(s[2], s[1])
    with pytest.raises(ImageError, match="neighbour slice 55"):
        P.read_stack(images / folder, 56, 5.0, strict=True)
    with pytest.raises(ImageError, match="key slice 50 not found"):
        P.read_stack(images / folder, 50, 5.0)
    # Images_png layout with a truncated neighbour.
    ser = tmp_path / "Images_png" / "000062_01_01"
    ser.mkdir(parents=True)
    for i in (61, 62, 63):
        shutil.copy(images / folder / f"{i:03d}.png", ser / f"{i:03d}.png")
    (ser / "063.png").write_bytes((images / folder / "063.png").read_bytes()[:5000])
    with pytest.raises(ImageError, match="063.png"):
        P.read_stack(ser, 62, 5.0, offset_mm=2.0)


def test_decoding_only_the_top_rows_gives_those_rows(images, tmp_path):
    for f in _all_pngs(images)[:6]:
        full = P.read_slice_raw(f)
        assert full.dtype == np.uint16 and full.shape == (512, 512)
        np.testing.assert_array_equal(P.to_hu(full), P.read_slice(f, use_pillow=False))
        for rows in (1, 137, 300, 511):
            np.testing.assert_array_equal(P.read_slice_raw(f, rows), full[:rows])
    # damage below the rows asked for is not read; above them it is reported, naming the file
    src = _all_pngs(images)[0]
    cut = tmp_path / "cut.png"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    np.testing.assert_array_equal(P.read_slice_raw(cut, 50), P.read_slice_raw(src, 50))
    with pytest.raises(ImageError, match="truncated") as ei:
        P.read_slice_raw(cut, 500)
    assert str(cut) in str(ei.value)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageError, match="junk.png"):
        P.read_slice_raw(tmp_path / "junk.png")


def _old_patch(root, folder, key, interval, box, spacing, spec):
    from lesiondb.imaging.patches import extract_patch

    return extract_patch(P.read_stack(root / folder, key, interval, spec.offset_mm), box, spacing, spec)


@pytest.mark.parametrize("interval", [5.0, 2.5, 1.0, 0.7])
def test_series_windows_give_the_patches_of_whole_slices(images, interval):
    """SeriesSlices (each file once, top rows only, the patch's window) = read_stack + extract_patch."""
    from lesiondb.imaging.patches import PatchSpec, extract_patch_from_window, source_window

    spec = PatchSpec()
    folder = "series_000062_01_01"
    series = P.SeriesSlices(images / folder)
    boxes = [(240.0, 250.0, 290.0, 300.0), (3.0, 2.0, 40.0, 30.0), (470.0, 480.0, 511.0, 511.0),
             (100.0, 60.0, 380.0, 330.0), (-4.0, 500.0, 30.0, 518.0)]  # centre, corners, huge, a bit past
    with pytest.raises(ImageError, match="outside the 512×512 image"):  # a box of another image
        source_window((600.0, 600.0, 620.0, 630.0), (0.7, 0.8), spec, (512, 512))
    cases = [(key, box) for key in (56, 62, 71, 84) for box in boxes]
    plans = []
    for key, box in cases:
        slots = series.plan(key, interval, spec.offset_mm)
        assert abs(sum(w for _, w in slots[0]) - 1) < 1e-9 and slots[1] == [(key, 1.0)]
        win = source_window(box, (0.7, 0.8), spec, series.check_shapes({i for s in slots for i, _ in s}, key))
        for s in slots:
            for i, _ in s:
                series.need(i, win[1], win[3])
        plans.append((key, box, slots, win))
    for key, box, slots, (ya, yb, xa, xb) in plans:
        got = extract_patch_from_window(series.window(slots, ya, yb, xa, xb), (ya, xa), box, (0.7, 0.8), spec)
        ref = _old_patch(images, folder, key, interval, box, (0.7, 0.8), spec)
        np.testing.assert_allclose(got.image, ref.image, atol=1e-6, err_msg=f"{key} {box}")
        np.testing.assert_allclose(got.box_px, ref.box_px, atol=1e-6)
    # every file decoded once, and only as far down as some lesion needed
    needed = {i for *_, slots, _ in plans for s in slots for i, _ in s}
    assert series.decodes == len(needed)
    # a lesion near the top needs only the top rows: no more are decoded
    top = P.SeriesSlices(images / folder)
    slots = top.plan(62, interval, spec.offset_mm)
    ya, yb, xa, xb = source_window((200.0, 20.0, 220.0, 40.0), (0.7, 0.8), spec, (512, 512))
    for s in slots:
        for i, _ in s:
            top.need(i, yb, xb)
    top.window(slots, ya, yb, xa, xb)
    assert yb < 200 and all(top.pixels(i).shape[0] == yb and top.pixels(i).shape[1] >= xb
                            for s in slots for i, _ in s)


def test_series_plan_errors_and_edges(images):
    series = P.SeriesSlices(images / "series_000062_01_01")
    # slice 056 is the folder's first: the upper neighbour falls back to the key slice (as read_stack)
    up = series.plan(56, 5.0, 2.0)[0]
    assert {i for i, _ in up} == {56} and abs(sum(w for _, w in up) - 1) < 1e-12
    assert [i for i, _ in series.plan(60, 5.0, 2.0)[2]] == [60, 61]
    with pytest.raises(ImageError, match="neighbour slice 55"):
        series.plan(56, 5.0, 2.0, strict=True)
    with pytest.raises(ImageError, match="key slice 50 not found"):
        series.plan(50, 5.0, 2.0)
    with pytest.raises(ImageError, match="positive"):
        series.plan(60, 0.0, 2.0)


def test_optional_fast_decoder_equals_pillow(images, tmp_path, monkeypatch):
    """lesiondb[fast-png] (ISA-L + numba): the same values as Pillow, errors the same way."""
    fast = pytest.importorskip("lesiondb.imaging._png_fast", reason="isal and numba not installed")
    for f in _all_pngs(images):
        pf = P.PngFile(f)
        monkeypatch.setattr(P, "_FAST", False)  # Pillow
        ref = pf.decode()
        monkeypatch.setattr(P, "_FAST", fast)
        np.testing.assert_array_equal(pf.decode(), ref, err_msg=str(f))
        np.testing.assert_array_equal(pf.decode(200), ref[:200])
        np.testing.assert_array_equal(pf.decode(300, cols=77), ref[:300, :77])  # left columns only
    monkeypatch.setattr(P, "_FAST", fast)
    src = _all_pngs(images)[0]
    cut = tmp_path / "cut.png"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated") as ei:
        P.read_slice_raw(cut)
    assert str(cut) in str(ei.value)
    data = bytearray(src.read_bytes())
    data[2000:2400] = bytes(400)  # zeroed compressed data
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="bad.png"):
        P.read_slice_raw(bad)
    # every filter type, on a synthetic image pypng writes with each
    import png

    raw = (np.arange(40 * 17, dtype=np.uint32).reshape(17, 40) * 2654435761 % 65536).astype(np.uint16)
    for ft in range(5):
        p = tmp_path / f"f{ft}.png"
        with open(p, "wb") as fh:
            png.Writer(width=40, height=17, greyscale=True, bitdepth=16).write_array(fh, raw.ravel())
        filtered = tmp_path / f"g{ft}.png"
        _rewrite_with_filter(p, filtered, ft)
        np.testing.assert_array_equal(P.read_slice_raw(filtered), raw)


def _rewrite_with_filter(src, dst, ft):
    """A copy of a 16-bit grey PNG whose rows all use PNG filter type ``ft``."""
    import struct
    import zlib

    pf = P.PngFile(src)
    rows = P.read_slice_raw(src).astype(">u2").view(np.uint8).reshape(pf.height, -1).astype(np.int32)
    out = bytearray()
    prev = np.zeros(rows.shape[1], np.int32)
    for r in rows:
        a = np.concatenate([[0, 0], r[:-2]])
        c = np.concatenate([[0, 0], prev[:-2]])
        if ft == 0:
            f = r
        elif ft == 1:
            f = r - a
        elif ft == 2:
            f = r - prev
        elif ft == 3:
            f = r - (a + prev) // 2
        else:
            p = a + prev - c
            pa, pb, pc = np.abs(p - a), np.abs(p - prev), np.abs(p - c)
            f = r - np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prev, c))
        out += bytes([ft]) + (f % 256).astype(np.uint8).tobytes()
        prev = r

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    ihdr = struct.pack(">IIBBBBB", pf.width, pf.height, 16, 0, 0, 0, 0)
    dst.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out)))
                    + chunk(b"IEND", b""))


def test_top_rows_read_only_the_start_of_the_file(images, monkeypatch):
    """Decoding the top rows reads the file only as far as their data (in blocks), and the values
    equal those of a whole-file decode; a later decode of more rows reads on."""
    reads = []
    real_read = P.PngFile._read

    def spy(self, offset, size):
        data = real_read(self, offset, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(P.PngFile, "_read", spy)
    for f in _all_pngs(images)[:6]:
        full = P.PngFile(f).decode()
        assert sum(reads) >= f.stat().st_size - 64  # whole decode: read to the end (IEND may be skipped)
        reads.clear()
        small_block = P.PngFile.BLOCK_BYTES
        monkeypatch.setattr(P.PngFile, "BLOCK_BYTES", 8192)  # several blocks even for the top rows
        pf = P.PngFile(f)
        top = pf.decode(64)
        assert sum(reads) < f.stat().st_size / 2, (f, sum(reads))
        np.testing.assert_array_equal(top, full[:64])
        np.testing.assert_array_equal(pf.decode(400), full[:400])  # reads on from where it stopped
        np.testing.assert_array_equal(pf.decode(), full)
        monkeypatch.setattr(P.PngFile, "BLOCK_BYTES", small_block)
        reads.clear()
