"""The embedding stage of ingest: read → crop → embed → write → kNN → SIMILAR_TO edges.

Works on lesions already in the graph (the records ingest writes them first): it reads where each
lesion's image is (:func:`read_targets`), makes its patch from DeepLesion PNGs
(:class:`DeepLesionImages`) or a cohort's DICOM series (:class:`CohortImages`), embeds the
patches in batches with the encoder, and hands the vectors to
:class:`lesiondb.similarity.EmbeddingRun`, which writes them and keeps the SIMILAR_TO edges exact.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import similarity as sim
from .errors import InputError, LesionDBError, ModelError
from .graph.engine import Engine

log = logging.getLogger(__name__)

#: Patches embedded per encoder call (512: ~20 % faster than 256 on 2 CPU cores, measured).
EMBED_BATCH = 512
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
class PatchSource:
    """Makes patches for targets; times its ``read`` (decode) and ``crop`` (patch) work."""

    spec: Any  # lesiondb.imaging.patches.PatchSpec
    timings: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "crop": 0.0})

    def accepts(self, t: Target) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def patches(self, targets: list[Target]) -> Iterator[PatchResult]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - t0
        return now


class DeepLesionImages(PatchSource):
    """DeepLesion key slices ``images_root/PPPPPP_SS_RR/KKK.png`` (or ``…/Images_png/…``).

    The key slice's file name comes from ``file_names`` (lesionId → ``File_name``, from the
    DL_info.csv) or from the lesion's ``sourceId`` (stored with ``--keep-source-ids``).
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

    def patches(self, targets: list[Target]) -> Iterator[PatchResult]:
        from .datasets.deeplesion import parse_file_name
        from .imaging.patches import extract_patch
        from .imaging.png import read_stack

        for t in targets:
            fname = self.file_name(t)
            if fname is None:
                yield PatchResult(t, problem="key slice file name unknown: pass the DL_info.csv "
                                             "(--dl-info) or ingest with --keep-source-ids")
                continue
            if t.bbox_px is None or t.spacing_mm is None or not t.slice_interval_mm:
                yield PatchResult(t, problem=f"{fname}: lesion lacks box or spacing in the graph; re-ingest it")
                continue
            t0 = time.perf_counter()
            try:
                p, s, r, k = parse_file_name(fname)
                stack = read_stack(self.root, f"{p:06d}_{s:02d}_{r:02d}", k, t.slice_interval_mm,
                                   self.spec.offset_mm)
                t0 = self._add("read", t0)
                patch = extract_patch(stack, t.bbox_px, t.spacing_mm, self.spec)
                self._add("crop", t0)
            except (InputError, OSError) as exc:
                self._add("read", t0)
                yield PatchResult(t, problem=f"{fname}: {exc}")
                continue
            yield PatchResult(t, patch.image, patch.box_px)


class CohortImages(PatchSource):
    """A cohort folder's DICOM series (cohort folder contract): each series read once for all of
    its lesions; ``imageRef`` is the series folder relative to the cohort root."""

    def __init__(self, cohort_root: str | Path, spec: Any):
        super().__init__(spec)
        self.root = Path(cohort_root)

    def accepts(self, t: Target) -> bool:
        return t.source == "dicom"

    def patches(self, targets: list[Target]) -> Iterator[PatchResult]:
        from .imaging.dicom import read_series
        from .imaging.patches import extract_patch_from_volume

        by_series: dict[str, list[Target]] = {}
        for t in targets:
            if not t.image_ref:
                yield PatchResult(t, problem="no imageRef on the lesion (not from a cohort ingest)")
                continue
            by_series.setdefault(t.image_ref, []).append(t)
        for ref in sorted(by_series):
            members = by_series[ref]
            folder = self.root / ref
            t0 = time.perf_counter()
            try:
                vol = read_series(folder, allow_gaps=True)
            except (InputError, OSError) as exc:
                self._add("read", t0)
                for t in members:
                    yield PatchResult(t, problem=f"{folder}: {exc} (is {self.root} the cohort folder that was ingested?)")
                continue
            self._add("read", t0)
            for t in members:
                t0 = time.perf_counter()  # (time spent by the consumer between yields is not ours)
                why = vol.slice_problem(t.key_slice_index if t.key_slice_index is not None else -1)
                if why or t.bbox_px is None:
                    yield PatchResult(t, problem=f"{folder}: {why or 'lesion has no box'}")
                    continue
                interval = vol.slice_interval_mm or t.slice_interval_mm or 1.0
                try:
                    patch = extract_patch_from_volume(vol.hu, t.key_slice_index, t.bbox_px, vol.spacing_xy_mm,
                                                      interval, self.spec)
                except InputError as exc:
                    self._add("crop", t0)
                    yield PatchResult(t, problem=f"{folder}: {exc}")
                    continue
                self._add("crop", t0)
                yield PatchResult(t, patch.image, patch.box_px)


# -- models ----------------------------------------------------------------------------------------
def load_encoder(path: str | Path | None = None):
    """The encoder at ``path`` (a model folder or ``model.pt``), else the packaged default model,
    prepared for fast CPU inference. Raises :class:`ModelError` when there is none."""
    try:
        from .nn.infer import load_default_model, prepare_for_inference
        from .nn.model_io import load_model
    except ImportError as exc:  # torch missing, or the nn package incomplete
        raise ModelError(f"the encoder is not available in this installation ({exc})") from exc
    model = load_model(path) if path else load_default_model()
    return prepare_for_inference(model)


