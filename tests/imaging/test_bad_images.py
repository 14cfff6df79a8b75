"""Bad-input suite for the image readers (issue #15): malformed variants of real DeepLesion PNGs and
real CT DICOMs — truncated files, files that are not images, wrong bit depth or colour, sizes no CT
slice has (a 20000 × 20000 "decompression bomb"), corrupt data, missing or absurd header fields,
inconsistent series, a lesion box outside its image.

For every variant each reader that may meet it (the slice reader with either decoder, the ingest's
series reader, ``lesiondb similar --image``'s region reader; for DICOM the header, series and lazy
readers) raises :class:`ImageError` naming the file (or skips the file and says why), never another
exception; headers that cannot be a CT slice are refused before a pixel is decoded.
"""
from __future__ import annotations

import io
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lesiondb.embedding.region import region_patch
from lesiondb.errors import ImageError, InputError
from lesiondb.imaging import dicom as D
from lesiondb.imaging import png as P
from lesiondb.imaging.limits import MAX_DICOM_FILE_BYTES
from lesiondb.imaging.patches import PatchSpec, source_window

SPEC = PatchSpec()


# -- PNG helpers ---------------------------------------------------------------------------------------------
def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos + 8 <= len(data):
        n, t = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((t, data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(P._SIGNATURE)
    for t, body in chunks:
        out += struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))
    return bytes(out)


def _with_ihdr(data: bytes, **fields) -> bytes:
    chunks = _chunks(data)
    w, h, depth, colour, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
    vals = dict(width=w, height=h, depth=depth, colour=colour)
    vals.update(fields)
    ihdr = struct.pack(">IIBBBBB", vals["width"], vals["height"], vals["depth"], vals["colour"], comp, filt, inter)
    return _png([(b"IHDR", ihdr)] + chunks[1:])


def _pypng(arr: np.ndarray, **kw) -> bytes:
    import png

    buf = io.BytesIO()
    png.Writer(width=arr.shape[1], height=arr.shape[0], **kw).write(buf, arr.reshape(arr.shape[0], -1).tolist())
    return buf.getvalue()


def _grey16(hu: np.ndarray) -> bytes:
    return _pypng((hu.astype(np.int32) + P.HU_OFFSET).astype(np.uint16), greyscale=True, bitdepth=16)


PngBuild = Callable[[bytes, np.ndarray], bytes]


def _truncate(frac: float) -> PngBuild:
    return lambda data, hu: data[:max(1, int(len(data) * frac))]


def _corrupt(kind: str) -> PngBuild:
    def build(data, hu):
        b = bytearray(data)
        mid = len(b) // 2
        if kind == "zeroed":
            b[mid:mid + 400] = bytes(400)
        elif kind == "random":
            b[mid:mid + 400] = np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes()
        elif kind == "idat-replaced-by-text":
            return _png([c if c[0] != b"IDAT" else (b"IDAT", b"not deflate data at all") for c in _chunks(data)])
        return bytes(b)
    return build


