"""DeepLesion's 16-bit PNG slices: ``Images_png/PPPPPP_SS_RR/KKK.png``, HU = stored value − 32768.

Every reader parses the PNG header first and refuses what cannot be a DeepLesion slice (16-bit
grey, each side 16–4096 pixels: :mod:`lesiondb.imaging.limits`) before decoding a pixel.
``read_slice`` reads one slice in HU; ``read_stack`` builds the 3-slice input of the lesion
embedding (the key slice and the slices ``offset_mm`` above and below it, linearly interpolated
from the neighbouring files with the series' slice interval). :class:`SeriesSlices` is the
ingest's reader: each file of a series read once for all of its lesions, and only its top rows
``0:rows`` decoded (a PNG cannot skip rows, but it can stop early).

Pillow decodes when it is importable (about 20× faster); pypng, a declared dependency, otherwise.
Both give the same values (tested). Pillow is driven directly (its ``zip`` decoder on the file's
IDAT data): that is what lets decoding stop after the rows a patch needs.
"""
from __future__ import annotations

import math
import os
import struct
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..datasets.deeplesion import slice_file
from ..errors import ImageError
from .limits import PNG_BIT_DEPTH, check_slice_size

#: DeepLesion stores HU + 32768 as unsigned 16-bit.
HU_OFFSET = 32768
PIP_FIX = "re-download or re-extract the DeepLesion Images_png zip that holds it"


def _decode_pillow(path: Path) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - optional fast path

    with Image.open(path) as im:
        if im.format != "PNG":
            raise ImageError(f"not a PNG file (Pillow sees {im.format})", str(path))
        if im.mode not in ("I;16", "I;16B", "I"):
            raise ImageError(f"expected a 16-bit greyscale PNG, got mode {im.mode!r}", str(path))
        im.load()
        arr = np.asarray(im)
    return arr.astype(np.int32)


def _decode_pypng(path: Path) -> np.ndarray:
    import png  # pypng

    try:
        width, height, pixels, info = png.Reader(filename=str(path)).read_flat()
    except png.Error as exc:
        raise ImageError(f"unreadable or truncated PNG ({type(exc).__name__}: {exc}); {PIP_FIX}",
                         str(path)) from exc
    if not info.get("greyscale") or info.get("alpha") or info.get("bitdepth") != 16:
        raise ImageError(
            f"expected a 16-bit greyscale PNG, got bitdepth {info.get('bitdepth')}, "
            f"greyscale={info.get('greyscale')}, alpha={info.get('alpha')}", str(path))
    return np.asarray(pixels, dtype=np.int32).reshape(height, width)


