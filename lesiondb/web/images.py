"""Where the web's crops come from: one slice of a series named by its ``seriesId`` pseudonym.

The graph stores no paths: :class:`ImageLibrary` is given the image folders (``lesiondb serve
--images``) and the graph's pseudonymizer, and finds each series again the way mining does —
DICOM series by their headers (:meth:`DicomTree.by_series_id`), DeepLesion series folders
``PPPPPP_SS_RR`` by name (:func:`lesiondb.datasets.deeplesion.series_ids`). The folders are
scanned once, on the first crop. A DICOM slice is read alone (:func:`read_series_lazy`: headers,
then one file's pixels); a DeepLesion slice is its ``KKK.png``. Decoded slices are kept in a
small LRU (the three window presets of one crop read the slice once).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.pseudonym import Pseudonymizer
from ..datasets import deeplesion as DL
from ..datasets.dicom_tree import DicomTree
from ..errors import ImageError
from ..imaging.dicom import LazySeries, read_series_lazy
from ..imaging.png import read_slice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceRef:
    """Which slice a crop shows: a series (pseudonym; or a DeepLesion folder name from a
    ``--keep-source-ids`` graph's ``imageRef``) and a slice (DICOM: 0-based head first;
    DeepLesion: the ``KKK`` number)."""

    series_id: str | None
    slice_index: int | None
    image_ref: str | None = None


@dataclass(frozen=True)
class _Series:
    kind: str  # dicom | deeplesion
    folder: Path
    series_uid: str | None = None


class SliceNotFound(Exception):
    """A slice that cannot be shown; ``code`` says why without naming a path or a UID."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class ImageLibrary:
    """The series under ``roots``, looked up by pseudonym (see the module doc). Thread-safe."""

    def __init__(self, roots: list[str | Path] | tuple[str | Path, ...] = (), ids: Pseudonymizer | None = None,
                 max_slices: int = 48, max_series: int = 8):
        self.roots = [Path(r) for r in roots]
        self.ids = ids
        self._index: dict[str, _Series] | None = None
        self._lazy: OrderedDict[str, LazySeries] = OrderedDict()
        self._slices: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._max_slices, self._max_series = max_slices, max_series
        self._lock = threading.RLock()

    # -- the index -------------------------------------------------------------------------------
    def index(self) -> dict[str, _Series]:
        """``seriesId`` → series, built once (headers of one file per folder, folder names)."""
        with self._lock:
            if self._index is None:
                self._index = {}
                for root in self.roots:
                    if not root.is_dir():
                        log.warning("images folder not found: %s", root)
                        continue
                    if self.ids is None:
                        continue
                    tree = DicomTree(root)
                    for sid, info in tree.by_series_id(self.ids).items():
                        self._index.setdefault(sid, _Series("dicom", info.folder, info.series_uid))
                    for sid, ref in DL.series_ids(root, self.ids).items():
                        try:
                            self._index.setdefault(sid, _Series("deeplesion", DL.series_folder(root, ref)))
                        except ImageError:
                            continue
            return self._index

    @property
    def ready(self) -> bool:
        """Has the index been built (the folders scanned)?"""
        return self._index is not None

    def summary(self) -> dict[str, int]:
        """How many folders were given and how many series of each kind were found (no paths)."""
        idx = self.index()
        return {"folders": len(self.roots), "series": len(idx),
                "dicomSeries": sum(s.kind == "dicom" for s in idx.values()),
                "deeplesionSeries": sum(s.kind == "deeplesion" for s in idx.values())}

    def _find(self, ref: SliceRef) -> tuple[str, _Series]:
        if not self.roots:
            raise SliceNotFound("no-images-folder")
        if ref.series_id and ref.series_id in self.index():
            return ref.series_id, self.index()[ref.series_id]
        dl_ref = DL.series_ref_of(ref.image_ref)
        if dl_ref:  # a --keep-source-ids DeepLesion graph: the folder name is stored
            for root in self.roots:
                try:
                    return f"dl:{dl_ref}", _Series("deeplesion", DL.series_folder(root, dl_ref))
                except ImageError:
                    continue
        raise SliceNotFound("series-not-found")

    # -- pixels ----------------------------------------------------------------------------------
    def slice_hu(self, ref: SliceRef) -> np.ndarray:
        """The slice in HU (rows, cols); :class:`SliceNotFound` when it cannot be read."""
        if ref.slice_index is None:
            raise SliceNotFound("no-slice-index")
        key, series = self._find(ref)
        k = (key, int(ref.slice_index))
        with self._lock:
            got = self._slices.get(k)
            if got is not None:
                self._slices.move_to_end(k)
                return got
            try:
                hu = self._read(key, series, int(ref.slice_index))
            except (ImageError, OSError, ValueError) as exc:
                # the reason names files of the series: logged here, never sent to a page
                log.warning("slice %s of series %s unreadable: %s", ref.slice_index, ref.series_id or "?",
                            type(exc).__name__)
                log.debug("slice %s of series %s: %s", ref.slice_index, ref.series_id, exc)
                raise SliceNotFound("slice-unreadable") from exc
            self._slices[k] = hu
            while len(self._slices) > self._max_slices:
                self._slices.popitem(last=False)
            return hu

    def _read(self, key: str, series: _Series, index: int) -> np.ndarray:
        if series.kind == "deeplesion":
            return read_slice(series.folder / DL.slice_file(index))
        lazy = self._lazy.get(key)
        if lazy is None:
            lazy = read_series_lazy(series.folder, series.series_uid, allow_gaps=True)
            self._lazy[key] = lazy
            while len(self._lazy) > self._max_series:
                self._lazy.popitem(last=False)
        else:
            self._lazy.move_to_end(key)
        if not 0 <= index < lazy.shape[0]:
            raise ImageError(f"slice {index} outside the series' {lazy.shape[0]} slices", key)
        hu = np.array(lazy.slice_hu(index))
        lazy.release()  # the slice LRU above keeps what is needed again
        return hu
