"""DeepLesion's 16-bit PNG slices: ``Images_png/PPPPPP_SS_RR/KKK.png``, HU = stored value − 32768.

``read_slice`` reads one slice in HU; ``read_stack`` builds the 3-slice input of the lesion
embedding (the key slice and the slices ``offset_mm`` above and below it, linearly interpolated
from the neighbouring files with the series' slice interval).

Pillow decodes when it is importable (about 20× faster); pypng, a declared dependency, otherwise.
Both give the same values (tested).
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import ImageError

#: DeepLesion stores HU + 32768 as unsigned 16-bit.
HU_OFFSET = 32768
IMAGES_DIR = "Images_png"
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
    try:
        raw = _decode_pillow(path) if use_pillow else _decode_pypng(path)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise ImageError(f"unreadable or truncated PNG ({exc}); {PIP_FIX}", str(path)) from exc
    return (raw - HU_OFFSET).astype(np.int16)


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


def series_dir(images_root: str | Path, series_ref: str) -> Path:
    """The folder of a series: ``images_root/series_ref`` or ``images_root/Images_png/series_ref``."""
    root = Path(images_root)
    for cand in (root / series_ref, root / IMAGES_DIR / series_ref):
        if cand.is_dir():
            return cand
    raise ImageError(f"series folder {series_ref!r} not found (looked in {root} and {root / IMAGES_DIR})",
                     str(root))


def slice_path(images_root: str | Path, series_ref: str, slice_index: int) -> Path:
    """``…/PPPPPP_SS_RR/KKK.png`` of one slice (DeepLesion numbers slices with 3 digits)."""
    return series_dir(images_root, series_ref) / f"{slice_index:03d}.png"


def key_slice_path(images_root: str | Path, file_name: str) -> Path:
    """The PNG of a DL_info ``File_name`` such as ``000062_01_01_078.png``."""
    from ..datasets.deeplesion import parse_file_name

    p, s, r, k = parse_file_name(file_name)
    return slice_path(images_root, f"{p:06d}_{s:02d}_{r:02d}", k)


def read_stack(
    images_root: str | Path,
    series_ref: str,
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
                         series_ref)
    folder = series_dir(images_root, series_ref)
    cache: dict[int, np.ndarray | None] = {}

    def get(i: int) -> np.ndarray | None:
        if i not in cache:
            p = folder / f"{i:03d}.png"
            cache[i] = read_slice(p).astype(np.float32) if i >= 0 and p.is_file() else None
        return cache[i]

    key = get(key_slice_index)
    if key is None:
        raise ImageError(f"key slice {key_slice_index} not found", str(folder / f"{key_slice_index:03d}.png"))
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
                                 f"(needed for the ±{abs(t):.2f}-slice stack)", str(folder / f"{idx:03d}.png"))
            img = _nearest_towards_key(get, idx, key_index, key)
        if img.shape != key.shape:
            raise ImageError(f"slice {idx} is {img.shape}, key slice is {key.shape}", str(folder / f"{idx:03d}.png"))
        got.append((img, weight))
    total = sum(w for _, w in got)
    return sum(img * (w / total) for img, w in got).astype(np.float32)  # type: ignore[return-value]


def _nearest_towards_key(get, idx: int, key_index: int, key: np.ndarray) -> np.ndarray:
    step = 1 if idx < key_index else -1
    i = idx + step
    while i != key_index:
        img = get(i)
        if img is not None:
            return img
        i += step
    return key