def read_slice(path: str | Path, *, use_pillow: bool | None = None) -> np.ndarray:
    """One DeepLesion slice as int16 HU, shape (rows, cols).

    Raises :class:`ImageError` (naming the file) when it is missing, truncated or not 16-bit grey.
    ``use_pillow=None`` picks Pillow when installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError("slice file not found", str(path))
    if use_pillow is None:
        use_pillow = _have_pillow()
    if use_pillow:
        return to_hu(read_slice_raw(path))
    PngFile(path)  # the header first: size, bit depth and colour type checked before decoding
    try:
        raw = _decode_pypng(path)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise ImageError(f"unreadable or truncated PNG ({exc}); {PIP_FIX}", str(path)) from exc
    return (raw - HU_OFFSET).astype(np.int16)


def to_hu(raw: np.ndarray) -> np.ndarray:
    """Stored uint16 → int16 HU (value − 32768: flipping the top bit, no arithmetic)."""
    return (np.asarray(raw, dtype=np.uint16) ^ np.uint16(0x8000)).view(np.int16)


# -- the direct Pillow decoder --------------------------------------------------------------------------
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngFile:
    """One PNG file's bytes, parsed: size, format and the concatenated IDAT (zlib) data.

    Raises :class:`ImageError` naming the file when it is missing, not a PNG, truncated before
    its image data, or not 16-bit greyscale.
    """

    __slots__ = ("path", "width", "height", "bit_depth", "colour_type", "interlace", "_buf", "_off", "_skip",
                 "_eof", "_ended", "_ihdr", "_pieces")

    #: The file is read in blocks, only as far as a decode needs: the first block holds the header
    #: and the data of the top rows, and a patch's rows end, on average, well before the file.
    BLOCK_BYTES = 65536

    def __init__(self, path: str | Path):
        self.path = Path(path)
        head = self._read(0, self.BLOCK_BYTES)
        if head[:8] != _SIGNATURE:
            raise ImageError(f"not a PNG file (no PNG signature); {PIP_FIX}", str(self.path))
        self._buf, self._off, self._skip = head[8:], len(head), 0  # unparsed bytes; file offset read to
        self._eof = len(head) < self.BLOCK_BYTES
        self._ended = False  # every chunk up to IEND (or the end of the file) parsed
        self._ihdr: tuple | None = None
        self._pieces: list[bytes] = []  # IDAT payloads parsed so far, in order
        self._parse()
        self._ended = self._ended or self._eof
        while (self._ihdr is None or not self._pieces) and not self._ended:
            self._fill()
        if self._ihdr is None or not self._pieces:
            raise ImageError(f"unreadable or truncated PNG (no {'IHDR' if self._ihdr is None else 'IDAT'} chunk); "
                             f"{PIP_FIX}", str(self.path))
        self.width, self.height, self.bit_depth, self.colour_type, _, _, self.interlace = self._ihdr

    def _check_ihdr(self) -> None:
        """Refuse, from the header alone, what cannot be a DeepLesion slice."""
        width, height, bit_depth, colour_type = self._ihdr[:4]
        if bit_depth != PNG_BIT_DEPTH or colour_type != 0:
            raise ImageError(f"expected a 16-bit greyscale PNG, got bitdepth {bit_depth}, colour type "
                             f"{colour_type}", str(self.path))
        check_slice_size(height, width, str(self.path))

    def _read(self, offset: int, size: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                if offset:
                    fh.seek(offset)
                return fh.read(size)
        except FileNotFoundError:
            raise ImageError("slice file not found", str(self.path)) from None
        except OSError as exc:
            raise ImageError(f"unreadable file ({exc})", str(self.path)) from exc

    def _fill(self) -> None:
        """Read the next block and parse the chunks it completes."""
        more = self._read(self._off, self.BLOCK_BYTES)
        self._off += len(more)
        self._eof = len(more) < self.BLOCK_BYTES
        if self._skip:  # the end of the last chunk's CRC
            cut = min(self._skip, len(more))
            more, self._skip = more[cut:], self._skip - cut
        self._buf += more
        self._parse()
        if self._eof:
            self._ended = True

    def _parse(self) -> None:
        buf, pos = self._buf, 0
        while pos + 8 <= len(buf):
            length, ctype = struct.unpack(">I4s", buf[pos:pos + 8])
            if ctype == b"IEND":
                self._ended = True
                break
            end = pos + 8 + length
            if end > len(buf):
                if self._eof and ctype == b"IDAT" and end > pos + 8:  # truncated file: keep what there is
                    self._pieces.append(buf[pos + 8:])
                    pos = len(buf)
                break
            if ctype == b"IHDR":
                if length < 13:
                    self._ended = True
                    break
                self._ihdr = struct.unpack(">IIBBBBB", buf[pos + 8:pos + 21])
                self._check_ihdr()  # before reading any image data
            elif ctype == b"IDAT":
                self._pieces.append(buf[pos + 8:end])
            pos = end + 4  # + CRC
        if pos > len(buf):
            self._skip, pos = pos - len(buf), len(buf)
        self._buf = buf[pos:]

    def idat_pieces(self):
        """The image data (IDAT payloads, in order); the file is read only as far as consumed."""
        i = 0
        while True:
            while i < len(self._pieces):
                yield self._pieces[i]
                i += 1
            if self._ended:
                return
            self._fill()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def decode(self, rows: int | None = None, *, native: bool = True, cols: int | None = None) -> np.ndarray:
        """The stored values of rows ``0:rows`` (all by default): uint16 (rows, width).

        Only those rows are inflated and unfiltered; damage below them goes unnoticed.
        ``native=False`` allows big-endian uint16 (no byte-swapping copy of the whole slice, for
        callers that convert only a window of it). ``cols``: only columns ``0:cols`` are needed;
        the optional fast decoder then unfilters only those (the result may be narrower).
        """
        rows = self.height if rows is None else max(1, min(int(rows), self.height))
        if self.interlace or not _have_pillow():  # Adam7 stores rows out of order: decode it all
            try:
                full = _decode_pillow(self.path) if _have_pillow() else _decode_pypng(self.path)
            except ImageError:
                raise
            except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
                raise ImageError(f"unreadable or truncated PNG ({exc}); {PIP_FIX}", str(self.path)) from exc
            return full.astype(np.uint16)[:rows]
        fast = fast_decoder()
        try:
            if fast is not None:
                return fast.decode_grey16(self.idat_pieces(), self.width, rows, native, cols)
            from PIL import Image  # noqa: PLC0415 - the fast path needs Pillow

            return np.asarray(_inflate_rows(Image, self.width, rows, self.idat_pieces()))
        except (ValueError, OSError, zlib.error) as exc:
            why = "truncated" if "not enough" in str(exc) else "corrupt"
            raise ImageError(f"unreadable or truncated PNG (image data {why}: {exc}); {PIP_FIX}",
                             str(self.path)) from exc


_FAST: object = None  # the optional decoder module, False when unavailable or switched off


def fast_decoder():
    """The optional ISA-L + numba decoder (``lesiondb[fast-png]``) when installed and not switched
    off by ``LESIONDB_PNG_DECODER=pillow``; None otherwise (Pillow decodes)."""
    global _FAST
    if _FAST is None:
        _FAST = False
        if os.environ.get("LESIONDB_PNG_DECODER", "auto").strip().lower() != "pillow" and _have_pillow():
            try:
                from . import _png_fast

                _FAST = _png_fast
            except Exception:  # not installed, or numba cannot compile here: Pillow it is
                _FAST = False
    return _FAST or None


def png_decoder_name() -> str:
    """Which decoder reads DeepLesion PNGs here: ``isal+numba``, ``pillow`` or ``pypng``."""
    if not _have_pillow():
        return "pypng"
    return "isal+numba" if fast_decoder() is not None else "pillow"


def _inflate_rows(Image, width: int, rows: int, pieces: Iterable[bytes]):  # noqa: N803 - the PIL.Image module
    """Pillow's PNG ``zip`` decoder (inflate + unfilter, big-endian 16-bit) fed the image data
    ``pieces`` until ``rows`` rows are done (as Pillow's own loader feeds it). ``Image.frombytes``
    does the same on all the data but first fills the new image with zeros (0.3–0.5 ms a slice);
    an image made with ``color=None`` is not filled."""
    try:
        im = Image.new("I;16", (width, rows), None)
        dec = Image._getdecoder("I;16", "zip", ("I;16B",))
    except AttributeError:  # pragma: no cover - a Pillow without the private helper
        return Image.frombytes("I;16", (width, rows), b"".join(pieces), "zip", "I;16B")
    dec.setimage(im.im, (0, 0, width, rows))
    buf = b""
    for piece in pieces:
        buf = buf + piece if buf else piece
        consumed, err = dec.decode(buf)
        if consumed < 0:  # every row done
            if err != 0:
                raise ValueError("cannot decode image data")
            return im
        if err != 0:
            raise ValueError("cannot decode image data")
        buf = buf[consumed:]
    raise ValueError("not enough image data")


def read_slice_raw(path: str | Path, rows: int | None = None) -> np.ndarray:
    """Stored values (HU + 32768) of rows ``0:rows`` of a DeepLesion PNG: uint16 (rows, cols)."""
    return PngFile(path).decode(rows)


_PILLOW: bool | None = None


def _have_pillow() -> bool:
    global _PILLOW
    if _PILLOW is None:
        try:
            import PIL.Image  # noqa: F401

            _PILLOW = True
        except ImportError:
            _PILLOW = False
    return _PILLOW


def read_stack(
    folder: str | Path,
    key_slice_index: int,
    slice_interval_mm: float,
    offset_mm: float = 2.0,
    *,
    strict: bool = False,
) -> np.ndarray:
    """The key slice and the slices ``offset_mm`` above and below it: float32 HU, shape (3, rows, cols).

    The slices at ``key ± offset_mm / slice_interval_mm`` are linearly interpolated from the two
    files around them. Where a neighbour is not in the folder (the series ends there, or only the
    key slice was extracted) the nearest available slice on the way back to the key slice is used;
    with ``strict=True`` a missing neighbour raises :class:`ImageError` instead. A missing key slice,
    or any needed file that is truncated, always raises.
    """
    if not slice_interval_mm > 0 or not math.isfinite(slice_interval_mm):
        raise ImageError(f"slice interval must be a positive number of mm, got {slice_interval_mm!r}",
                         str(folder))
    folder = Path(folder)
    cache: dict[int, np.ndarray | None] = {}

    def get(i: int) -> np.ndarray | None:
        if i not in cache:
            p = folder / slice_file(i)
            cache[i] = read_slice(p).astype(np.float32) if i >= 0 and p.is_file() else None
        return cache[i]

    key = get(key_slice_index)
    if key is None:
        raise ImageError(f"key slice {key_slice_index} not found", str(folder / slice_file(key_slice_index)))
    t = offset_mm / slice_interval_mm  # offset in slices
    out = [None, key, None]
    for sign, slot in ((-1, 0), (1, 2)):
        out[slot] = _interpolate(get, key_slice_index, sign * t, key, strict, folder)
    stack = np.stack(out)  # type: ignore[arg-type]
    if stack.shape[1:] != key.shape:  # pragma: no cover - np.stack would have failed already
        raise ImageError("slices of different sizes", str(folder))
    return stack


def _interpolate(get, key_index: int, t: float, key: np.ndarray, strict: bool, folder: Path) -> np.ndarray:
    """The slice at fractional index ``key_index + t``, from the available files."""
    pos = key_index + t
    lo, hi = math.floor(pos + 1e-9), math.ceil(pos - 1e-9)
    w = pos - lo
    if lo == hi:
        needed = [(lo, 1.0)]
    else:
        needed = [(lo, 1.0 - w), (hi, w)]
    got = []
    for idx, weight in needed:
        if weight <= 1e-9:
            continue
        img = get(idx)
        if img is None:
            if strict:
                raise ImageError(f"neighbour slice {idx} of key slice {key_index} not found "
                                 f"(needed for the ±{abs(t):.2f}-slice stack)", str(folder / slice_file(idx)))
            idx, img = _nearest_towards_key(get, idx, key_index, key)
        if img.shape != key.shape:  # named by the file actually used
            raise ImageError(f"slice {idx} is {img.shape}, key slice is {key.shape}", str(folder / slice_file(idx)))
        got.append((img, weight))
    total = sum(w for _, w in got)
    return sum(img * (w / total) for img, w in got).astype(np.float32)  # type: ignore[return-value]


def _nearest_towards_key(get, idx: int, key_index: int, key: np.ndarray) -> tuple[int, np.ndarray]:
    """(index, slice) of the nearest present slice from ``idx`` back towards the key slice."""
    step = 1 if idx < key_index else -1
    i = idx + step
    while i != key_index:
        img = get(i)
        if img is not None:
            return i, img
        i += step
    return key_index, key


# -- the ingest's reader: one series, each file once, top rows only ------------------------------------------
class SeriesSlices:
    """The slices of one DeepLesion series folder for many lesions: each file read and decoded
    once (rows ``0:rows`` only, the most any lesion asked for), shared by every lesion using it.

    ``plan(key, interval_mm, offset_mm)`` says which slices a lesion's stack needs (the same
    rule as :func:`read_stack`: ``key ± offset`` interpolated from the two files around it, the
    nearest available file on the way back to the key slice where one is missing);
    ``need(index, rows)`` records how many rows a lesion needs; ``window(...)`` builds the stack
    window from the decoded rows.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._present = set(series_slice_numbers(self.folder))
        self._files: dict[int, PngFile | ImageError] = {}
        self._rows: dict[int, int] = {}
        self._cols: dict[int, int] = {}
        self._pixels: dict[int, np.ndarray] = {}
        self.seconds_read = 0.0
        self.decodes = 0  # files decoded (a file decoded again for more rows counts twice)

    def path(self, i: int) -> Path:
        return self.folder / slice_file(i)

    def has(self, i: int) -> bool:
        return i >= 0 and i in self._present

    def file(self, i: int) -> PngFile:
        f = self._files.get(i)
        if f is None:
            try:
                f = PngFile(self.path(i))
            except ImageError as exc:
                f = exc
            self._files[i] = f
        if isinstance(f, ImageError):
            raise f
        return f

    def plan(self, key: int, slice_interval_mm: float, offset_mm: float, *, strict: bool = False
             ) -> list[list[tuple[int, float]]]:
        """The (file index, weight) pairs of the three stack slots of a lesion, weights summing to 1."""
        if not slice_interval_mm > 0 or not math.isfinite(slice_interval_mm):
            raise ImageError(f"slice interval must be a positive number of mm, got {slice_interval_mm!r}",
                             str(self.folder))
        if not self.has(key):
            raise ImageError(f"key slice {key} not found", str(self.path(key)))
        t = offset_mm / slice_interval_mm
        slots = [None, [(key, 1.0)], None]
        for sign, slot in ((-1, 0), (1, 2)):
            pos = key + sign * t
            lo, hi = math.floor(pos + 1e-9), math.ceil(pos - 1e-9)
            w = pos - lo
            needed = [(lo, 1.0)] if lo == hi else [(lo, 1.0 - w), (hi, w)]
            got = []
            for idx, weight in needed:
                if weight <= 1e-9:
                    continue
                if not self.has(idx):
                    if strict:
                        raise ImageError(f"neighbour slice {idx} of key slice {key} not found "
                                         f"(needed for the ±{abs(t):.2f}-slice stack)", str(self.path(idx)))
                    idx = self._nearest_towards_key(idx, key)
                got.append((idx, weight))
            total = sum(w_ for _, w_ in got)
            slots[slot] = [(i, w_ / total) for i, w_ in got]
        return slots  # type: ignore[return-value]

    def _nearest_towards_key(self, idx: int, key: int) -> int:
        step = 1 if idx < key else -1
        i = idx + step
        while i != key:
            if self.has(i):
                return i
            i += step
        return key

    def check_shapes(self, indices: Iterable[int], key: int) -> tuple[int, int]:
        """The key slice's (rows, cols); :class:`ImageError` when a needed slice differs."""
        shape = self.file(key).shape
        for i in indices:
            if self.file(i).shape != shape:
                raise ImageError(f"slice {i} is {self.file(i).shape}, key slice is {shape}", str(self.path(i)))
        return shape

    def need(self, i: int, rows: int, cols: int | None = None) -> None:
        """Slice ``i`` is needed down to row ``rows`` (and, when given, up to column ``cols``)."""
        self._rows[i] = max(self._rows.get(i, 0), int(rows))
        c = self.file(i).width if cols is None else int(cols)
        self._cols[i] = max(self._cols.get(i, 0), c)

    def pixels(self, i: int) -> np.ndarray:
        """Stored values of slice ``i``, at least the rows asked for with :meth:`need`."""
        rows, cols = self._rows.get(i), self._cols.get(i)
        px = self._pixels.get(i)
        if px is None or (rows is not None and px.shape[0] < rows) or (cols is not None and px.shape[1] < cols):
            t0 = time.perf_counter()
            px = self.file(i).decode(rows, native=False, cols=cols)  # only windows of it are converted
            self.decodes += 1
            self.seconds_read += time.perf_counter() - t0
            self._pixels[i] = px
        return px

    def window(self, slots: list[list[tuple[int, float]]], ya: int, yb: int, xa: int, xb: int) -> np.ndarray:
        """The float32 HU stack (3, yb - ya, xb - xa) of a lesion: equal to
        ``read_stack(...)[:, ya:yb, xa:xb]``."""
        def hu(i: int) -> np.ndarray:
            return to_hu(self.pixels(i)[ya:yb, xa:xb]).astype(np.float32)

        out = []
        for slot in slots:
            if len(slot) == 1:
                out.append(hu(slot[0][0]))
            else:  # the same arithmetic as read_stack's interpolation
                out.append(sum(hu(i) * w for i, w in slot).astype(np.float32))  # type: ignore[union-attr]
        return np.stack(out)

    def release(self, keep: Iterable[int] = ()) -> None:
        """Forget decoded pixels (and file bytes) except of ``keep``."""
        keep = set(keep)
        for d in (self._pixels, self._files):
            for i in [i for i in d if i not in keep]:
                del d[i]