PNG_VARIANTS: dict[str, tuple[PngBuild, str]] = {
    "truncated-in-ihdr": (_truncate(0.0001), "truncated|no IHDR|not a PNG"),
    "truncated-before-idat": (lambda d, hu: d[:33], "no IDAT"),
    "truncated-2pc": (_truncate(0.02), "truncated"),
    "truncated-30pc": (_truncate(0.3), "truncated"),
    "truncated-60pc": (_truncate(0.6), "truncated"),
    "truncated-95pc": (_truncate(0.95), "truncated"),
    "empty-file": (lambda d, hu: b"", "not a PNG"),
    "text-file": (lambda d, hu: b"File_name,Patient_index\n", "not a PNG"),
    "jpeg-bytes": (lambda d, hu: b"\xff\xd8\xff\xe0" + bytes(2000), "not a PNG"),
    "dicom-bytes": (lambda d, hu: bytes(128) + b"DICM" + bytes(500), "not a PNG"),
    "grey-8-bit": (lambda d, hu: _pypng(np.clip(hu // 8 + 128, 0, 255).astype(np.uint8), greyscale=True,
                                        bitdepth=8), "16-bit greyscale"),
    "grey-1-bit": (lambda d, hu: _pypng((hu > 0).astype(np.uint8), greyscale=True, bitdepth=1), "16-bit greyscale"),
    "rgb-16-bit": (lambda d, hu: _pypng(np.repeat((hu.astype(np.int32) + 32768)[..., None], 3, -1).astype(np.uint16),
                                        greyscale=False, bitdepth=16), "16-bit greyscale"),
    "rgba-8-bit": (lambda d, hu: _pypng(np.zeros((64, 64, 4), np.uint8), greyscale=False, alpha=True, bitdepth=8),
                   "16-bit greyscale"),
    "grey-alpha-16-bit": (lambda d, hu: _pypng(np.zeros((64, 64, 2), np.uint16), greyscale=True, alpha=True,
                                               bitdepth=16), "16-bit greyscale"),
    "palette": (lambda d, hu: _pypng(np.zeros((64, 64), np.uint8), palette=[(0, 0, 0), (255, 255, 255)], bitdepth=8),
                "16-bit greyscale"),
    "header-20000x20000": (lambda d, hu: _with_ihdr(d, width=20000, height=20000), "20000×20000 pixels: not a CT slice"),
    "header-100000x1": (lambda d, hu: _with_ihdr(d, width=1, height=100000), "not a CT slice"),
    "header-4097-wide": (lambda d, hu: _with_ihdr(d, width=4097), "not a CT slice"),
    "header-4097-high": (lambda d, hu: _with_ihdr(d, height=4097), "not a CT slice"),
    "header-0x0": (lambda d, hu: _with_ihdr(d, width=0, height=0), "not a CT slice"),
    "header-8x8": (lambda d, hu: _with_ihdr(d, width=8, height=8), "not a CT slice"),
    "header-bit-depth-8": (lambda d, hu: _with_ihdr(d, depth=8), "16-bit greyscale"),
    "header-colour-type-2": (lambda d, hu: _with_ihdr(d, colour=2), "16-bit greyscale"),
    "header-short-ihdr": (lambda d, hu: _png([(b"IHDR", b"\x00\x00\x02")] + _chunks(d)[1:]), "no IHDR"),
    "corrupt-zeroed": (_corrupt("zeroed"), "unreadable|truncated"),
    "corrupt-random": (_corrupt("random"), "unreadable|truncated"),
    "corrupt-idat-text": (_corrupt("idat-replaced-by-text"), "unreadable|truncated"),
}


@pytest.fixture(scope="module")
def key_slice(shared_data):
    root = shared_data / "deeplesion_images" / "key_slices"
    files = sorted(root.glob("*/*.png")) if root.is_dir() else []
    if not files:
        pytest.skip(f"no DeepLesion key slices under {root}")
    return files[0], files[0].read_bytes(), P.read_slice(files[0])


def _expect_image_error(fn, path: Path, pattern: str) -> ImageError:
    with pytest.raises(InputError) as err:
        fn()
    msg = str(err.value)
    assert str(path) in msg or path.name in msg, msg
    import re

    assert re.search(pattern, msg), (pattern, msg)
    return err.value


@pytest.mark.parametrize("name", sorted(PNG_VARIANTS))
def test_png_variant(name, key_slice, tmp_path):
    src, data, hu = key_slice
    build, pattern = PNG_VARIANTS[name]
    folder = tmp_path / "000001_01_01"
    folder.mkdir()
    path = folder / "010.png"
    path.write_bytes(build(data, hu))
    _expect_image_error(lambda: P.read_slice(path, use_pillow=True), path, pattern)
    _expect_image_error(lambda: P.read_slice(path, use_pillow=False), path, pattern)
    # the ingest's series reader: the lesion whose key slice it is gets the error
    series = P.SeriesSlices(folder)

    def ingest_read():  # a lesion low in the image: its patch needs (nearly) every row
        slots = series.plan(10, 5.0, SPEC.offset_mm)
        shape = series.check_shapes({i for s in slots for i, _ in s}, 10)
        win = source_window((100, 470, 140, 505), (0.7, 0.7), SPEC, shape)
        series.need(10, win[1], win[3])
        series.pixels(10)

    _expect_image_error(ingest_read, path, pattern)
    # `lesiondb similar --image FILE --box …`
    _expect_image_error(lambda: region_patch(path, (100, 100, 140, 130), SPEC, spacing_mm=(0.7, 0.7)), path, pattern)


def test_decompression_bomb_is_refused_from_its_header_without_decoding(key_slice, tmp_path, monkeypatch):
    """A 20000 × 20000 PNG (a few kB on disk, 800 MB decoded): refused by its header, nothing inflated,
    only the file's first block read, in each reader."""
    _, data, _ = key_slice
    bomb_data = zlib.compress(b"\x00" * (1 << 22), 9)  # zeros: tiny on disk, huge once inflated
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 16, 0, 0, 0, 0)
    path = tmp_path / "000001_01_01" / "010.png"
    path.parent.mkdir()
    path.write_bytes(_png([(b"IHDR", ihdr), (b"IDAT", bomb_data), (b"IEND", b"")]))

    def never(*a, **kw):
        raise AssertionError("decoder called on a refused image")

    for fn in ("_decode_pillow", "_decode_pypng", "_inflate_rows"):
        monkeypatch.setattr(P, fn, never)
    monkeypatch.setattr(P, "fast_decoder", never)
    monkeypatch.setattr(zlib, "decompressobj", never)
    read = []
    real_read = P.PngFile._read

    def counting(self, offset, size):
        out = real_read(self, offset, size)
        read.append(len(out))
        return out

    monkeypatch.setattr(P.PngFile, "_read", counting)
    for call in (lambda: P.read_slice(path), lambda: P.read_slice(path, use_pillow=False),
                 lambda: P.SeriesSlices(path.parent).file(10),
                 lambda: region_patch(path, (10, 10, 50, 50), SPEC, spacing_mm=(0.8, 0.8)),
                 lambda: P.read_series_slab(path.parent)):
        _expect_image_error(call, path, "20000×20000 pixels: not a CT slice")
    assert read and max(read) <= P.PngFile.BLOCK_BYTES