def embed_patches_fn(model: Any, batch_size: int = EMBED_BATCH) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    from .nn.infer import embed_patches

    return lambda images, boxes: embed_patches(model, images, boxes, batch_size=batch_size)


# -- the stage --------------------------------------------------------------------------------------
Progress = Callable[[str, int | None], Any]  # (stage, total) -> a tqdm-like bar (update, close)


def embed_targets(engine: Engine, targets: list[Target], source: PatchSource, model: sim.ModelInfo,
                  embed: Callable[[np.ndarray, np.ndarray], np.ndarray], *, k: int = sim.DEFAULT_K,
                  force: bool = False, cache_dir: str | Path | None = None, progress: Progress | None = None,
                  round_size: int = ROUND) -> dict[str, Any]:
    """Embed the ``targets`` that ``source`` accepts and are not up to date for ``model``; write
    them; rebuild the SIMILAR_TO edges that change. Returns the run's summary."""
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
        for res in source.patches(todo):
            if res.problem is not None:
                problems.append((res.target.lesion_id, res.problem))
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
    run.mark_missing(problems)
    report = run.finish()
    timings = {"read": source.timings["read"], "crop": source.timings["crop"], "embed": t_embed,
               **{k_: v for k_, v in report.timings.items()}}
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
    from .cli.common import progress_bar

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
    from .datasets.deeplesion import RowError, read_dl_info

    out = {}
    for item in read_dl_info(dl_info, ids, keep_source_ids=True):
        if not isinstance(item, RowError):
            out[item.lesion.lesion_id] = item.lesion.source_id
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
                     pseudonym_key: str | None = None, batch_size: int = EMBED_BATCH) -> dict[str, Any]:
    """Embed the graph's DeepLesion lesions from the PNGs under ``images_dir``.

    Key-slice files are found through ``dl_info`` (defaults to the DL_info.csv of the running
    ``ingest deeplesion`` command) or the lesions' stored source ids. Returns a summary (merged
    into the ingest report); with no encoder available, says so instead of failing the ingest.
    """
    from .core.pseudonym import Pseudonymizer

    model = _encoder_or_none(model_path)
    if isinstance(model, dict):
        return model
    dl_info = dl_info or _context_param("dl_info")
    key = pseudonym_key or _context_param("pseudonym_key")
    names = deeplesion_file_names(dl_info, Pseudonymizer.from_data_dir(app.data_dir, key)) if dl_info else {}
    source = DeepLesionImages(images_dir, model.patch_spec, names)
    eng = app.engine()
    return embed_targets(eng, read_targets(eng), source, sim.ModelInfo.from_encoder(model),
                         embed_patches_fn(model, batch_size), k=k, force=force,
                         cache_dir=Path(app.data_dir) / "embeddings", progress=_app_progress(app))


def embed_cohort(app: Any, cohort_dir: str | Path, *, model_path: str | Path | None = None,
                 k: int = sim.DEFAULT_K, force: bool = False, batch_size: int = EMBED_BATCH) -> dict[str, Any]:
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
    eng = app.engine()
    return embed_targets(eng, read_targets(eng), source, sim.ModelInfo.from_encoder(model),
                         embed_patches_fn(model, batch_size), k=k, force=force,
                         cache_dir=Path(app.data_dir) / "embeddings", progress=_app_progress(app))


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


__all__ = ["CohortImages", "DeepLesionImages", "PatchSource", "Target", "embed_cohort", "embed_deeplesion",
           "embed_targets", "load_encoder", "read_targets", "rebuild_edges"]


# -- one new region (``lesiondb similar --image``) ----------------------------------------------------
def region_patch(path: str | Path, box_px: tuple[float, float, float, float], spec: Any, *,
                 slice_index: int | None = None, spacing_mm: tuple[float, float] | None = None,
                 slice_interval_mm: float | None = None) -> tuple[Any, dict[str, Any]]:
    """The encoder patch of a box drawn on one image: a DeepLesion 16-bit PNG (its neighbours
    ``KKK±n.png`` in the same folder give the 3-slice context) or a DICOM file / series folder.

    Returns (patch, notes). PNGs carry no pixel spacing: pass ``spacing_mm`` (DL_info's
    ``Spacing_mm_px_``). ``slice_index`` picks the slice of a DICOM series (0-based, head first;
    default: the given file's).
    """
    from .imaging.patches import extract_patch, extract_patch_from_volume

    path = Path(path)
    x1, y1, x2, y2 = (float(v) for v in box_px)
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"box {box_px} needs x1 < x2 and y1 < y2 (pixels of the image)")
    notes: dict[str, Any] = {"image": str(path)}
    if path.suffix.lower() == ".png":
        from .imaging.png import read_slice, read_stack

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
    from .imaging.dicom import read_header, read_series

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
    from .nn.infer import embed_patches

    patch, notes = region_patch(path, box_px, model.patch_spec, **kw)
    vec = embed_patches(model, patch.image[None].astype(np.float32), patch.box_px[None].astype(np.float32),
                        batch_size=1)[0]
    return vec, notes