# -- a series' available slices as one volume (missing-annotation mining) ------------------------------------
def series_slice_numbers(folder: str | Path) -> list[int]:
    """The slice numbers ``KKK`` of the ``KKK.png`` files in a series folder, ascending."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        raise ImageError("series folder not found", str(folder)) from None
    except OSError as exc:
        raise ImageError(f"series folder unreadable ({exc})", str(folder)) from exc
    return sorted(int(n[:-4]) for n in names if n.endswith(".png") and n[:-4].isdigit())


def read_series_slab(folder: str | Path) -> tuple[np.ndarray, list[int]]:
    """Every slice present in a DeepLesion series folder: (int16 HU ``[slice, row, col]``, slice numbers).

    DeepLesion releases only the slices around each bookmark, so the numbers may have gaps: the
    volume holds the present slices in order and nothing is filled in for the missing ones (the
    numbers say where each slice lies). Raises :class:`ImageError` naming the file when a slice is
    truncated, not 16-bit grey, or of another size than the first, and naming the folder when it
    is missing or holds no slice.
    """
    folder = Path(folder)
    numbers = series_slice_numbers(folder)
    if not numbers:
        raise ImageError("no KKK.png slice in the series folder", str(folder))
    first = read_slice(folder / slice_file(numbers[0]))
    hu = np.empty((len(numbers),) + first.shape, dtype=np.int16)
    hu[0] = first
    for i, k in enumerate(numbers[1:], start=1):
        img = read_slice(folder / slice_file(k))
        if img.shape != first.shape:
            raise ImageError(f"slice is {img.shape[0]}×{img.shape[1]}, slice {numbers[0]:03d} of the series "
                             f"is {first.shape[0]}×{first.shape[1]}", str(folder / slice_file(k)))
        hu[i] = img
    return hu, numbers