def test_series_with_a_slice_of_another_size(key_slice, tmp_path):
    """The neighbour of a 512 × 512 key slice is 256 × 256: the lesion gets the error naming it."""
    src, data, hu = key_slice
    folder = tmp_path / "000001_01_01"
    folder.mkdir()
    (folder / "010.png").write_bytes(data)
    (folder / "011.png").write_bytes(_grey16(hu[::2, ::2]))
    series = P.SeriesSlices(folder)
    slots = series.plan(10, 1.0, 2.0)
    _expect_image_error(lambda: series.check_shapes({i for s in slots for i, _ in s}, 10), folder / "011.png",
                        r"slice 11 is \(256, 256\), key slice is \(512, 512\)")
    _expect_image_error(lambda: P.read_stack(folder, 10, 1.0), folder / "011.png", "slice 11 is")
    _expect_image_error(lambda: P.read_series_slab(folder), folder / "011.png", "256×256")


def test_key_slice_smaller_than_its_lesion_box(key_slice, dl_info, tmp_path):
    """A 256 × 256 key slice whose DL_info box (drawn on the 512 × 512 original) lies outside it:
    a problem for that lesion, not a patch of air."""
    src, data, hu = key_slice
    import csv

    fname = f"{src.parent.name}_{src.name}"
    with open(dl_info, newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["File_name"] == fname)
    box = tuple(float(v) for v in row["Bounding_boxes"].split(","))
    spacing = tuple(float(v) for v in row["Spacing_mm_px_"].split(",")[:2])
    assert max(box[2], box[3]) > 256 + 8, "pick a key slice whose box lies outside a 256² crop"
    small = tmp_path / src.parent.name / src.name
    small.parent.mkdir()
    small.write_bytes(_grey16(hu[::2, ::2]))
    _expect_image_error(lambda: region_patch(small, box, SPEC, spacing_mm=spacing), small, "outside the 256×256 image")
    series = P.SeriesSlices(small.parent)
    key = int(src.stem)
    shape = series.check_shapes({key}, key)
    with pytest.raises(ImageError, match="lies outside the 256×256 image"):
        source_window(box, spacing, SPEC, shape)
    # the real 512 × 512 slice with the same box is fine
    source_window(box, spacing, SPEC, P.PngFile(src).shape)


# -- DICOM ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct_small(shared_data):
    p = shared_data / "ct_dicom" / "pydicom" / "CT_small.dcm"
    if not p.is_file():
        pytest.skip(f"{p} is missing")
    return p


@pytest.fixture(scope="module")
def ct_series(shared_data):
    p = shared_data / "ct_dicom" / "pydicom" / "dicomdirtests_98892001_CT5N"
    if not p.is_dir():
        pytest.skip(f"{p} is missing")
    return p


