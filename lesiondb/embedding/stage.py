"""The embedding stage: read → crop → embed → write → kNN → SIMILAR_TO edges.

Works on lesions already in the graph (ingest writes the records first): a
:class:`~lesiondb.embedding.patches.PatchSource` makes each lesion's patch from its images
(DeepLesion PNGs, DICOM series), the :class:`~lesiondb.embedding.encoder.Encoder` embeds the
patches in batches, and :class:`lesiondb.embedding.store.EmbeddingRun` writes the vectors and keeps
the SIMILAR_TO edges exact.

- Only lesions not yet embedded by this model, or whose data changed since (``contentHash`` vs
  ``embeddedHash``), are embedded: re-running re-embeds nothing and writes no edge.
- A lesion whose image is missing or unreadable is reported (naming the series and the fix),
  marked ``embedded: false`` with the reason, and skipped; the batch goes on.
- :func:`embed_deeplesion` and :func:`embed_cohort` are what ``lesiondb embed`` and both ingests
  run; :func:`rebuild_edges` recomputes the edges from stored embeddings (another ``k``).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.progress import Progress
from ..core.pseudonym import Pseudonymizer
from ..core.results import Result, json_field
from ..errors import InputError
from ..graph.engine import Engine
from ..graph.keys import check_pseudonym_key
from . import store as sim
from .encoder import EMBED_BATCH, Encoder
from .patches import (
    CohortImages,
    DeepLesionImages,
    PatchResult,
    PatchSource,
    Target,
    default_workers,
    iter_patches,
    read_targets,
    uses_tasks,
)

log = logging.getLogger(__name__)

#: Lesions whose patches are buffered before an embed + write round.
ROUND = 2048
MAX_PROBLEMS_SHOWN = 50


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: ``k`` SIMILAR_TO edges per lesion, ``force`` re-embedding, patches per encoder
    call, reader processes (None: one per core; 0 or 1: read in this process), and the data dir's
    embedding cache."""

    k: int = sim.DEFAULT_K
    force: bool = False
    batch_size: int = EMBED_BATCH
    workers: int | None = None
    cache_dir: Path | None = None


@dataclass
class EmbedResult(Result):
    """What one embedding run did."""

    model_id: str
    k: int
    lesions: int  # lesions of the source's kind in the graph
    up_to_date: int
    embedded: int
    not_embedded: int
    total_embedded: int
    similar_edges_written: int
    lesions_rewired: int
    stale_edges_deleted: int
    knn: str
    vector_index: str
    state_from: str
    seconds: dict[str, float]
    total_seconds: float
    embed_problems: list[dict[str, str]] = field(default_factory=list)  # the first MAX_PROBLEMS_SHOWN
    lesions_of_other_models: int | None = json_field(default=None, omit_none=True)


def embed_threads(workers: int) -> int | None:
    """Torch threads for inference while ``workers`` reader processes run: one (OpenMP threads
    that wait for each other spin, and lose several times over when the cores are busy: measured
    3,000 lesions/s on 1 thread against 900 on 2 with the cores shared); torch's own setting
    without workers."""
    return 1 if workers >= 2 else None


def embed_targets(engine: Engine, targets: list[Target], source: PatchSource, model: sim.ModelInfo,
                  embed: Callable[[np.ndarray, np.ndarray], np.ndarray], *, k: int = sim.DEFAULT_K,
                  force: bool = False, cache_dir: str | Path | None = None, progress: Progress | None = None,
                  round_size: int = ROUND, workers: int | None = 0) -> EmbedResult:
    """Embed the ``targets`` that ``source`` accepts and are not up to date for ``model``; write
    them; rebuild the SIMILAR_TO edges that change.

    ``embed(images, boxes)`` gives the vectors; ``workers`` ≥ 2 reads and crops images in that
    many processes while this one embeds and writes (:func:`iter_patches`; None: one per core);
    0 or 1 reads here."""
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
        patches = iter_patches(source, todo, workers) if uses_tasks(source) else source.patches(todo)
        for res in patches:
            if res.problem is not None:
                problems.append((res.target.lesion_id, res.problem))
                if len(problems) <= MAX_PROBLEMS_SHOWN:  # a folder holding part of the images is common
                    log.warning("lesion %s not embedded: %s", res.target.lesion_id, res.detail or res.problem)
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
    return EmbedResult(
        model_id=model.model_id, k=k, lesions=len(mine), up_to_date=len(mine) - len(todo),
        embedded=report.embedded, not_embedded=len(problems), total_embedded=report.total_embedded,
        similar_edges_written=report.edges_written, lesions_rewired=report.lesions_rewired,
        stale_edges_deleted=report.stale_edges_deleted, knn=report.knn_mode, vector_index=report.vector_index,
        state_from=report.state_from, seconds={k_: round(v, 3) for k_, v in timings.items()},
        total_seconds=round(time.perf_counter() - t_start, 3),
        embed_problems=[{"lesionId": i, "reason": r} for i, r in problems[:MAX_PROBLEMS_SHOWN]],
        lesions_of_other_models=report.other_models or None)


