"""Where the embedding stage gets its patches: a lesion's image, cropped as the encoder wants it.

:func:`read_targets` reads what the stage needs of every lesion in one query (never the
embeddings). A :class:`PatchSource` makes the patches of its lesions: :class:`DeepLesionImages`
from DeepLesion's 16-bit PNG series, :class:`CohortImages` from a folder of DICOM series. Both
find a lesion's series from what the graph stores (its ``seriesId`` pseudonym, matched against
the image folder the user passes; or, with ``--keep-source-ids``, the stored reference), so a
pseudonymised graph needs no path or UID of its own.

A source splits its lesions into :class:`PatchTask` s (whole series, so each file is read once)
and :func:`iter_patches` runs them here or in a pool of worker processes. A lesion whose image is
missing or unreadable becomes a :class:`PatchResult` with the reason; the batch goes on.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..core.pseudonym import Pseudonymizer
from ..datasets import deeplesion as DL
from ..datasets.dicom_tree import DicomTree
from ..errors import InputError
from ..graph.engine import Engine
from ..imaging.dicom import read_series_lazy
from ..imaging.patches import PatchSpec, extract_patch_from_volume, extract_patch_from_window, source_window
from ..imaging.png import SeriesSlices

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What the embedding stage knows of one lesion in the graph."""

    lesion_id: str
    source: str | None
    image_ref: str | None
    key_slice_index: int | None
    bbox_px: tuple[float, ...] | None
    spacing_mm: tuple[float, float] | None
    slice_interval_mm: float | None
    content_hash: str | None
    model_id: str | None
    embedded_hash: str | None
    patient_id: str
    source_id: str | None
    type_code: int
    series_id: str | None = None
    series_uid: str | None = None

    def up_to_date(self, model_id: str) -> bool:
        return self.model_id == model_id and self.embedded_hash is not None \
            and self.embedded_hash == self.content_hash


def read_targets(engine: Engine) -> list[Target]:
    """Every lesion with what its patch needs (one query; no embeddings read)."""
    out = []
    for r in engine.run("embedding_targets"):
        f = r["f"]
        sx, sy = f[5], f[6]
        out.append(Target(
            lesion_id=f[0], source=f[1], image_ref=f[2],
            key_slice_index=None if f[3] is None else int(f[3]),
            bbox_px=None if f[4] is None else tuple(float(v) for v in f[4]),
            spacing_mm=None if sx is None else (float(sx), float(sy if sy is not None else sx)),
            slice_interval_mm=None if f[7] is None else float(f[7]),
            content_hash=f[8], model_id=f[9], embedded_hash=f[10], patient_id=f[11] or "",
            source_id=f[12], type_code=int(f[13]) if f[13] is not None else -1, series_id=f[14],
            series_uid=f[15]))
    return sorted(out, key=lambda t: t.lesion_id)


# -- patch sources ------------------------------------------------------------------------------------
@dataclass
class PatchResult:
    """A lesion's patch, or why there is none: ``problem`` names the series by its pseudonym (it is
    stored in the graph and reported in ``--json``), ``detail`` names the file (for the log)."""

    target: Target
    image: np.ndarray | None = None  # (3, S, S) float32
    box: np.ndarray | None = None  # (4,)
    problem: str | None = None
    detail: str | None = None


def failed(t: Target, reason: str, where: str | None = None) -> PatchResult:
    """A lesion without a patch: the reason under the series' pseudonym, the file in ``detail``."""
    series = f"series {t.series_id}" if t.series_id else "its series"
    slice_ = f", slice {t.key_slice_index}" if t.key_slice_index is not None else ""
    return PatchResult(t, problem=f"{series}{slice_}: {reason}", detail=f"{where}: {reason}" if where else None)


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, InputError) else str(exc)


@dataclass
class PatchTask:
    """A unit of reading + cropping that a worker process does alone: the lesions of one or a
    few whole series (a series is never split, so each file is read once)."""

    groups: list[tuple[str, list[Target]]]

    @property
    def targets(self) -> list[Target]:
        return [t for _, ts in self.groups for t in ts]


#: Lesions per task (whole series are added until a task holds at least this many).
TASK_LESIONS = 24


