"""The embedding stage of ingest: read → crop → embed → write → kNN → SIMILAR_TO edges.

Works on lesions already in the graph (the records ingest writes them first): it reads where each
lesion's image is (:func:`read_targets`), makes its patch from DeepLesion PNGs
(:class:`DeepLesionImages`) or a cohort's DICOM series (:class:`CohortImages`), embeds the
patches in batches with the encoder, and hands the vectors to
:class:`lesiondb.embedding.store.EmbeddingRun`, which writes them and keeps the SIMILAR_TO edges exact.

- Only lesions not yet embedded by this model, or whose data changed since (``contentHash`` vs
  ``embeddedHash``), are embedded: re-running ingest re-embeds nothing and writes no edge.
- A lesion whose image is missing or unreadable is reported (naming the file and the fix),
  marked ``embedded: false`` with the reason, and skipped; the batch goes on.
- ``embed_deeplesion(app, images_dir)`` is what ``lesiondb ingest deeplesion --images`` calls;
  ``embed_cohort(app, cohort_dir)`` the same for DICOM cohorts; both are what ``lesiondb embed``
  runs.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LesionDBError, ModelError
from ..graph.engine import Engine
from . import store as sim

log = logging.getLogger(__name__)

#: Patches embedded per encoder call. 128 was fastest of 64–512 for the default encoder, on 1
#: thread (3,500 lesions/s) and on 2 idle cores (6,300/s; 512: 5,000/s), measured 2026-11-26.
EMBED_BATCH = 128
#: Lesions whose patches are buffered before an embed + write round.
ROUND = 2048
MAX_PROBLEMS_SHOWN = 50


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
            source_id=f[12], type_code=int(f[13]) if f[13] is not None else -1))
    return sorted(out, key=lambda t: t.lesion_id)


# -- patch sources ------------------------------------------------------------------------------------
@dataclass
class PatchResult:
    target: Target
    image: np.ndarray | None = None  # (3, S, S) float32
    box: np.ndarray | None = None  # (4,)
    problem: str | None = None


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

    The key slice's file name comes from ``file_names`` (lesionId → ``File_name``, from the
    DL_info.csv) or from the lesion's ``sourceId`` (stored with ``--keep-source-ids``). Each file
    of a series is read once for all of its lesions, and decoded only down to the last row any of
    their patches needs (:class:`lesiondb.imaging.png.SeriesSlices`).
    """

    def __init__(self, images_root: str | Path, spec: Any, file_names: dict[str, str] | None = None):
        super().__init__(spec)
        self.root = Path(images_root)
        self.file_names = file_names or {}

    def accepts(self, t: Target) -> bool:
        return t.source == "deeplesion"

    def file_name(self, t: Target) -> str | None:
        return self.file_names.get(t.lesion_id) or (t.source_id if t.source_id and t.source_id.endswith(".png")
                                                    else None)

    def worker_copy(self) -> DeepLesionImages:
        return DeepLesionImages(self.root, self.spec)

    def tasks(self, targets: list[Target]) -> Iterator[PatchResult | PatchTask]:
        from ..datasets.deeplesion import parse_file_name

        groups: dict[str, list[Target]] = {}
        for t in targets:
            fname = self.file_name(t)
            if fname is None:
                yield PatchResult(t, problem="key slice file name unknown: pass the DL_info.csv "
                                             "(--dl-info) or ingest with --keep-source-ids")
                continue
            if t.bbox_px is None or t.spacing_mm is None or not t.slice_interval_mm:
                yield PatchResult(t, problem=f"{fname}: lesion lacks box or spacing in the graph; re-ingest it")
                continue
            try:
                p, s, r, k = parse_file_name(fname)
            except (InputError, ValueError) as exc:
                yield PatchResult(t, problem=f"{fname}: {exc}")
                continue
            # the key slice travels in the target (the worker has no file-name table)
            groups.setdefault(f"{p:06d}_{s:02d}_{r:02d}", []).append(_with_key(t, k, fname))
        yield from _group_tasks(groups, self.task_lesions)

    def run_task(self, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
        from ..imaging.patches import extract_patch_from_window, source_window
        from ..imaging.png import SeriesSlices, series_dir

        out: list[PatchResult] = []
        tm = {"read": 0.0, "crop": 0.0}
        c0 = time.process_time()
        t0 = time.perf_counter()
        opened: dict[str, SeriesSlices | Exception] = {}
        for ref, _ in task.groups:
            try:
                opened[ref] = SeriesSlices(series_dir(self.root, ref))
            except (InputError, OSError) as exc:
                opened[ref] = exc
        planned = _prefetch(opened, task, self.spec)  # each lesion's stack slots, planned once
        tm["read"] += time.perf_counter() - t0
        for ref, members in task.groups:
            t0 = time.perf_counter()
            series = opened[ref]
            if isinstance(series, Exception):
                tm["read"] += time.perf_counter() - t0
                out += [PatchResult(t, problem=f"{t.source_id}: {series}") for t in members]
                continue
            plans = []
            for t in members:  # what each lesion needs: slices, weights, the window of the key slice
                try:
                    slots = planned.get(t.lesion_id) or series.plan(t.key_slice_index, t.slice_interval_mm,
                                                                    self.spec.offset_mm)
                    shape = series.check_shapes({i for slot in slots for i, _ in slot}, t.key_slice_index)
                    win = source_window(t.bbox_px, t.spacing_mm, self.spec, shape)
                except (InputError, OSError) as exc:
                    out.append(PatchResult(t, problem=f"{t.source_id}: {exc}"))
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
                    out.append(PatchResult(t, problem=f"{t.source_id}: {exc}"))
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
    import os

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


def _with_key(t: Target, key: int, fname: str) -> Target:
    """The target with its key slice index and file name (``source_id``) filled in."""
    from dataclasses import replace

    return replace(t, key_slice_index=key, source_id=fname)


def _acc(tm: dict[str, float], stage: str, t0: float) -> float:
    now = time.perf_counter()
    tm[stage] = tm.get(stage, 0.0) + now - t0
    return now


class CohortImages(PatchSource):
    """A cohort folder's DICOM series (cohort folder contract); ``imageRef`` is the series folder
    relative to the cohort root. Each series' headers are read once (no pixels); then only the
    slices its lesions' patches need are read, each once."""

    def __init__(self, cohort_root: str | Path, spec: Any):
        super().__init__(spec)
        self.root = Path(cohort_root)

    def accepts(self, t: Target) -> bool:
        return t.source == "dicom"

    def tasks(self, targets: list[Target]) -> Iterator[PatchResult | PatchTask]:
        groups: dict[str, list[Target]] = {}
        for t in targets:
            if not t.image_ref:
                yield PatchResult(t, problem="no imageRef on the lesion (not from a cohort ingest)")
                continue
            groups.setdefault(t.image_ref, []).append(t)
        yield from _group_tasks(groups, self.task_lesions)

    def run_task(self, task: PatchTask) -> tuple[list[PatchResult], dict[str, float]]:
        from ..imaging.dicom import read_series_lazy
        from ..imaging.patches import extract_patch_from_volume

        out: list[PatchResult] = []
        tm = {"read": 0.0, "crop": 0.0}
        c0 = time.process_time()
        for ref, members in task.groups:
            folder = self.root / ref
            t0 = time.perf_counter()
            try:
                series = read_series_lazy(folder, allow_gaps=True)
            except (InputError, OSError) as exc:
                _acc(tm, "read", t0)
                out += [PatchResult(t, problem=f"{folder}: {exc} (is {self.root} the cohort folder that was "
                                                f"ingested?)") for t in members]
                continue
            n = series.shape[0]
            interval = series.volume.slice_interval_mm
            subs = []
            for t in members:
                key = t.key_slice_index if t.key_slice_index is not None else -1
                why = series.slice_problem(key)  # reads the key slice
                if why or t.bbox_px is None:
                    out.append(PatchResult(t, problem=f"{folder}: {why or 'lesion has no box'}"))
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
                    out.append(PatchResult(t, problem=f"{folder}: {exc}"))
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
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()


def _worker_init(source: PatchSource) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source
    try:  # one BLAS thread per worker: the workers are the parallelism
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


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
    import os

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
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

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


def _uses_tasks(source: PatchSource) -> bool:
    return type(source).tasks is not PatchSource.tasks


# -- models ----------------------------------------------------------------------------------------
def load_encoder(path: str | Path | None = None):
    """The encoder at ``path`` (a model folder or ``model.pt``), else the packaged default model,
    prepared for fast CPU inference. Raises :class:`ModelError` when there is none."""
    try:
        from ..nn.infer import load_default_model, prepare_for_inference
        from ..nn.model_io import load_model
    except ImportError as exc:  # torch missing, or the nn package incomplete
        raise ModelError(f"the encoder is not available in this installation ({exc})") from exc
    model = load_model(path) if path else load_default_model()
    return prepare_for_inference(model)


def embed_patches_fn(model: Any, batch_size: int = EMBED_BATCH, threads: int | None = None
                     ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``embed(images, boxes)`` with the encoder: ``batch_size`` patches per call, on ``threads``
    torch threads (None: torch's setting)."""
    from ..nn.infer import embed_patches

    return lambda images, boxes: embed_patches(model, images, boxes, batch_size=batch_size, threads=threads)


def embed_threads(workers: int) -> int | None:
    """Torch threads for inference while ``workers`` reader processes run: one (OpenMP threads
    that wait for each other spin, and lose several times over when the cores are busy: measured
    3,000 lesions/s on 1 thread against 900 on 2 with the cores shared); torch's own setting
    without workers."""
    return 1 if workers >= 2 else None


# -- the stage --------------------------------------------------------------------------------------
Progress = Callable[[str, int | None], Any]  # (stage, total) -> a tqdm-like bar (update, close)


def embed_targets(engine: Engine, targets: list[Target], source: PatchSource, model: sim.ModelInfo,
                  embed: Callable[[np.ndarray, np.ndarray], np.ndarray], *, k: int = sim.DEFAULT_K,
                  force: bool = False, cache_dir: str | Path | None = None, progress: Progress | None = None,
                  round_size: int = ROUND, workers: int | None = 0) -> dict[str, Any]:
    """Embed the ``targets`` that ``source`` accepts and are not up to date for ``model``; write
    them; rebuild the SIMILAR_TO edges that change. Returns the run's summary.

    ``workers`` ≥ 2 reads and crops images in that many processes while this one embeds and
    writes (:func:`iter_patches`; None: one per core); 0 or 1 reads here."""
    t_start = time.perf_counter()
    mine = [t for t in targets if source.accepts(t)]
    todo = [t for t in mine if force or not t.up_to_date(model.model_id)]
    run = sim.EmbeddingRun(engine, model, k=k, cache_dir=cache_dir,
                           progress=(lambda stage, total: _bar_update(progress, stage, total)) if progress else None)
    run.begin(expected=len(todo))
    problems: list[tuple[str, str]] = []
    t_embed = 0.0
    bar = progress("embed", len(todo)) if progress else None
    buf: list[PatchResult] = []

    def flush() -> None:
        nonlocal t_embed
        if not buf:
            return
        images = np.stack([b.image for b in buf]).astype(np.float32, copy=False)
        boxes = np.stack([b.box for b in buf]).astype(np.float32, copy=False)
        t0 = time.perf_counter()
        vecs = embed(images, boxes)
        t_embed += time.perf_counter() - t0
        run.add([b.target.lesion_id for b in buf], vecs, [b.target.patient_id for b in buf],
                [b.target.type_code for b in buf], [b.target.content_hash for b in buf])
        if bar is not None:
            bar.update(len(buf))
        buf.clear()

    try:
        patches = iter_patches(source, todo, workers) if _uses_tasks(source) else source.patches(todo)
        for res in patches:
            if res.problem is not None:
                problems.append((res.target.lesion_id, res.problem))
                if len(problems) <= MAX_PROBLEMS_SHOWN:  # a folder holding part of the images is common
                    log.warning("lesion %s not embedded: %s", res.target.lesion_id, res.problem)
                if bar is not None:
                    bar.update(1)
                continue
            buf.append(res)
            if len(buf) >= round_size:
                flush()
        flush()
    finally:
        if bar is not None:
            bar.close()
    if len(problems) > MAX_PROBLEMS_SHOWN:
        log.warning("%d more lesions not embedded (each is marked in the graph; --json lists the first %d)",
                    len(problems) - MAX_PROBLEMS_SHOWN, MAX_PROBLEMS_SHOWN)
    run.mark_missing(problems)
    report = run.finish()
    timings = {"read": source.timings["read"], "crop": source.timings["crop"], "embed": t_embed,
               **{k_: v for k_, v in report.timings.items()}}
    if "wait" in source.timings:  # with worker processes: read and crop are their seconds, summed
        timings["readWait"] = source.timings["wait"]
    if "cpu" in source.timings:  # CPU seconds of reading + cropping (all processes)
        timings["readCpu"] = source.timings["cpu"]
    out = {
        "modelId": model.model_id, "k": k,
        "lesions": len(mine), "upToDate": len(mine) - len(todo),
        "embedded": report.embedded, "notEmbedded": len(problems),
        "totalEmbedded": report.total_embedded, "similarEdgesWritten": report.edges_written,
        "lesionsRewired": report.lesions_rewired, "staleEdgesDeleted": report.stale_edges_deleted,
        "knn": report.knn_mode, "vectorIndex": report.vector_index, "stateFrom": report.state_from,
        "seconds": {k_: round(v, 3) for k_, v in timings.items()},
        "totalSeconds": round(time.perf_counter() - t_start, 3),
        "embedProblems": [{"lesionId": i, "reason": r} for i, r in problems[:MAX_PROBLEMS_SHOWN]],
    }
    if report.other_models:
        out["lesionsOfOtherModels"] = report.other_models
    return out


def _bar_update(progress: Progress, stage: str, total: int | None) -> Callable[[int], None]:
    bar = progress(stage, total)
    if not total:
        bar.close()

    def update(n: int) -> None:
        bar.update(n)
        if total is not None and bar.n >= total:
            bar.close()
    return update


# -- entry points with the CLI's app context ------------------------------------------------------------
def _app_progress(app: Any) -> Progress:
    from ..cli.common import progress_bar

    return lambda stage, total: progress_bar(app, total, stage, "lesion")


def _context_param(name: str) -> Any:
    """A parameter of the click command running now (the ingest command's DL_info path)."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:  # pragma: no cover
        return None
    return ctx.params.get(name) if ctx is not None else None


def deeplesion_file_names(dl_info: str | Path, ids: Any) -> dict[str, str]:
    """lesionId → DeepLesion ``File_name`` for every valid row of a DL_info.csv (pseudonymised
    with the same key as the ingest, so the ids are the graph's)."""
    from ..datasets.deeplesion import read_dl_info

    out: dict[str, str] = {}
    for _ in read_dl_info(dl_info, ids, file_names=out):
        pass
    return out


def _encoder_or_none(model_path: str | Path | None) -> Any:
    """The encoder, or (with no ``model_path`` and no default model installed) a summary saying
    the lesions were stored without embeddings — ingest goes on without failing."""
    try:
        return load_encoder(model_path)
    except (ModelError, LesionDBError) as exc:
        if model_path:
            raise
        return {"embedded": 0, "embedNote": f"lesions stored without embeddings: {exc}. Embed them later "
                                            "with `lesiondb embed --model PATH` (see --help)"}


def embed_deeplesion(app: Any, images_dir: str | Path, dl_info: str | Path | None = None, *,
                     model_path: str | Path | None = None, k: int = sim.DEFAULT_K, force: bool = False,
                     pseudonym_key: str | None = None, batch_size: int = EMBED_BATCH,
                     workers: int | None = None, file_names: dict[str, str] | None = None) -> dict[str, Any]:
    """Embed the graph's DeepLesion lesions from the PNGs under ``images_dir``.

    Key-slice files are found through ``dl_info`` (defaults to the DL_info.csv of the running
    ``ingest deeplesion`` command) or the lesions' stored source ids. Returns a summary (merged
    into the ingest report); with no encoder available, says so instead of failing the ingest.
    ``workers``: reader processes (None: one per core; 0: read in this process). ``file_names``:
    lesionId → File_name already read (by the ingest of ``dl_info``), so the file is not read again.
    """
    from ..core.pseudonym import Pseudonymizer

    model = _encoder_or_none(model_path)
    if isinstance(model, dict):
        return model
    dl_info = dl_info or _context_param("dl_info")
    key = pseudonym_key or _context_param("pseudonym_key")
    if file_names is not None:
        names = file_names
    else:
        names = deeplesion_file_names(dl_info, Pseudonymizer.from_data_dir(app.data_dir, key)) if dl_info else {}
    source = DeepLesionImages(images_dir, model.patch_spec, names)
    return embed_graph(app.engine(), source, model, workers=default_workers() if workers is None else workers,
                       k=k, force=force, batch_size=batch_size, cache_dir=Path(app.data_dir) / "embeddings",
                       progress=_app_progress(app))


def embed_cohort(app: Any, cohort_dir: str | Path, *, model_path: str | Path | None = None,
                 k: int = sim.DEFAULT_K, force: bool = False, batch_size: int = EMBED_BATCH,
                 workers: int | None = None) -> dict[str, Any]:
    """Embed the graph's DICOM-cohort lesions from the series under ``cohort_dir`` (the folder that
    was ingested with ``lesiondb ingest dicom``). Like :func:`embed_deeplesion`, says so instead of
    failing when no ``model_path`` is given and no default model is installed."""
    model = _encoder_or_none(model_path)
    if isinstance(model, dict):
        return model
    cohort_dir = Path(cohort_dir)
    if not cohort_dir.is_dir():
        raise InputError("cohort folder not found", str(cohort_dir))
    source = CohortImages(cohort_dir, model.patch_spec)
    return embed_graph(app.engine(), source, model, workers=default_workers() if workers is None else workers,
                       k=k, force=force, batch_size=batch_size, cache_dir=Path(app.data_dir) / "embeddings",
                       progress=_app_progress(app))


def embed_graph(engine: Engine, source: PatchSource, model: Any, *, workers: int = 0, k: int = sim.DEFAULT_K,
                force: bool = False, batch_size: int = EMBED_BATCH, cache_dir: str | Path | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
    """Embed the lesions of ``engine``'s graph that ``source`` has images for with a loaded
    encoder (:func:`load_encoder`): :func:`embed_targets` over every lesion the graph holds."""
    return embed_targets(engine, read_targets(engine), source, sim.ModelInfo.from_encoder(model),
                         embed_patches_fn(model, batch_size, embed_threads(workers)), k=k, force=force,
                         cache_dir=cache_dir, progress=progress, workers=workers)


def rebuild_edges(engine: Engine, k: int = sim.DEFAULT_K, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Recompute the active model's SIMILAR_TO edges from the stored embeddings (e.g. with another
    k); only lesions whose list changes are rewritten."""
    act = sim.active_model(engine)
    if act is None:
        raise InputError("nothing is embedded in this graph yet: pass --images or --cohort")
    import json

    info = sim.ModelInfo(act["modelId"], act.get("name") or "", int(act["dim"]),
                         json.loads(act.get("config") or "{}"))
    run = sim.EmbeddingRun(engine, info, k=k, cache_dir=cache_dir)
    run.begin(expected=0)
    return run.finish().to_dict()


__all__ = ["CohortImages", "DeepLesionImages", "PatchSource", "PatchTask", "Target", "default_workers",
           "embed_cohort", "embed_deeplesion", "embed_targets", "iter_patches", "load_encoder", "read_targets",
           "rebuild_edges"]


# -- one new region (``lesiondb similar --image``) ----------------------------------------------------
def region_patch(path: str | Path, box_px: tuple[float, float, float, float], spec: Any, *,
                 slice_index: int | None = None, spacing_mm: tuple[float, float] | None = None,
                 slice_interval_mm: float | None = None) -> tuple[Any, dict[str, Any]]:
    try:
        return _region_patch(path, box_px, spec, slice_index=slice_index, spacing_mm=spacing_mm,
                             slice_interval_mm=slice_interval_mm)
    except InputError as exc:
        if exc.source is None:  # e.g. a box outside the image: say which image
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
    from ..imaging.patches import extract_patch, extract_patch_from_volume

    path = Path(path)
    x1, y1, x2, y2 = (float(v) for v in box_px)
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"box {box_px} needs x1 < x2 and y1 < y2 (pixels of the image)")
    notes: dict[str, Any] = {"image": str(path)}
    if path.suffix.lower() == ".png":
        from ..imaging.png import read_slice, read_stack

        if spacing_mm is None:
            raise InputError("a PNG carries no pixel spacing: pass --spacing SX[,SY] in mm per pixel "
                             "(DL_info's Spacing_mm_px_)", str(path))
        if slice_interval_mm and path.stem.isdigit():
            stack = read_stack(path.parent.parent, path.parent.name, int(path.stem), slice_interval_mm,
                               spec.offset_mm)
        else:
            key = read_slice(path).astype(np.float32)
            stack = np.stack([key, key, key])
            notes["note"] = "neighbour slices not used (pass --slice-interval to use KKK±n.png beside the file)"
        notes.update(kind="png", spacingMm=list(spacing_mm))
        return extract_patch(stack, (x1, y1, x2, y2), spacing_mm, spec), notes
    from ..imaging.dicom import read_header, read_series

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
    notes.update(kind="dicom", sliceIndex=slice_index, spacingMm=list(vol.spacing_xy_mm), sliceIntervalMm=interval,
                 seriesUid=vol.series_uid)
    return extract_patch_from_volume(vol.hu, slice_index, (x1, y1, x2, y2), vol.spacing_xy_mm, interval, spec), notes


def embed_region(model: Any, path: str | Path, box_px: tuple[float, float, float, float], **kw: Any
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """The embedding (D,) of a box drawn on an image (see :func:`region_patch`)."""
    from ..nn.infer import embed_patches

    patch, notes = region_patch(path, box_px, model.patch_spec, **kw)
    vec = embed_patches(model, patch.image[None].astype(np.float32), patch.box_px[None].astype(np.float32),
                        batch_size=1)[0]
    return vec, notes
