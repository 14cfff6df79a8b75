"""A region drawn on a new image, embedded and compared with the graph (``lesiondb similar --image``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.results import Result
from ..errors import InputError
from ..graph.engine import Engine
from ..imaging.dicom import read_header, read_series
from ..imaging.patches import extract_patch, extract_patch_from_volume
from ..imaging.png import read_slice, read_stack
from .encoder import Encoder
from .services import active_model, similar_to_vector
from .store import DEFAULT_K


def region_patch(path: str | Path, box_px: tuple[float, float, float, float], spec: Any, *,
                 slice_index: int | None = None, spacing_mm: tuple[float, float] | None = None,
                 slice_interval_mm: float | None = None) -> tuple[Any, dict[str, Any]]:
    """:func:`_region_patch`, its errors naming the image (a box outside it, say)."""
    try:
        return _region_patch(path, box_px, spec, slice_index=slice_index, spacing_mm=spacing_mm,
                             slice_interval_mm=slice_interval_mm)
    except InputError as exc:
        if exc.source is None:
            raise type(exc)(exc.reason, str(path)) from exc
        raise


def _region_patch(path: str | Path, box_px: tuple[float, float, float, float], spec: Any, *,
                  slice_index: int | None = None, spacing_mm: tuple[float, float] | None = None,
                  slice_interval_mm: float | None = None) -> tuple[Any, dict[str, Any]]:
    """The encoder patch of a box drawn on one image: a DeepLesion 16-bit PNG (its neighbours
    ``KKK±n.png`` in the same folder give the 3-slice context) or a DICOM file / series folder.

    Returns (patch, notes). PNGs carry no pixel spacing: pass ``spacing_mm`` (DL_info's
    ``Spacing_mm_px_``). ``slice_index`` picks the slice of a DICOM series (0-based, head first;
    default: the given file's).
    """
    path = Path(path)
    x1, y1, x2, y2 = (float(v) for v in box_px)
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"box {box_px} needs x1 < x2 and y1 < y2 (pixels of the image)")
    notes: dict[str, Any] = {"image": str(path)}
    if path.suffix.lower() == ".png":
        if spacing_mm is None:
            raise InputError("a PNG carries no pixel spacing: pass --spacing SX[,SY] in mm per pixel "
                             "(DL_info's Spacing_mm_px_)", str(path))
        if slice_interval_mm and path.stem.isdigit():
            stack = read_stack(path.parent, int(path.stem), slice_interval_mm, spec.offset_mm)
        else:
            key = read_slice(path).astype(np.float32)
            stack = np.stack([key, key, key])
            notes["note"] = "neighbour slices not used (pass --slice-interval to use KKK±n.png beside the file)"
        notes.update(kind="png", spacingMm=list(spacing_mm))
        return extract_patch(stack, (x1, y1, x2, y2), spacing_mm, spec), notes
    folder = path if path.is_dir() else path.parent
    series_uid = None if path.is_dir() else read_header(path, check_pixels=False).series_uid
    vol = read_series(folder, series_uid, allow_gaps=True)
    if slice_index is None:
        if path.is_dir():
            raise InputError("give --slice N (0-based, head first) with a series folder", str(path))
        matches = [i for i, f in enumerate(vol.files) if f is not None and Path(f).resolve() == path.resolve()]
        if not matches:
            raise InputError("the file is not a slice of its folder's series", str(path))
        slice_index = matches[0]
    why = vol.slice_problem(slice_index)
    if why:
        raise InputError(why, str(folder))
    interval = slice_interval_mm or vol.slice_interval_mm or 1.0
    notes.update(kind="dicom", sliceIndex=slice_index, spacingMm=list(vol.spacing_xy_mm), sliceIntervalMm=interval)
    return extract_patch_from_volume(vol.hu, slice_index, (x1, y1, x2, y2), vol.spacing_xy_mm, interval, spec), notes


def embed_region(encoder: Encoder, path: str | Path, box_px: tuple[float, float, float, float], **kw: Any
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """The embedding (D,) of a box drawn on an image (see :func:`region_patch`)."""
    patch, notes = region_patch(path, box_px, encoder.patch_spec, **kw)
    vec = encoder.embed(patch.image[None].astype(np.float32), patch.box_px[None].astype(np.float32), batch_size=1)[0]
    return vec, notes


@dataclass
class RegionQuery(Result):
    """The lesions most similar to a region drawn on an image: what was read, and the rows."""

    query: dict[str, Any]
    results: list[dict[str, Any]]


def similar_to_region(engine: Engine, encoder: Encoder, path: str | Path, box_px: tuple[float, float, float, float],
                      *, k: int = DEFAULT_K, type_name: str | int | None = None, exact: bool = False,
                      slice_index: int | None = None, spacing_mm: tuple[float, float] | None = None,
                      slice_interval_mm: float | None = None) -> RegionQuery:
    """Embed the box ``box_px`` on the image at ``path`` with ``encoder`` and find the ``k`` nearest
    lesions of the graph (``lesiondb similar --image``). The encoder must be the graph's model."""
    act = active_model(engine)
    if act["modelId"] != encoder.model_id:
        raise InputError(
            f"the graph was embedded with model {act['modelId']} but the encoder is {encoder.model_id}: "
            "pass --model with the graph's model (or re-embed the graph with `lesiondb embed --model …`)")
    vec, notes = embed_region(encoder, path, box_px, slice_index=slice_index, spacing_mm=spacing_mm,
                              slice_interval_mm=slice_interval_mm)
    return RegionQuery(notes, similar_to_vector(engine, vec, k=k, type_name=type_name, exact=exact))
