"""DeepLesion ingest: a DL_info.csv (and its Images_png folder) into the graph.

Every cell is validated; a bad row is reported with its line and skipped, every valid row is
written (idempotently: re-running changes nothing). With ``images`` the lesions whose slices are
there are embedded and linked to their nearest lesions, as ``lesiondb embed`` would.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ..core.progress import Progress, stage
from ..core.pseudonym import Pseudonymizer
from ..core.records import Annotated
from ..datasets.deeplesion import RowError, read_dl_info
from ..embedding.stage import EmbedOptions, embed_deeplesion
from ..graph.engine import DEFAULT_BATCH, Engine
from ..graph.keys import claim_pseudonym_key
from .records import IngestReport, embed_after_ingest, write_annotated

log = logging.getLogger(__name__)


def ingest_deeplesion(engine: Engine, dl_info: str | Path, ids: Pseudonymizer, *,
                      images: str | Path | None = None, embed: bool = True, model: str | Path | None = None,
                      embed_options: EmbedOptions = EmbedOptions(), keep_source_ids: bool = False,
                      batch_size: int = DEFAULT_BATCH, progress: Progress | None = None) -> IngestReport:
    """Ingest ``dl_info``; with ``images`` (the Images_png folder) and ``embed``, embed the lesions
    whose key slices are there with ``model`` (default: the shipped encoder)."""
    report = IngestReport(source=str(dl_info))
    claim_pseudonym_key(engine, ids)  # refuses a key other than the graph's, before any write
    with stage(progress, "ingest deeplesion") as b:
        def valid() -> Iterable[Annotated]:
            for item in read_dl_info(dl_info, ids, keep_source_ids=keep_source_ids):
                if isinstance(item, RowError):
                    report.read += 1
                    report.reject(item.reason, item.source, item.line)
                    log.warning("%s", item)
                    b.update(1)
                    continue
                yield item

        write_annotated(engine, valid(), report, batch_size=batch_size, progress=b.update)
    if images is not None:
        report.extra["images"] = str(images)
        if embed:
            embed_after_ingest(report, model, lambda enc: embed_deeplesion(
                engine, images, enc, ids, options=embed_options, progress=progress))
    return report

