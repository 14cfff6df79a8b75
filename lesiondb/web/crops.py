"""Lesion crops for the browser: a window of a CT slice around a box, as an 8-bit RGB PNG.

Pure pixels in, PNG bytes out (no graph, no web framework): :func:`render_crop` windows the HU
slice with a preset (:data:`WINDOWS`), crops a square around the box (padded with air where it
leaves the image), resizes it and draws the box; :func:`encode_png` writes it with Pillow when
installed, else with pypng (a dependency). :func:`placeholder_png` is the image shown where the
series cannot be found. :class:`CropCache` keeps rendered crops in memory (LRU by bytes) and,
optionally, in a private folder of the data dir (the crops are patient images: the folder is
``0700`` and each file ``0600``).
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.private import FILE_MODE, make_private_dir

#: Window presets: name → (width HU, level HU).
WINDOWS: dict[str, tuple[float, float]] = {
    "soft": (400.0, 40.0),     # soft tissue W400/L40
    "lung": (1500.0, -600.0),  # lung W1500/L-600
    "bone": (1800.0, 400.0),   # bone W1800/L400
}
DEFAULT_WINDOW = "soft"
DEFAULT_SIZE_PX = 160
SIZES_PX = (64, 512)  # smallest and largest crop a request may ask for
#: The square cropped around a box: this many times its longer side, at least MIN_SIDE_PX source pixels.
CONTEXT = 2.5
MIN_SIDE_PX = 48
AIR_HU = -1024
BOX_COLOURS = {"lesion": (64, 220, 96), "proposal": (255, 170, 0)}


def window_u8(hu: np.ndarray, window: str) -> np.ndarray:
    """HU → 0..255 with a preset window (``soft``, ``lung``, ``bone``)."""
    width, level = WINDOWS[window]
    lo = level - width / 2.0
    out = (np.asarray(hu, np.float32) - lo) * (255.0 / width)
    return np.clip(out, 0, 255).astype(np.uint8)


def crop_square(hu: np.ndarray, box_px: Sequence[float] | None, out_px: int) -> np.ndarray:
    """A square of ``hu`` (rows, cols) around ``box_px`` = [x1, y1, x2, y2] (the whole slice when
    None), resampled bilinearly to ``out_px`` × ``out_px``; outside the image is air."""
    rows, cols = hu.shape
    if box_px is None or len(box_px) != 4:
        cx, cy, side = (cols - 1) / 2.0, (rows - 1) / 2.0, float(max(rows, cols))
    else:
        x1, y1, x2, y2 = (float(v) for v in box_px)
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        side = min(max(CONTEXT * max(abs(x2 - x1), abs(y2 - y1)), MIN_SIDE_PX), float(max(rows, cols)))
    step = side / out_px
    coords = (np.arange(out_px, dtype=np.float64) + 0.5) * step - side / 2.0
    return _bilinear(hu, cy + coords, cx + coords)


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``img`` sampled at the grid ``ys`` × ``xs`` (pixel centres at integers); air outside."""
    rows, cols = img.shape
    pad = np.full((rows + 2, cols + 2), AIR_HU, dtype=np.float32)
    pad[1:-1, 1:-1] = img
    y = np.clip(ys + 1.0, 0.0, rows + 1.0 - 1e-6)
    x = np.clip(xs + 1.0, 0.0, cols + 1.0 - 1e-6)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, rows + 1), np.minimum(x0 + 1, cols + 1)
    wy, wx = (y - y0)[:, None], (x - x0)[None, :]
    top = pad[np.ix_(y0, x0)] * (1 - wx) + pad[np.ix_(y0, x1)] * wx
    bottom = pad[np.ix_(y1, x0)] * (1 - wx) + pad[np.ix_(y1, x1)] * wx
    return top * (1 - wy) + bottom * wy


def box_in_crop(hu_shape: tuple[int, int], box_px: Sequence[float], out_px: int) -> tuple[float, float, float, float]:
    """Where ``box_px`` lies in the crop :func:`crop_square` makes of it (output pixels)."""
    rows, cols = hu_shape
    x1, y1, x2, y2 = (float(v) for v in box_px)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    side = min(max(CONTEXT * max(abs(x2 - x1), abs(y2 - y1)), MIN_SIDE_PX), float(max(rows, cols)))
    scale = out_px / side
    ox, oy = cx - side / 2.0, cy - side / 2.0
    return ((x1 - ox) * scale, (y1 - oy) * scale, (x2 - ox) * scale, (y2 - oy) * scale)