@dataclass
class PatchSource:
    """Makes patches for targets; times its ``read`` (decode) and ``crop`` (patch) work.

    A source splits its targets into :class:`PatchTask` s (:meth:`tasks`, in this process) and
    runs one task (:meth:`run_task`, possibly in a worker process: the source is pickled there
    once, as :meth:`worker_copy`); :func:`iter_patches` drives both. A source may instead
    override :meth:`patches` alone (it then runs in this process).
    """

    spec: Any  # lesiondb.imaging.patches.PatchSpec
    timings: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "crop": 0.0})
    task_lesions: int = TASK_LESIONS  # whole series are put in a task until it holds this many

    def accepts(self, t: Target) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def tasks(self, targets: list[Target]) -> Iterator[PatchResult | PatchTask]:  # pragma: no cover - abstract
        """Problems found without reading (as results) and the tasks for the rest."""
        raise NotImplementedError

    def run_task(self, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:  # pragma: no cover
        raise NotImplementedError

    def worker_copy(self) -> PatchSource:
        """What a worker process needs of this source (no lookup tables only :meth:`tasks` uses)."""
        return self

    def patches(self, targets: list[Target]) -> Iterator[PatchResult]:
        return iter_patches(self, targets, workers=0)

    def _add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - t0
        return now


def _group_tasks(groups: dict[str, list[Target]], per_task: int = TASK_LESIONS) -> Iterator[PatchTask]:
    cur: list[tuple[str, list[Target]]] = []
    n = 0
    for ref in sorted(groups):
        cur.append((ref, groups[ref]))
        n += len(groups[ref])
        if n >= per_task:
            yield PatchTask(cur)
            cur, n = [], 0
    if cur:
        yield PatchTask(cur)


class DeepLesionImages(PatchSource):
    """DeepLesion slices ``images_root/PPPPPP_SS_RR/KKK.png`` (or ``…/Images_png/…``).

    A lesion's series folder is found from its ``seriesId`` (the folders under ``images_root``
    pseudonymised with ``ids``, the graph's key), else from its key-slice file name: ``file_names``
    (lesionId → ``File_name``, from a DL_info.csv) or its ``sourceId`` (stored with
    ``--keep-source-ids``). Each file of a series is read once for all of its lesions, and decoded
    only down to the last row any of their patches needs (:class:`lesiondb.imaging.png.SeriesSlices`).
    """

    def __init__(self, images_root: str | Path, spec: PatchSpec, ids: Pseudonymizer | None = None,
                 file_names: dict[str, str] | None = None):
        super().__init__(spec)
        self.root = Path(images_root)
        self.ids = ids
        self.file_names = file_names or {}
        self._by_series_id: dict[str, str] | None = None

    def accepts(self, t: Target) -> bool:
        return t.source == "deeplesion"

    def series_ids(self) -> dict[str, str]:
        """seriesId pseudonym → series folder name, for every series folder under the images root."""
        if self._by_series_id is None:
            self._by_series_id = DL.series_ids(self.root, self.ids) if self.ids is not None else {}
        return self._by_series_id

    def locate(self, t: Target) -> tuple[str, int] | str:
        """(series folder name, key slice number) of a lesion, or why it cannot be found."""
        if t.series_id and t.key_slice_index is not None:
            ref = self.series_ids().get(t.series_id)
            if ref is not None:
                return ref, t.key_slice_index
        fname = self.file_names.get(t.lesion_id) or (t.source_id if t.source_id and t.source_id.endswith(".png")
                                                     else None)
        if fname is None:
            return (f"its series is not among the series folders under {self.root} (is that the Images_png "
                    "folder, and the pseudonym key the ingest's?)")
        try:
            return DL.split_file_name(fname)
        except InputError as exc:
            return str(exc)

    def worker_copy(self) -> DeepLesionImages:
        return DeepLesionImages(self.root, self.spec)

    def tasks(self, targets: list[Target]) -> Iterator[PatchResult | PatchTask]:
        groups: dict[str, list[Target]] = {}
        for t in targets:
            where = self.locate(t)
            if isinstance(where, str):
                yield PatchResult(t, problem=where)  # names no file
                continue
            ref, key = where
            if t.bbox_px is None or t.spacing_mm is None or not t.slice_interval_mm:
                yield failed(t, "lesion lacks box or spacing in the graph; re-ingest it", f"{ref}/{DL.slice_file(key)}")
                continue
            # the key slice and its file travel in the target (the worker has no look-up tables)
            groups.setdefault(ref, []).append(replace(t, key_slice_index=key, image_ref=f"{ref}/{DL.slice_file(key)}"))
        yield from _group_tasks(groups, self.task_lesions)

    def run_task(self, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
        out: list[PatchResult] = []
        tm = {"read": 0.0, "crop": 0.0}
        c0 = time.process_time()
        t0 = time.perf_counter()
        opened: dict[str, SeriesSlices | Exception] = {}
        for ref, _ in task.groups:
            try:
                opened[ref] = SeriesSlices(DL.series_folder(self.root, ref))
            except (InputError, OSError) as exc:
                opened[ref] = exc
        planned = _prefetch(opened, task, self.spec)  # each lesion's stack slots, planned once
        tm["read"] += time.perf_counter() - t0
        for ref, members in task.groups:
            t0 = time.perf_counter()
            series = opened[ref]
            if isinstance(series, Exception):
                tm["read"] += time.perf_counter() - t0
                out += [failed(t, _reason(series), t.image_ref) for t in members]
                continue
            plans = []
            for t in members:  # what each lesion needs: slices, weights, the window of the key slice
                try:
                    slots = planned.get(t.lesion_id) or series.plan(t.key_slice_index, t.slice_interval_mm,
                                                                    self.spec.offset_mm)
                    shape = series.check_shapes({i for slot in slots for i, _ in slot}, t.key_slice_index)
                    win = source_window(t.bbox_px, t.spacing_mm, self.spec, shape)
                except (InputError, OSError) as exc:
                    out.append(failed(t, _reason(exc), t.image_ref))
                    continue
                for slot in slots:
                    for i, _ in slot:
                        series.need(i, win[1], win[3])
                plans.append((t, slots, win))
            for i in sorted({i for _, slots, _ in plans for slot in slots for i, _ in slot}):
                try:  # each file decoded once, down to the lowest row any of its lesions needs
                    series.pixels(i)
                except (InputError, OSError):
                    pass  # said for each lesion needing it, below
            t0 = _acc(tm, "read", t0)
            for t, slots, (ya, yb, xa, xb) in plans:
                try:
                    stack = series.window(slots, ya, yb, xa, xb)
                    patch = extract_patch_from_window(stack, (ya, xa), t.bbox_px, t.spacing_mm, self.spec)
                except (InputError, OSError) as exc:
                    out.append(failed(t, _reason(exc), t.image_ref))
                    continue
                out.append(PatchResult(t, patch.image, patch.box_px))
            _acc(tm, "crop", t0)
        tm["cpu"] = time.process_time() - c0
        return out, tm


def _prefetch(opened: dict[str, Any], task: PatchTask, spec: Any) -> dict[str, list]:
    """Plan each lesion's stack slots (lesionId → slots; a lesion whose plan fails is left out,
    and its reason is given when it is read), and ask the kernel to start reading every file
    they need (``POSIX_FADV_WILLNEED``): the disk then works on many files while this process
    decodes the first ones. Reading one file after the other left the decoder idle on a cold
    page cache (measured)."""
    planned: dict[str, list] = {}
    for ref, members in task.groups:
        series = opened.get(ref)
        if series is None or isinstance(series, Exception):
            continue
        files = set()
        for t in members:
            try:
                planned[t.lesion_id] = series.plan(t.key_slice_index, t.slice_interval_mm, spec.offset_mm)
            except (InputError, OSError):
                continue  # said for the lesion when it is read
            files |= {i for slot in planned[t.lesion_id] for i, _ in slot}
        if not hasattr(os, "posix_fadvise"):  # pragma: no cover - not POSIX
            continue
        for i in sorted(files):
            try:
                fd = os.open(series.path(i), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:  # pragma: no cover
                pass
            finally:
                os.close(fd)
    return planned


def _acc(tm: dict[str, float], stage: str, t0: float) -> float:
    now = time.perf_counter()
    tm[stage] = tm.get(stage, 0.0) + now - t0
    return now


class CohortImages(PatchSource):
    """The DICOM series under a folder (a cohort folder, a PACS export). A lesion's series is found
    by its headers: the ``seriesId`` pseudonym under ``ids`` (the graph's key), else the stored
    ``seriesUid`` or ``imageRef`` (``--keep-source-ids``), however the folders are named. Each
    series' headers are read once (no pixels); then only the slices its lesions' patches need
    are read, each once."""

    def __init__(self, cohort_root: str | Path, spec: PatchSpec, ids: Pseudonymizer | None = None,
                 tree: DicomTree | None = None):
        super().__init__(spec)
        self.root = Path(cohort_root)
        self.ids = ids
        self.tree = tree or DicomTree(self.root)
        self._by_series_id: dict[str, Any] | None = None

    def accepts(self, t: Target) -> bool:
        return t.source == "dicom"

    def worker_copy(self) -> CohortImages:
        return CohortImages(self.root, self.spec, tree=DicomTree(self.root))

    def folder(self, t: Target) -> Path | None:
        """The lesion's series folder under the root, or None."""
        if t.series_id and self.ids is not None:
            if self._by_series_id is None:
                self._by_series_id = self.tree.by_series_id(self.ids)
            info = self._by_series_id.get(t.series_id)
            if info is not None:
                return info.folder
        if t.image_ref and (self.root / t.image_ref).is_dir():
            return self.root / t.image_ref
        return self.tree.folder(t.series_uid) if t.series_uid else None

    def tasks(self, targets: list[Target]) -> Iterator[PatchResult | PatchTask]:
        groups: dict[str, list[Target]] = {}
        for t in targets:
            folder = self.folder(t)
            if folder is None:
                yield PatchResult(t, problem=f"its series is not among the DICOM series under {self.root} (is that "
                                             "the folder that was ingested, and the pseudonym key the ingest's?)")
                continue
            groups.setdefault(str(folder), []).append(t)
        yield from _group_tasks(groups, self.task_lesions)

    def run_task(self, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
        out: list[PatchResult] = []
        tm = {"read": 0.0, "crop": 0.0}
        c0 = time.process_time()
        for ref, members in task.groups:
            folder = Path(ref)
            t0 = time.perf_counter()
            try:
                series = read_series_lazy(folder, members[0].series_uid, allow_gaps=True)
            except (InputError, OSError) as exc:
                _acc(tm, "read", t0)
                out += [failed(t, _reason(exc), str(folder)) for t in members]
                continue
            n = series.shape[0]
            interval = series.volume.slice_interval_mm
            subs = []
            for t in members:
                key = t.key_slice_index if t.key_slice_index is not None else -1
                why = series.slice_problem(key)  # reads the key slice
                if why or t.bbox_px is None:
                    out.append(failed(t, why or "lesion has no box", str(folder)))
                    continue
                iv = interval or t.slice_interval_mm or 1.0
                off = self.spec.offset_mm / iv
                lo = min(max(math.floor(key - off), 0), key)
                hi = max(min(math.ceil(key + off), n - 1), key)
                subs.append((t, iv, lo, series.sub_volume(lo, hi)))  # each file read once (cached)
            t0 = _acc(tm, "read", t0)
            for t, iv, lo, sub in subs:
                try:
                    patch = extract_patch_from_volume(sub, t.key_slice_index - lo, t.bbox_px,
                                                      series.volume.spacing_xy_mm, iv, self.spec)
                except InputError as exc:
                    out.append(failed(t, _reason(exc), str(folder)))
                    continue
                out.append(PatchResult(t, patch.image, patch.box_px))
            _acc(tm, "crop", t0)
        tm["cpu"] = time.process_time() - c0
        return out, tm


# -- running the sources: in this process or in a pool of worker processes ----------------------------
_WORKER_SOURCE: PatchSource | None = None


def _one_blas_thread():
    """BLAS on one thread for the crop's small matrix products: with the cores busy (torch, the
    graph server, other work), multi-threaded BLAS spins and made them ~8× slower (measured)."""
    return threadpool_limits(1, user_api="blas")


def _worker_init(source: PatchSource) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    threadpool_limits(1)  # one BLAS thread per worker: the workers are the parallelism


def _worker_run(task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
    assert _WORKER_SOURCE is not None
    return _run_guarded(_WORKER_SOURCE, task)


def _run_guarded(source: PatchSource, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
    """``source.run_task``; an unexpected error fails the task's lesions, with the reason, not the batch."""
    try:
        return source.run_task(task)
    except Exception as exc:  # a bug or an odd file must not stop the other lesions
        log.exception("reading %s failed", ", ".join(ref for ref, _ in task.groups))
        why = f"reading failed ({type(exc).__name__}: {exc})"
        return [PatchResult(t, problem=why) for t in task.targets], {}


def default_workers() -> int:
    """Worker processes for reading and cropping: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def iter_patches(source: PatchSource, targets: list[Target], workers: int | None = 0, *,
                 in_flight: int | None = None) -> Iterator[PatchResult]:
    """The patches of ``targets`` (order not kept). ``workers`` ≥ 2 reads and crops in that many
    worker processes while the caller consumes (embeds, writes); at most ``in_flight`` tasks
    (default ``2 × workers``) are queued or done-but-unconsumed, which bounds memory. An error in
    a task fails its lesions (each gets the reason) and the rest goes on; a dead worker pool
    makes the remaining tasks run here. ``source.timings`` gets the workers' read/crop seconds
    and ``wait``: how long this process waited for them."""
    workers = default_workers() if workers is None else int(workers)
    todo = list(source.tasks(targets))
    if workers < 2 or sum(isinstance(x, PatchTask) for x in todo) < 2:  # a pool would not pay for itself
        for item in todo:
            if isinstance(item, PatchResult):
                yield item
                continue
            with _one_blas_thread():
                res, tm = _run_guarded(source, item)
            _merge(source.timings, tm)
            yield from res
        return
    limit = max(1, in_flight or 2 * workers)
    items = iter(todo)
    ready: list[PatchResult] = []
    pending: dict[Any, PatchTask] = {}
    broken = False
    # spawn: a fresh interpreter that imports only numpy, Pillow and pydicom (no torch threads, no
    # locks held by the parent's threads, as fork could leave)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(source.worker_copy(),)) as pool:
        try:
            while True:
                while not broken and len(pending) < limit:
                    item = next(items, None)
                    if item is None:
                        break
                    if isinstance(item, PatchResult):
                        ready.append(item)
                    else:
                        pending[pool.submit(_worker_run, item)] = item
                if ready:
                    yield from ready
                    ready.clear()
                    continue
                if not pending:
                    if broken:  # the pool died: the rest here
                        yield from iter_patches(_Rest(source, items), [], workers=0)
                    break
                t0 = time.perf_counter()
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                _acc(source.timings, "wait", t0)
                for fut in done:
                    task = pending.pop(fut)
                    try:
                        res, tm = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        log.warning("a reader process died; reading the rest in this process")
                        res, tm = _run_guarded(source, task)
                    except Exception as exc:  # e.g. a result that could not be sent back
                        why = f"reading failed in a worker process ({type(exc).__name__}: {exc})"
                        res, tm = [PatchResult(t, problem=why) for t in task.targets], {}
                    _merge(source.timings, tm)
                    ready.extend(res)
        finally:
            for fut in pending:
                fut.cancel()


class _Rest(PatchSource):
    """The tasks not yet submitted when the pool broke, run by ``source`` in this process."""

    def __init__(self, source: PatchSource, items: Iterator[PatchResult | PatchTask]):
        super().__init__(source.spec, source.timings)
        self._source, self._items = source, items

    def tasks(self, targets: list[Target]) -> Iterator[PatchResult | PatchTask]:
        return self._items

    def run_task(self, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
        return self._source.run_task(task)


def _merge(into: dict[str, float], tm: dict[str, float]) -> None:
    for k_, v in tm.items():
        into[k_] = into.get(k_, 0.0) + v


def uses_tasks(source: PatchSource) -> bool:
    return type(source).tasks is not PatchSource.tasks
