"""Optional fast decoder for DeepLesion's 16-bit greyscale PNGs: ISA-L inflate + a numba-compiled
row unfilter. Used by :mod:`lesiondb.imaging.png` when both ``isal`` and ``numba`` import
(``pip install lesiondb[fast-png]``); Pillow is used otherwise. Same values as Pillow (tested).

Why: Pillow's decoder spends about a third of a slice's time inflating and the rest unfiltering
rows byte by byte (Paeth rows mostly); ISA-L inflates 2–3× faster than zlib and the compiled
unfilter, one loop per filter type, is about twice as fast as Pillow's and does only the columns
asked for (PNG filters read only bytes to the left and above).
"""
from __future__ import annotations

import numpy as np
from isal import isal_zlib
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def _unfilter(raw, rows, stride, bpp, width):  # pragma: no cover - compiled
    """PNG rows (filter byte + ``stride`` bytes each) → the first ``width`` unfiltered bytes of
    each row, (rows, width); an empty result means an unknown filter type. Every filter reads only
    bytes to the left and above, so the bytes right of ``width`` are never needed."""
    out = np.empty((rows, width), np.uint8)
    zero = np.zeros(width, np.uint8)
    for r in range(rows):
        base = r * (stride + 1) + 1
        ft = raw[base - 1]
        cur = out[r]
        prev = out[r - 1] if r > 0 else zero
        if ft == 0:
            for i in range(width):
                cur[i] = raw[base + i]
        elif ft == 1:
            for i in range(bpp):
                cur[i] = raw[base + i]
            for i in range(bpp, width):
                cur[i] = (raw[base + i] + cur[i - bpp]) & 255
        elif ft == 2:
            for i in range(width):
                cur[i] = (raw[base + i] + prev[i]) & 255
        elif ft == 3:
            for i in range(bpp):
                cur[i] = (raw[base + i] + (prev[i] >> 1)) & 255
            for i in range(bpp, width):
                cur[i] = (raw[base + i] + ((np.int32(cur[i - bpp]) + np.int32(prev[i])) >> 1)) & 255
        elif ft == 4:
            for i in range(bpp):
                cur[i] = (raw[base + i] + prev[i]) & 255
            for i in range(bpp, width):
                a = np.int32(cur[i - bpp])
                b = np.int32(prev[i])
                c = np.int32(prev[i - bpp])
                pa = abs(b - c)
                pb = abs(a - c)
                pc = abs(a + b - 2 * c)
                pr = c
                if pb <= pc:
                    pr = b
                if pa <= pb and pa <= pc:
                    pr = a
                cur[i] = (raw[base + i] + pr) & 255
        else:
            return out[:0]
    return out


def decode_grey16(idat: bytes, width: int, rows: int, native: bool = True, cols: int | None = None) -> np.ndarray:
    """Rows ``0:rows``, columns ``0:cols`` (all by default) of a non-interlaced 16-bit greyscale
    PNG from its IDAT data: uint16 (rows, cols); ``native=False`` may return PNG's big-endian
    order (a view, no copy). ``ValueError`` when the data ends early or is corrupt."""
    stride = 2 * width
    cols = width if cols is None else max(1, min(int(cols), width))
    need = rows * (stride + 1)
    try:
        raw = isal_zlib.decompressobj().decompress(idat, need)
    except isal_zlib.error as exc:
        raise ValueError(f"cannot decode image data ({exc})") from exc
    if len(raw) < need:
        raise ValueError("not enough image data")
    out = _unfilter(np.frombuffer(raw, np.uint8), rows, stride, 2, 2 * cols)
    if out.shape[0] != rows:
        raise ValueError("cannot decode image data (unknown row filter)")
    big = out.view(">u2")
    return big.astype(np.uint16) if native else big