def draw_box(rgb: np.ndarray, box: tuple[float, float, float, float], colour: tuple[int, int, int],
             thickness: int = 2, margin_px: int = 3) -> None:
    """Draw a rectangle (in place) ``margin_px`` outside ``box`` (so the lesion's edge stays visible)."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = x1 - margin_px, y1 - margin_px, x2 + margin_px, y2 + margin_px
    for t in range(thickness):
        for yy in (y1 - t, y2 + t):
            if 0 <= yy < h:
                rgb[yy, max(x1 - t, 0):min(x2 + t + 1, w)] = colour
        for xx in (x1 - t, x2 + t):
            if 0 <= xx < w:
                rgb[max(y1 - t, 0):min(y2 + t + 1, h), xx] = colour


def render_crop(hu: np.ndarray, box_px: Sequence[float] | None, *, window: str = DEFAULT_WINDOW,
                size_px: int = DEFAULT_SIZE_PX, box_colour: tuple[int, int, int] | None = None,
                margin_px: int = 3) -> np.ndarray:
    """The crop of a slice around a box as (size, size, 3) uint8, the box drawn when ``box_colour``."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
    grey = window_u8(crop_square(np.asarray(hu), box_px, size_px), window)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if box_colour is not None and box_px is not None and len(box_px) == 4:
        draw_box(rgb, box_in_crop(hu.shape, box_px, size_px), box_colour, margin_px=margin_px)
    return rgb


def _have_pillow() -> bool:
    try:
        import PIL.Image  # noqa: F401, PLC0415 - optional: pypng otherwise
    except ImportError:
        return False
    return True


HAVE_PILLOW = _have_pillow()


def encode_png(rgb: np.ndarray, *, use_pillow: bool | None = None) -> bytes:
    """(h, w, 3) uint8 → PNG bytes (Pillow when installed, else pypng)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    buf = io.BytesIO()
    if HAVE_PILLOW if use_pillow is None else use_pillow:
        from PIL import Image  # noqa: PLC0415 - optional

        Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    else:
        import png  # pypng  # noqa: PLC0415 - the fallback

        h, w = rgb.shape[:2]
        png.Writer(w, h, greyscale=False, bitdepth=8, compression=1).write(buf, rgb.reshape(h, w * 3))
    return buf.getvalue()


def placeholder_png(size_px: int = DEFAULT_SIZE_PX, text: str = "no image") -> bytes:
    """A grey, hatched square saying ``text`` (with Pillow; hatched only with pypng): what a crop
    shows when its series is not under the images folders."""
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    grey = np.where(((xx + yy) // 8) % 2 == 0, 58, 46).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[[0, -1], :] = 110
    rgb[:, [0, -1]] = 110
    if HAVE_PILLOW:
        from PIL import Image, ImageDraw  # noqa: PLC0415 - optional

        im = Image.fromarray(rgb, "RGB")
        draw = ImageDraw.Draw(im)
        w = draw.textlength(text)
        draw.rectangle([size_px / 2 - w / 2 - 4, size_px / 2 - 9, size_px / 2 + w / 2 + 4, size_px / 2 + 9],
                       fill=(30, 30, 30))
        draw.text((size_px / 2 - w / 2, size_px / 2 - 6), text, fill=(220, 220, 220))
        rgb = np.asarray(im)
    return encode_png(rgb)


@dataclass(frozen=True)
class CropKey:
    """What a rendered crop depends on: what it shows (kind, id, the geometry's version), how."""

    kind: str  # lesion | proposal
    item_id: str
    version: str  # a hash of (series, slice, box): changes when a re-mined proposal moves
    window: str
    size_px: int

    def digest(self) -> str:
        text = "\x1f".join((self.kind, self.item_id, self.version, self.window, str(self.size_px)))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def geometry_version(series_id: str | None, slice_index: int | None, box_px: Sequence[float] | None) -> str:
    """A short hash of where a crop comes from (series pseudonym, slice, box)."""
    box = ",".join(f"{float(v):.2f}" for v in box_px) if box_px else ""
    return hashlib.sha256(f"{series_id}|{slice_index}|{box}".encode()).hexdigest()[:12]


class CropCache:
    """Rendered crops: an in-memory LRU bounded by ``max_bytes``, in front of an optional folder
    (``folder``: created ``0700``, files ``0600``, written atomically). Thread-safe."""

    def __init__(self, folder: str | Path | None = None, max_bytes: int = 64 << 20):
        self.folder = Path(folder) if folder is not None else None
        self.max_bytes = max_bytes
        self._mem: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        if self.folder is not None:
            make_private_dir(self.folder)

    def get(self, key: CropKey) -> bytes | None:
        d = key.digest()
        with self._lock:
            data = self._mem.get(d)
            if data is not None:
                self._mem.move_to_end(d)
                self.hits += 1
                return data
        if self.folder is not None:
            try:
                data = (self.folder / f"{d}.png").read_bytes()
            except OSError:
                data = None
            if data is not None:
                self._remember(d, data)
                with self._lock:
                    self.hits += 1
                return data
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: CropKey, data: bytes) -> None:
        d = key.digest()
        self._remember(d, data)
        if self.folder is not None:
            tmp = self.folder / f".{d}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
                os.fchmod(fd, FILE_MODE)  # whatever the umask
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self.folder / f"{d}.png")
            except OSError:
                tmp.unlink(missing_ok=True)  # a full disk leaves the memory cache working

    def _remember(self, d: str, data: bytes) -> None:
        with self._lock:
            old = self._mem.pop(d, None)
            if old is not None:
                self._bytes -= len(old)
            self._mem[d] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._mem) > 1:
                _, gone = self._mem.popitem(last=False)
                self._bytes -= len(gone)

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()
            self._bytes = 0
