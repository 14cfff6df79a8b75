"""Normalised lesion location (x, y, z in [0, 1]), like DeepLesion's ``Normalized_lesion_location``.

- **x, y** are relative to the body outline on the key slice: the body is the largest connected
  region above ``BODY_THRESHOLD_HU`` (holes filled), its bounding box ``[x0, x1] × [y0, y1]``
  gives ``x = (col − x0) / (x1 − x0)``, ``y = (row − y0) / (y1 − y0)``: x = 0 at the image's left
  (the patient's right), y = 0 at the top (anterior), as in DeepLesion.
- **z** is relative to the patient's body extent along the head–feet axis (patient LPS z, +z is
  the head): ``z = (z_top − z) / (z_top − z_bottom)``: 0 at the top of the body extent, 1 at its
  bottom, as DeepLesion's z grows from chest to pelvis. The extent comes from the cohort's
  metadata when it has one (synthetic cohorts record each patient's body extent); otherwise it is
  estimated from the series itself (:func:`estimate_body_z_range`): the span of slices that show
  a body. That estimate is relative to what was scanned, not to anatomy, so z from a partial scan
  (a chest-only CT, a slab) is not comparable with z from a whole-body scan. See docs/imaging.md.

All values are clipped to [0, 1].
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

#: Body vs air: fat is about −100 HU, lung −850, air −1000; −500 keeps fat in and air out.
BODY_THRESHOLD_HU = -500.0
#: A slice "shows a body" when this fraction of its pixels is body.
MIN_BODY_FRACTION = 0.01


def body_mask(hu_slice: np.ndarray, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """The largest connected region above ``threshold_hu``, holes (lungs, bowel gas) filled."""

    above = np.asarray(hu_slice) > threshold_hu
    labels, n = ndimage.label(above)
    if n == 0:
        return np.zeros_like(above, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def body_bbox(hu_slice: np.ndarray, threshold_hu: float = BODY_THRESHOLD_HU) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` in pixels (inclusive) of the body on one slice, or None if there is none."""
    mask = body_mask(hu_slice, threshold_hu)
    if mask.sum() < max(1, MIN_BODY_FRACTION * mask.size):
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def normalised_xy(hu_slice: np.ndarray, col: float, row: float,
                  threshold_hu: float = BODY_THRESHOLD_HU) -> tuple[float, float] | None:
    """(x, y) of pixel ``(col, row)`` relative to the body's bounding box; None without a body."""
    box = body_bbox(hu_slice, threshold_hu)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    x = (col - x0) / max(x1 - x0, 1)
    y = (row - y0) / max(y1 - y0, 1)
    return _clip(x), _clip(y)


def normalised_z(z_mm: float, body_z_range_mm: tuple[float, float]) -> float:
    """z of patient coordinate ``z_mm`` (LPS, +z = head) within ``(z_top, z_bottom)``: 0 top, 1 bottom."""
    top, bottom = max(body_z_range_mm), min(body_z_range_mm)
    if top - bottom <= 0:
        return 0.5
    return _clip((top - z_mm) / (top - bottom))


def estimate_body_z_range(volume: Any, threshold_hu: float = BODY_THRESHOLD_HU,
                          min_fraction: float = MIN_BODY_FRACTION) -> tuple[float, float]:
    """``(z_top, z_bottom)`` patient mm of the slices of ``volume`` that show a body.

    Only the scanned range is known, so this is the body's extent *within the series*; with no
    body anywhere it is the series' own z extent. Each slice edge is taken half an interval out.
    """
    zs = []
    hu = volume.hu
    usable = [i for i in range(volume.n_slices) if volume.is_usable(i)] or list(range(volume.n_slices))
    for i in usable:
        frac = float((np.asarray(hu[i]) > threshold_hu).mean())
        if frac >= min_fraction:
            zs.append(float(volume.positions_mm[i][2]))
    if not zs:
        zs = [float(p[2]) for p in volume.positions_mm]
    half = 0.5 * abs(float(volume.slice_step_mm[2]))
    return max(zs) + half, min(zs) - half


def lesion_location(volume: Any, key_slice_index: int, col: float, row: float,
                    body_z_range_mm: tuple[float, float] | None = None,
                    position_mm: Any = None) -> tuple[float, float, float] | None:
    """Normalised (x, y, z) of the pixel ``(col, row)`` on a volume's key slice.

    ``body_z_range_mm`` (z_top, z_bottom) from the cohort when known, else estimated from the
    volume. None when the key slice shows no body.
    """
    xy = normalised_xy(volume.hu[key_slice_index], col, row)
    if xy is None:
        return None
    if position_mm is None:
        position_mm = volume.voxel_to_patient(col, row, key_slice_index)
    z_range = body_z_range_mm if body_z_range_mm is not None else estimate_body_z_range(volume)
    return xy[0], xy[1], normalised_z(float(position_mm[2]), z_range)


def _clip(v: float) -> float:
    return float(min(1.0, max(0.0, v)))
