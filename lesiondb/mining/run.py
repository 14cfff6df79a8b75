"""``lesiondb mine``: mine every tracked patient of the graph and write the proposals.

:func:`mine` reads tracked patients in batches (:func:`~lesiondb.mining.case.read_cases`), learns
how to rank candidates from the graph's own tracks (:class:`~lesiondb.mining.ranker.RankCalibrator`),
mines each patient (:func:`~lesiondb.mining.case.mine_case`) and writes ``(:Proposal)`` nodes linked
``IN_STUDY`` to the study and ``PROPOSED_FOR`` to the track (:func:`write_proposals`). Proposal ids
are stable (track + study): re-mining refreshes a pending proposal, leaves accepted and rejected
ones as they are, and never creates a second one for the same track and study.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..core import mining as M
from ..core.progress import Progress, stage
from ..core.results import Result, json_field
from ..embedding.encoder import Encoder, load_encoder
from ..errors import InputError, LesionDBError, ModelError
from ..graph.engine import Engine
from ..graph.keys import check_pseudonym_key
from ..imaging.patches import extract_patch_from_volume, stack_patches
from .case import (
    DEFAULT_MIN_SCORE,
    Embedder,
    MiningConfig,
    MiningStats,
    ProposalRecord,
    VolumeLoader,
    count_patients,
    mine_case,
    read_cases,
)
from .ranker import CALIBRATION_STUDIES, RankCalibrator
from .review import now_iso

log = logging.getLogger(__name__)


# -- writing and reviewing ----------------------------------------------------------------------
def write_proposals(engine, proposals: Sequence[ProposalRecord], model_id: str | None = None,
                    min_score: float = DEFAULT_MIN_SCORE, batch_size: int = 500) -> dict[str, int]:
    """Write proposals scoring ≥ ``min_score`` × their study's evidence factor; returns counts
    created / refreshed / kept."""
    at = now_iso()
    rows = [p.to_row(model_id, at) for p in proposals if p.passes(min_score)]
    res = engine.write("upsert_proposals", rows, batch_size=batch_size) if rows else []
    return {k: int(sum(float(r.get(k) or 0) for r in res)) for k in ("created", "refreshed", "kept")}


def blas_single_thread() -> contextlib.AbstractContextManager:
    """Small matrices: multi-threaded BLAS only thrashes (×5 slower on a loaded 2-core machine)."""
    return threadpool_limits(1, user_api="blas")


@dataclass
class MiningResult(Result):
    """What one mining run did: the counts of :class:`MiningStats`, the proposals written
    (``created``, ``refreshed``, ``kept`` as reviewed) and the ranking calibration."""

    stats: MiningStats = json_field(flatten=True)
    min_score: float = DEFAULT_MIN_SCORE
    model_id: str = "none"
    created: int = 0
    refreshed: int = 0
    kept: int = 0
    ranking: dict[str, Any] = field(default_factory=dict)
    embed_note: str | None = json_field(default=None, omit_none=True)



def mine(engine: Engine, load_volume: VolumeLoader, *, patient: str | None = None,
         config: MiningConfig = MiningConfig(), embedder: Embedder | None = None, model_id: str | None = None,
         rank_calibration: bool = True, calibration_studies: int = CALIBRATION_STUDIES, batch_size: int = 50,
         progress: Progress | None = None) -> MiningResult:
    """Mine every tracked patient (or one) and write the proposals.

    With ``rank_calibration`` the candidates are ranked by weights learned first from the graph's
    own tracks (:class:`~lesiondb.mining.ranker.RankCalibrator`, on up to ``calibration_studies``
    leave-one-out studies of the first patients in patientId order, whichever patient is mined:
    ``ranking`` in the result). A loader may adapt each case to its images first
    (``load_volume.prepare_case(case, stats)``) and its proposals after
    (``load_volume.finish_records(case, records, stats, min_score)``), as
    :class:`lesiondb.mining.volumes.StudyVolumes` does for DeepLesion's PNG slices."""
    total = count_patients(engine, patient)
    if total == 0:
        raise InputError(f"no tracked patient{' ' + patient if patient else ''} in the graph: run `lesiondb match` "
                         "first" + (" (or check the --patient id)" if patient else ""))
    ids = getattr(load_volume, "ids", None)
    if ids is not None:  # images are found by pseudonyms: another key's would find none
        check_pseudonym_key(engine, ids)
    check = getattr(load_volume, "check_case", None)
    if check is not None:  # one patient: cheap, and says what is missing before any work
        check(next(iter(read_cases(engine, patient, batch_size=1))))
    stats = MiningStats()
    result = MiningResult(stats, min_score=config.min_score, model_id=model_id or "none")
    prepare = getattr(load_volume, "prepare_case", None)
    finish = getattr(load_volume, "finish_records", None)
    ranker = RankCalibrator(max_studies=calibration_studies)
    if rank_calibration:
        log.info("learning the candidate ranking from the graph's tracks (up to %d leave-one-out studies)",
                 calibration_studies)
        with blas_single_thread():  # its skips are the mining pass's too: not counted twice
            ranker.fit(read_cases(engine, None, batch_size), load_volume, embedder=embedder, prepare=prepare)
        log.info("ranking weights %s from %d leave-one-out studies in %.1f s", ranker.weights_,
                 ranker.studies_, ranker.seconds_)
    result.ranking = ranker.summary()
    with stage(progress, "mine", total) as b:
        for case in read_cases(engine, patient, batch_size):
            try:
                with blas_single_thread():
                    case = prepare(case, stats) if prepare else case
                    props = mine_case(case, load_volume, embedder=embedder, config=config, stats=stats,
                                      rank_weights=ranker.weights_ if rank_calibration else None)
                    props = finish(case, props, stats, config.min_score) if finish else props
            except LesionDBError as exc:
                stats.skip(f"patient {case.patient_id}", str(exc))
                props = []
            if props:
                for k, v in write_proposals(engine, props, model_id, config.min_score).items():
                    setattr(result, k, getattr(result, k) + v)
            b.update(1)
    redact = getattr(load_volume, "redact", None)
    if redact is not None:  # what --json reports names studies and series as the graph does
        stats.skipped = [{k: redact(v) for k, v in e.items()} for e in stats.skipped]
    return result


