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


@njit(cache=True, nogil=True, inline="always")
def _paeth(a, b, c):  # pragma: no cover - compiled
    """PNG's Paeth predictor without branches: its choice depends on the data, so a branch
    mispredicts about every other byte on CT noise (this is 1.8× faster than the if/else form)."""
    pa = abs(b - c)
    pb = abs(a - c)
    pc = abs(a + b - 2 * c)
    m_bc = (pb - pc - 1) >> 31  # all ones when pb <= pc
    bc = (b & m_bc) | (c & ~m_bc)
    m_a = ((pa - pb - 1) >> 31) & ((pa - pc - 1) >> 31)  # all ones when pa <= pb and pa <= pc
    return (a & m_a) | (bc & ~m_a)


@njit(cache=True, nogil=True, boundscheck=False)
def _unfilter(raw, rows, stride, width):  # pragma: no cover - compiled
    """PNG rows (filter byte + ``stride`` bytes each) → the first ``width`` unfiltered bytes of
    each row, (rows, width); an empty result means an unknown filter type. Every filter reads only
    bytes to the left and above, so the bytes right of ``width`` are never needed.

    Pixels are 2 bytes (16-bit greyscale): the two bytes of a pixel are two independent chains,
    kept in registers (``a`` left, ``c`` upper left) rather than re-read from the row just written.
    """
    out = np.empty((rows, width), np.uint8)
    zero = np.zeros(width, np.uint8)
    pairs = width - width % 2
    for r in range(rows):
        base = r * (stride + 1) + 1
        ft = raw[base - 1]
        cur = out[r]
        prev = out[r - 1] if r > 0 else zero
        if ft == 0:
            for i in range(width):
                cur[i] = raw[base + i]
        elif ft == 2:
            for i in range(width):
                cur[i] = (raw[base + i] + prev[i]) & 255
        elif ft == 1 or ft == 3 or ft == 4:
            a0 = np.int32(0)
            a1 = np.int32(0)
            c0 = np.int32(0)
            c1 = np.int32(0)
            for i in range(0, pairs, 2):
                b0 = np.int32(prev[i])
                b1 = np.int32(prev[i + 1])
                if ft == 1:
                    p0, p1 = a0, a1
                elif ft == 3:
                    p0, p1 = (a0 + b0) >> 1, (a1 + b1) >> 1
                else:
                    p0, p1 = _paeth(a0, b0, c0), _paeth(a1, b1, c1)
                a0 = (np.int32(raw[base + i]) + p0) & 255
                a1 = (np.int32(raw[base + i + 1]) + p1) & 255
                cur[i] = a0
                cur[i + 1] = a1
                c0 = b0
                c1 = b1
            if pairs < width:  # an odd width (never for 16-bit pixels): the lone byte's left is a0
                b0 = np.int32(prev[pairs])
                p0 = a0 if ft == 1 else ((a0 + b0) >> 1 if ft == 3 else _paeth(a0, b0, c0))
                cur[pairs] = (np.int32(raw[base + pairs]) + p0) & 255
        else:
            return out[:0]
    return out


def decode_grey16(idat, width: int, rows: int, native: bool = True, cols: int | None = None) -> np.ndarray:
    """Rows ``0:rows``, columns ``0:cols`` (all by default) of a non-interlaced 16-bit greyscale
    PNG from its IDAT data (bytes, or an iterable of pieces, consumed only as far as the rows
    need): uint16 (rows, cols); ``native=False`` may return PNG's big-endian order (a view, no
    copy). ``ValueError`` when the data ends early or is corrupt."""
    stride = 2 * width
    cols = width if cols is None else max(1, min(int(cols), width))
    need = rows * (stride + 1)
    dec = isal_zlib.decompressobj()
    parts, got = [], 0
    try:
        for piece in ((idat,) if isinstance(idat, (bytes, bytearray, memoryview)) else idat):
            out = dec.decompress(piece, need - got)
            parts.append(out)
            got += len(out)
            if got >= need:
                break
    except isal_zlib.error as exc:
        raise ValueError(f"cannot decode image data ({exc})") from exc
    if got < need:
        raise ValueError("not enough image data")
    raw = parts[0] if len(parts) == 1 else b"".join(parts)
    out = _unfilter(np.frombuffer(raw, np.uint8), rows, stride, 2 * cols)
    if out.shape[0] != rows:
        raise ValueError("cannot decode image data (unknown row filter)")
    big = out.view(">u2")
    return big.astype(np.uint16) if native else big
