"""What an image must look like to be read as a CT slice, checked from its header before any
pixel is decoded (docs/security.md, "Image limits").

A file outside these limits cannot be a CT slice (DeepLesion's are 512², 768² and 1024², a
scanner's at most 2048²; the smallest real CT files in the test data are pydicom's 16² series),
and decoding it would cost what its header claims: a 20000 × 20000 PNG is 800 MB of 16-bit
pixels, a "decompression bomb" of a few kilobytes. Refusing from the header costs microseconds.
"""
from __future__ import annotations

import math

from ..errors import ImageError

#: Rows and columns of a slice.
MIN_SIDE_PX = 16
MAX_SIDE_PX = 4096
#: Bits per stored pixel: DeepLesion PNGs are 16-bit grey; CT DICOM stores 16 (rarely 8 or 32).
PNG_BIT_DEPTH = 16
DICOM_BITS_ALLOCATED = (8, 16, 32)
#: A DICOM file larger than this cannot hold one slice of at most MAX_SIDE_PX² × 32 bits plus a
#: generous header: refused before it is read into memory.
MAX_DICOM_FILE_BYTES = MAX_SIDE_PX * MAX_SIDE_PX * 4 + 16 * 1024 * 1024
#: How far a lesion box may reach past the image side: DeepLesion boxes are the RECIST extent
#: padded by 5 px and reach up to 6.65 px past it in the real rows.
BOX_SLACK_PX = 8.0


def check_slice_size(rows: int, cols: int, source: str | None = None) -> None:
    """:class:`ImageError` unless ``rows × cols`` is a plausible CT slice size."""
    if not (MIN_SIDE_PX <= rows <= MAX_SIDE_PX and MIN_SIDE_PX <= cols <= MAX_SIDE_PX):
        raise ImageError(f"image is {rows}×{cols} pixels: not a CT slice (each side must be "
                         f"{MIN_SIDE_PX}–{MAX_SIDE_PX} pixels); refused before decoding", source)


def check_box_in_image(box_px, shape: tuple[int, int], source: str | None = None) -> None:
    """:class:`ImageError` when the lesion box (x1, y1, x2, y2) is not inside the (rows, cols)
    image, give or take :data:`BOX_SLACK_PX` (a box drawn for another image, or a wrong image)."""
    rows, cols = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = (float(v) for v in box_px)
    s = BOX_SLACK_PX
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x1 < -s or y1 < -s or x2 > cols + s or y2 > rows + s:
        raise ImageError(f"lesion box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {rows}×{cols} image "
                         "(a box of another image, or the wrong image for the lesion)", source)