def _bar_update(progress: Progress, stage: str, total: int | None) -> Callable[[int], None]:
    bar = progress(stage, total)
    if not total:
        bar.close()
    done = 0

    def update(n: int) -> None:
        nonlocal done
        bar.update(n)
        done += n
        if total is not None and done >= total:
            bar.close()
    return update


# -- the use cases ------------------------------------------------------------------------------------
def embed_lesions(engine: Engine, source: PatchSource, encoder: Encoder, options: EmbedOptions = EmbedOptions(),
                  progress: Progress | None = None) -> EmbedResult:
    """Embed every lesion of the graph that ``source`` has images for (and is not up to date)."""
    workers = default_workers() if options.workers is None else options.workers
    threads = embed_threads(workers)
    return embed_targets(
        engine, read_targets(engine), source, sim.ModelInfo.from_encoder(encoder),
        lambda images, boxes: encoder.embed(images, boxes, batch_size=options.batch_size, threads=threads),
        k=options.k, force=options.force, cache_dir=options.cache_dir, progress=progress, workers=workers)


def embed_deeplesion(engine: Engine, images_dir: str | Path, encoder: Encoder, ids: Pseudonymizer, *,
                     file_names: dict[str, str] | None = None, options: EmbedOptions = EmbedOptions(),
                     progress: Progress | None = None) -> EmbedResult:
    """Embed the graph's DeepLesion lesions from the PNG series under ``images_dir`` (the
    ``Images_png`` folder). Series are found by the lesions' ``seriesId`` under ``ids`` (the
    ingest's key); ``file_names`` (lesionId → File_name, :func:`lesiondb.datasets.deeplesion.file_names`)
    is the fallback for graphs ingested before lesions carried a ``seriesId``."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError("images folder not found (the DeepLesion Images_png folder)", str(images_dir))
    check_pseudonym_key(engine, ids)  # another key's pseudonyms would find no image
    return embed_lesions(engine, DeepLesionImages(images_dir, encoder.patch_spec, ids, file_names), encoder,
                         options, progress)


def embed_cohort(engine: Engine, cohort_dir: str | Path, encoder: Encoder, ids: Pseudonymizer, *,
                 options: EmbedOptions = EmbedOptions(), progress: Progress | None = None) -> EmbedResult:
    """Embed the graph's DICOM lesions from the series under ``cohort_dir`` (the folder given to
    ``lesiondb ingest dicom``; series are found by their headers, whatever the folder names)."""
    cohort_dir = Path(cohort_dir)
    if not cohort_dir.is_dir():
        raise InputError("cohort folder not found", str(cohort_dir))
    check_pseudonym_key(engine, ids)
    return embed_lesions(engine, CohortImages(cohort_dir, encoder.patch_spec, ids), encoder, options, progress)


def rebuild_edges(engine: Engine, k: int = sim.DEFAULT_K, cache_dir: str | Path | None = None) -> sim.RunReport:
    """Recompute the active model's SIMILAR_TO edges from the stored embeddings (e.g. with another
    k); only lesions whose list changes are rewritten."""
    act = sim.active_model(engine)
    if act is None:
        raise InputError("nothing is embedded in this graph yet: pass --images or --cohort")
    info = sim.ModelInfo(act["modelId"], act.get("name") or "", int(act["dim"]),
                         json.loads(act.get("config") or "{}"))
    run = sim.EmbeddingRun(engine, info, k=k, cache_dir=cache_dir)
    run.begin(expected=0)
    return run.finish()


__all__ = ["EmbedOptions", "EmbedResult", "embed_cohort", "embed_deeplesion", "embed_lesions", "embed_targets",
           "rebuild_edges"]