# -- the encoder (optional) ---------------------------------------------------------------------
def make_embedder(encoder: Encoder, batch_size: int = 64) -> Embedder:
    """An :data:`Embedder` from a loaded encoder: patches cut as it was trained to see them."""
    spec = encoder.patch_spec

    def embed(hu: np.ndarray, grid: M.Grid, items: list) -> np.ndarray:
        patches = [extract_patch_from_volume(hu, int(k), tuple(float(v) for v in box),
                                             (grid.col_mm, grid.row_mm), grid.slice_interval_mm, spec)
                   for k, box in items]
        images, boxes = stack_patches(patches)
        # a handful of patches per call: one torch thread (more only spin and wait for each other
        # on small batches — measured 12 ms against 90 ms for 3 patches on the shared 2 cores)
        return np.asarray(encoder.embed(images, boxes, batch_size=batch_size, threads=1), float)

    return embed


def load_embedder(model: str | Path | None = None) -> tuple[Embedder | None, str | None, str | None]:
    """(embedder, modelId, note) for mining: the encoder at ``model`` (default: the shipped one),
    or — when no ``model`` was asked for and none is installed — no embedder and a note saying
    mining scores on position, size and HU appearance only."""
    try:
        encoder = load_encoder(model)
    except ModelError as exc:
        if model:
            raise
        return None, None, f"encoder not loaded ({exc}); scored on position, size and HU appearance only"
    return make_embedder(encoder), encoder.model_id, None
