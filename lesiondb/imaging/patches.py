"""Lesion patches for the encoder: 3 slices around the key slice, resampled, windowed, with the box.

Pure numpy. A patch is the key slice and the slices ``offset_mm`` above and below it (linearly
interpolated by slice interval) as 3 channels, resampled to ``spacing_mm`` mm per pixel (enlarged
only when the box and its context would not fit), HU-windowed to [0, 1], centred on the lesion box
with ``context_mm`` of context on each side. The lesion box comes back in patch pixels for RoI pooling.

Coordinates: source pixel ``i`` has its centre at ``i`` (DeepLesion and DICOM convention); patch
pixel ``j`` covers ``[j, j + 1)`` (torchvision ``roi_align(aligned=True)`` convention).

Works for both sources: DICOM volumes (:func:`extract_patch_from_volume`) and DeepLesion 3-slice
PNG stacks from :func:`lesiondb.imaging.png.read_stack` (:func:`extract_patch`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ImageError
from .limits import check_box_in_image

#: HU outside the image (air).
FILL_HU = -1024.0


@dataclass(frozen=True)
class PatchSpec:
    """How a lesion patch is made. Travels with the model config (``asdict``)."""

    size_px: int = 64  # patch side
    # 2.5 mm/px × 64 px = 16 cm of body around the lesion: the organ and level context that
    # tells lesion types apart (1–2 mm/px patches gave 2–4× the type error in our tests)
    spacing_mm: float = 2.5  # target mm per patch pixel (the minimum; enlarged for big lesions)
    context_mm: float = 16.0  # context kept on each side of the lesion box
    offset_mm: float = 2.0  # neighbour slices at key ± offset_mm
    window_hu: tuple[float, float] = (-1000.0, 500.0)  # HU mapped to [0, 1], clipped outside

    def __post_init__(self) -> None:
        if self.size_px < 8:
            raise ValueError(f"size_px must be ≥ 8, got {self.size_px}")
        if not self.spacing_mm > 0 or not self.context_mm >= 0 or not self.offset_mm >= 0:
            raise ValueError("spacing_mm must be > 0, context_mm and offset_mm ≥ 0")
        lo, hi = self.window_hu
        if not hi > lo:
            raise ValueError(f"window_hu must be (low, high) with high > low, got {self.window_hu}")
        object.__setattr__(self, "window_hu", (float(lo), float(hi)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window_hu"] = list(self.window_hu)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> PatchSpec:
        d = dict(d or {})
        if "window_hu" in d:
            d["window_hu"] = tuple(d["window_hu"])
        return cls(**d)


@dataclass
class Patch:
    """One lesion patch: ``image`` float32 (3, S, S) in [0, 1], ``box_px`` (x1, y1, x2, y2) in patch pixels."""

    image: np.ndarray
    box_px: np.ndarray
    spacing_mm: float  # mm per patch pixel actually used
    meta: dict = field(default_factory=dict)


def window(hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """HU → [0, 1] float32, clipped outside the window."""
    lo, hi = window_hu
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def stack_from_volume(volume_hu: np.ndarray, key_index: int, slice_interval_mm: float,
                      offset_mm: float = 2.0) -> np.ndarray:
    """The key slice and the slices ``offset_mm`` above/below it from a (slices, rows, cols) volume.

    Fractional positions are linearly interpolated; positions past either end of the series are
    clamped to the first/last slice. Returns float32 (3, rows, cols).
    """
    vol = np.asarray(volume_hu)
    if vol.ndim != 3:
        raise ImageError(f"volume must be (slices, rows, cols), got shape {vol.shape}")
    n = vol.shape[0]
    if not 0 <= key_index < n:
        raise ImageError(f"key slice index {key_index} outside the volume's {n} slices")
    if not (slice_interval_mm > 0 and math.isfinite(slice_interval_mm)):
        raise ImageError(f"slice interval must be a positive number of mm, got {slice_interval_mm!r}")
    t = offset_mm / slice_interval_mm
    out = [_slice_at(vol, key_index - t), vol[key_index].astype(np.float32), _slice_at(vol, key_index + t)]
    return np.stack(out)


def _slice_at(vol: np.ndarray, pos: float) -> np.ndarray:
    pos = min(max(pos, 0.0), vol.shape[0] - 1.0)
    lo = math.floor(pos)
    w = pos - lo
    if w < 1e-6 or lo + 1 >= vol.shape[0]:
        return vol[lo].astype(np.float32)
    return ((1.0 - w) * vol[lo].astype(np.float32) + w * vol[lo + 1].astype(np.float32)).astype(np.float32)


def _span(out_n: int, start: float, step: float) -> tuple[int, int]:
    """(first, m): the source indices [first, first + m) that :func:`_weights` covers, without
    building the matrix (the same float arithmetic, so the same integers)."""
    radius = max(1.0, step)
    first = int(math.floor(start - radius))
    last = int(math.ceil((start + step * (out_n - 1)) + radius))
    return first, last - first + 1


def _weights(out_n: int, start: float, step: float) -> tuple[np.ndarray, int]:
    """Resampling matrix (out_n, m) over source indices [first, first + m): a tent filter, widened
    by the scale factor when downsampling (antialiasing)."""
    centres = start + step * np.arange(out_n)  # source coordinate of each output pixel centre
    radius = max(1.0, step)
    first, m = _span(out_n, start, step)
    src = np.arange(first, first + m)
    d = np.abs(src[None, :] - centres[:, None]) / radius
    w = np.clip(1.0 - d, 0.0, None)
    s = w.sum(axis=1, keepdims=True)
    w = w / np.where(s > 0, s, 1.0)
    return w.astype(np.float32), first


def _resample(stack: np.ndarray, cx: float, cy: float, sx: float, sy: float, out_mm: float,
              size: int) -> np.ndarray:
    """Crop-and-resample (C, H, W) HU around (cx, cy) to (C, size, size) at ``out_mm`` mm/pixel."""
    c, h, w = stack.shape
    stepx, stepy = out_mm / sx, out_mm / sy  # source pixels per output pixel
    wx, x0 = _weights(size, cx + (0.5 - size / 2.0) * stepx, stepx)
    wy, y0 = _weights(size, cy + (0.5 - size / 2.0) * stepy, stepy)
    # pad the needed source window with air where it leaves the image
    ys = np.arange(y0, y0 + wy.shape[1])
    xs = np.arange(x0, x0 + wx.shape[1])
    yin = (ys >= 0) & (ys < h)
    xin = (xs >= 0) & (xs < w)
    win = np.full((c, len(ys), len(xs)), FILL_HU, dtype=np.float32)
    if yin.any() and xin.any():
        win[:, yin.nonzero()[0][0]:yin.nonzero()[0][-1] + 1, xin.nonzero()[0][0]:xin.nonzero()[0][-1] + 1] = \
            stack[:, ys[yin][0]:ys[yin][-1] + 1, xs[xin][0]:xs[xin][-1] + 1]
    # (size, m_y) @ (C, m_y, m_x) @ (m_x, size): two small matrix products per channel
    return np.matmul(wy, np.matmul(win, wx.T))


def _geometry(box_px, spacing_mm, spec: PatchSpec) -> tuple[float, float, float, float, float, tuple]:
    """Box centre (cx, cy), pixel spacing (sx, sy), patch mm/pixel; validates the inputs."""
    x1, y1, x2, y2 = (float(v) for v in box_px)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        raise ImageError(f"bad lesion box {tuple(box_px)}: need finite x1 ≤ x2, y1 ≤ y2")
    sx, sy = (float(spacing_mm), float(spacing_mm)) if np.isscalar(spacing_mm) else map(float, spacing_mm)
    if not (sx > 0 and sy > 0):
        raise ImageError(f"pixel spacing must be positive, got {spacing_mm!r}")
    extent_mm = max((x2 - x1) * sx, (y2 - y1) * sy) + 2.0 * spec.context_mm
    out_mm = max(spec.spacing_mm, extent_mm / spec.size_px)
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0, sx, sy, out_mm, (x1, y1, x2, y2)


def extract_patch(stack_hu: np.ndarray, box_px, spacing_mm, spec: PatchSpec | None = None, *,
                  check_box: bool = True) -> Patch:
    """A lesion patch from a 3-slice HU stack (3, rows, cols) and the lesion box on the key slice.

    ``box_px`` is (x1, y1, x2, y2) in source pixels; ``spacing_mm`` the in-plane (x, y) mm per pixel
    (a single number means square pixels). The patch spacing is ``spec.spacing_mm`` unless the box
    plus ``2 × context_mm`` does not fit into ``size_px`` pixels, then it is enlarged to fit.
    A box outside the image raises :class:`ImageError` (``check_box=False``: the stack is a
    window of the image, checked by :func:`source_window`).
    """
    spec = spec or PatchSpec()
    stack = np.asarray(stack_hu)
    if stack.ndim != 3 or stack.shape[0] != 3:
        raise ImageError(f"expected a 3-slice stack (3, rows, cols), got shape {stack.shape}")
    cx, cy, sx, sy, out_mm, (x1, y1, x2, y2) = _geometry(box_px, spacing_mm, spec)
    if check_box:
        check_box_in_image(box_px, stack.shape[1:])
    hu = _resample(stack, cx, cy, sx, sy, out_mm, spec.size_px)
    half = spec.size_px / 2.0
    box = np.array([(x1 - cx) * sx / out_mm + half, (y1 - cy) * sy / out_mm + half,
                    (x2 - cx) * sx / out_mm + half, (y2 - cy) * sy / out_mm + half], dtype=np.float32)
    return Patch(window(hu, spec.window_hu), box, out_mm)


def extract_patch_from_volume(volume_hu: np.ndarray, key_index: int, box_px, spacing_mm,
                              slice_interval_mm: float, spec: PatchSpec | None = None) -> Patch:
    """A lesion patch from a (slices, rows, cols) HU volume (e.g. a DICOM series).

    Same result as :func:`stack_from_volume` + :func:`extract_patch`, but only the source window the
    patch needs is interpolated between slices (a few % of a 512×512 slice).
    """
    spec = spec or PatchSpec()
    vol = np.asarray(volume_hu)
    if vol.ndim != 3:
        raise ImageError(f"volume must be (slices, rows, cols), got shape {vol.shape}")
    ya, yb, xa, xb = source_window(box_px, spacing_mm, spec, vol.shape[1:])
    stack = stack_from_volume(vol[:, ya:yb, xa:xb], key_index, slice_interval_mm, spec.offset_mm)
    return extract_patch_from_window(stack, (ya, xa), box_px, spacing_mm, spec)


def source_window(box_px, spacing_mm, spec: PatchSpec, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The rows ``ya:yb`` and columns ``xa:xb`` of a (rows, cols) image that the patch of
    ``box_px`` reads, clipped to the image. A box outside the image raises :class:`ImageError`
    (:func:`lesiondb.imaging.limits.check_box_in_image`): its patch would be air or another place.

    Readers decode and interpolate only this window (a PNG only rows ``0:yb``); the patch made
    from it by :func:`extract_patch_from_window` equals :func:`extract_patch` on the whole image.
    """
    cx, cy, sx, sy, out_mm, _ = _geometry(box_px, spacing_mm, spec)
    check_box_in_image(box_px, shape)
    size = spec.size_px
    h, w = int(shape[0]), int(shape[1])
    # the source window the resampling reads (same arithmetic as _resample), clipped to the image
    x0, mx = _span(size, cx + (0.5 - size / 2.0) * out_mm / sx, out_mm / sx)
    y0, my = _span(size, cy + (0.5 - size / 2.0) * out_mm / sy, out_mm / sy)
    xa, xb = min(max(x0, 0), w), min(max(x0 + mx, 0), w)
    ya, yb = min(max(y0, 0), h), min(max(y0 + my, 0), h)
    if xb - xa < 1 or yb - ya < 1:  # pragma: no cover - a box inside the image has a window
        xa, xb, ya, yb = 0, w, 0, h
    return ya, yb, xa, xb


def extract_patch_from_window(stack_window: np.ndarray, origin: tuple[int, int], box_px, spacing_mm,
                              spec: PatchSpec | None = None) -> Patch:
    """:func:`extract_patch` from the (3, yb - ya, xb - xa) window of a stack given by
    :func:`source_window`; ``origin`` is (ya, xa). Same patch and box as from the whole stack."""
    ya, xa = origin
    x1, y1, x2, y2 = (float(v) for v in box_px)
    # integer shifts keep the resampling grid identical; image borders stay borders
    return extract_patch(stack_window, (x1 - xa, y1 - ya, x2 - xa, y2 - ya), spacing_mm, spec, check_box=False)


def stack_patches(patches: list[Patch]) -> tuple[np.ndarray, np.ndarray]:
    """Patches → images (N, 3, S, S) float32 and boxes (N, 4) float32, the inputs of ``embed_patches``."""
    if not patches:
        raise ValueError("no patches")
    return (np.stack([p.image for p in patches]).astype(np.float32),
            np.stack([p.box_px for p in patches]).astype(np.float32))