def _edit(fn) -> Callable:
    def build(src: Path, dst: Path) -> None:
        import pydicom

        ds = pydicom.dcmread(str(src))
        fn(ds)
        ds.save_as(str(dst))
    return build


def _bytes_of(fn) -> Callable:
    def build(src: Path, dst: Path) -> None:
        dst.write_bytes(fn(src.read_bytes()))
    return build


def _set(**kw):
    def fn(ds):
        for k, v in kw.items():
            setattr(ds, k, v)
    return fn


def _delete(*names):
    def fn(ds):
        for n in names:
            delattr(ds, n)
    return fn


def _huge(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())
    with open(dst, "r+b") as fh:  # sparse: no disk used
        fh.truncate(MAX_DICOM_FILE_BYTES + 1)


DICOM_VARIANTS: dict[str, tuple[Callable, str]] = {
    "truncated-5pc": (_bytes_of(lambda b: b[:len(b) // 20]), "truncated|not a DICOM|unreadable"),
    "truncated-30pc": (_bytes_of(lambda b: b[:len(b) * 3 // 10]), "truncated|no pixel data|unreadable|cannot decode"),
    "truncated-60pc": (_bytes_of(lambda b: b[:len(b) * 6 // 10]), "truncated|unreadable|cannot decode"),
    "truncated-in-pixels": (_bytes_of(lambda b: b[:len(b) - 3000]), "truncated|unreadable|cannot decode"),
    "empty-file": (_bytes_of(lambda b: b""), "not a DICOM|unreadable"),
    "text-file": (_bytes_of(lambda b: b"this is not a dicom file\n" * 20), "not a DICOM|unreadable"),
    "png-bytes": (_bytes_of(lambda b: P._SIGNATURE + bytes(600)), "not a DICOM|unreadable"),
    "too-large-file": (_huge, "too large for one CT slice"),
    "rows-20000": (_edit(_set(Rows=20000, Columns=20000)), "20000×20000 pixels: not a CT slice"),
    "rows-8": (_edit(_set(Rows=8)), "not a CT slice"),
    "rows-0": (_edit(_set(Rows=0)), "bad image size"),
    "bits-allocated-12": (_edit(_set(BitsAllocated=12)), "BitsAllocated 12"),
    "bits-allocated-64": (_edit(_set(BitsAllocated=64)), "BitsAllocated 64"),
    "modality-mr": (_edit(_set(Modality="MR")), "modality MR is not CT"),
    "secondary-capture": (_edit(_set(SOPClassUID="1.2.840.10008.5.1.4.1.1.7")), "secondary capture"),
    "multi-frame": (_edit(_set(NumberOfFrames=3)), "multi-frame"),
    "colour": (_edit(_set(SamplesPerPixel=3, PhotometricInterpretation="RGB")), "colour image"),
    "no-pixel-spacing": (_edit(_delete("PixelSpacing")), "no PixelSpacing"),
    "zero-pixel-spacing": (_edit(_set(PixelSpacing=[0, 0])), "must be positive"),
    "no-position": (_edit(_delete("ImagePositionPatient")), "no ImagePositionPatient"),
    "bad-orientation": (_edit(_set(ImageOrientationPatient=[1, 0, 0, 1, 0, 0])), "not two orthogonal unit vectors"),
    "no-pixel-data": (_edit(_delete("PixelData")), "no pixel data"),
    "short-pixel-data": (_edit(lambda ds: setattr(ds, "PixelData", ds.PixelData[:len(ds.PixelData) // 2])),
                         "truncated|cannot decode"),
    "no-series-uid": (_edit(_delete("SeriesInstanceUID")), "no SeriesInstanceUID"),
}


@pytest.mark.parametrize("name", sorted(DICOM_VARIANTS))
def test_dicom_variant(name, ct_small, tmp_path):
    build, pattern = DICOM_VARIANTS[name]
    folder = tmp_path / "series"
    folder.mkdir()
    path = folder / "IM0001"
    build(ct_small, path)
    # the series readers: the file is skipped with its reason, or its decode error names it
    for read in (lambda: D.read_series(folder), lambda: D.read_series(path),
                 lambda: D.read_series_lazy(folder).slice_hu(0)):
        _expect_image_error(read, path, pattern)
    # a good file beside it still reads; the bad one is listed with its reason or named when used
    shutil.copy(ct_small, folder / "IM0000")
    try:
        vol = D.read_series(folder, allow_gaps=True)
    except ImageError as exc:  # the bad file reads as the same series and breaks its geometry
        assert path.name in str(exc) or str(path) in str(exc), str(exc)
    else:
        reasons = {Path(k).name: r for k, r in vol.skipped_files.items()}
        reasons.update({Path(vol.files[i]).name if vol.files[i] else "?": r for i, r in vol.bad_slices.items()})
        assert vol.n_slices >= 1 and "IM0001" in reasons or "IM0001" in " ".join(reasons.values()), reasons


def _copy_series(src: Path, dst: Path) -> list[Path]:
    dst.mkdir()
    out = []
    for f in sorted(src.iterdir()):
        if f.is_file() and D.is_candidate_name(f.name):
            shutil.copy(f, dst / f.name)
            out.append(dst / f.name)
    return out


def _positions(files):
    import pydicom

    return [pydicom.dcmread(str(f), stop_before_pixels=True).ImagePositionPatient for f in files]


SERIES_VARIANTS: dict[str, tuple[Callable, str]] = {}


def _series_variant(name, pattern):
    def deco(fn):
        SERIES_VARIANTS[name] = (fn, pattern)
        return fn
    return deco


def _edit_file(f: Path, fn) -> None:
    import pydicom

    ds = pydicom.dcmread(str(f))
    fn(ds)
    ds.save_as(str(f))


@_series_variant("other-pixel-spacing", "pixel spacing .* differs")
def _(files):
    _edit_file(files[2], _set(PixelSpacing=[0.5, 0.5]))
    return files[2]


@_series_variant("other-orientation", "orientation .* differs")
def _(files):
    _edit_file(files[2], _set(ImageOrientationPatient=[0, 1, 0, 0, 0, -1]))
    return files[2]


@_series_variant("other-image-size", "image size 32×32 differs")
def _(files):
    def fn(ds):
        ds.Rows = ds.Columns = 32
        ds.PixelData = np.zeros((32, 32), np.int16).tobytes()
    _edit_file(files[2], fn)
    return files[2]


@_series_variant("two-slices-at-one-position", "two slices at the same position")
def _(files):
    pos = _positions(files)
    _edit_file(files[3], _set(ImagePositionPatient=list(pos[2])))
    return files[3]


@_series_variant("off-grid-slice", "inconsistent slice spacing")
def _(files):
    import pydicom

    ds = pydicom.dcmread(str(files[2]))
    p = [float(v) for v in ds.ImagePositionPatient]
    ps = [[float(v) for v in q] for q in _positions(files)]
    step = np.asarray(ps[1]) - np.asarray(ps[0])
    _edit_file(files[2], _set(ImagePositionPatient=list(np.asarray(p) + 0.4 * step)))
    return files[2]


@_series_variant("second-series-mixed-in", "2 series in one input")
def _(files):
    _edit_file(files[1], _set(SeriesInstanceUID="1.2.3.4.5.6.7.8.9"))
    return None


@_series_variant("all-files-garbage", "no readable CT slice")
def _(files):
    for f in files:
        f.write_bytes(b"garbage" * 10)
    return None


@pytest.mark.parametrize("name", sorted(SERIES_VARIANTS))
def test_inconsistent_series_variant(name, ct_series, tmp_path):
    files = _copy_series(ct_series, tmp_path / "s")
    build, pattern = SERIES_VARIANTS[name]
    named = build(files)
    for read in (lambda: D.read_series(tmp_path / "s"), lambda: D.read_series_lazy(tmp_path / "s")):
        err = _expect_image_error(read, named or tmp_path / "s", pattern)
        assert isinstance(err, ImageError)


def test_series_that_lost_slices_reads_with_gaps_and_names_them(ct_series, tmp_path):
    """A lost file in the middle: an error without allow_gaps; with it, the slice is listed missing."""
    files = _copy_series(ct_series, tmp_path / "s")
    before = D.read_series(tmp_path / "s")
    lost = before.files[2]
    Path(lost).unlink()
    _expect_image_error(lambda: D.read_series(tmp_path / "s"), tmp_path / "s", "inconsistent slice spacing")
    vol = D.read_series(tmp_path / "s", allow_gaps=True)
    assert vol.missing_slices == (2,) and "missing" in vol.slice_problem(2)
    assert len(files) == before.n_slices


N_VARIANTS = len(PNG_VARIANTS) + len(DICOM_VARIANTS) + len(SERIES_VARIANTS) + 4
