"""Writing records into the graph: idempotent ``UNWIND`` batches, and the report of an ingest.

A bad item never stops the batch: it is reported (source, line, reason) and skipped; every
committed batch stays committed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.records import Annotated
from ..core.results import Result
from ..embedding.encoder import Encoder, load_encoder
from ..embedding.stage import EmbedResult
from ..errors import ModelError
from ..graph.engine import DEFAULT_BATCH, Engine, batched

log = logging.getLogger(__name__)


@dataclass
class IngestReport(Result):
    """What one ingest did. ``written`` counts lesions created or changed; ``embedding`` is the
    embedding stage's result when lesions with images were embedded (its keys are merged into
    the JSON), ``embed_note`` says why they were not."""

    source: str
    read: int = 0
    written: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    embedding: EmbedResult | None = None
    embed_note: str | None = None

    def reject(self, reason: str, source: str | None = None, line: int | None = None, **more: Any) -> None:
        self.rejected.append({"source": source or self.source, "line": line, "reason": reason, **more})

    def to_json(self) -> dict[str, Any]:
        out = {
            "source": self.source, "read": self.read, "written": self.written,
            "unchanged": self.unchanged, "duplicates": self.duplicates,
            "rejected": len(self.rejected), "errors": self.rejected, **self.extra,
        }
        if self.embedding is not None:
            out.update(self.embedding.to_json())
        elif self.embed_note is not None:
            out.update({"embedded": 0, "embedNote": self.embed_note})
        return out


def write_annotated(
    engine: Engine,
    items: Iterable[Annotated],
    report: IngestReport,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Write lesions (with their studies and patients) in batches; updates ``report`` in place.

    A lesion id seen twice in one input with the same values (an exact duplicate row) is written
    once and counted in ``duplicates``; with other values it is rejected (the readers say which
    lines conflict; this is the net for a reader that does not).
    """
    seen: dict[str, tuple[str, Any]] = {}  # lesionId → (content hash, line)

    def rows() -> Iterable[dict[str, Any]]:
        for a in items:
            report.read += 1
            row = a.to_row()
            lid, digest, line = a.lesion.lesion_id, row["lesion"]["contentHash"], a.extra.get("line")
            first = seen.get(lid)
            if first is not None:
                if first[0] == digest:
                    report.duplicates += 1
                else:
                    where = f" on line {first[1]}" if first[1] is not None else ""
                    report.reject(f"conflicting duplicate: same lesion as the row{where}, other values; "
                                  "the first is kept", line=line)
                if progress:
                    progress(1)
                continue
            seen[lid] = (digest, line)
            yield row

    for batch in batched(rows(), batch_size):
        res = engine.write("upsert_lesions", batch, batch_size=len(batch))
        unchanged = int(sum(r.get("unchanged") or 0 for r in res))
        report.unchanged += unchanged
        report.written += len(batch) - unchanged
        if progress:
            progress(len(batch))
    return report


def embed_after_ingest(report: IngestReport, model: str | Path | None,
                       embed: Callable[[Encoder], EmbedResult]) -> IngestReport:
    """The embedding step of an ingest: load the encoder (``model``, else the shipped one) and run
    ``embed(encoder)``, recording its result on ``report``. Without a ``model`` and without a
    shipped model the lesions stay unembedded and ``report.embed_note`` says so (the ingest has
    not failed); a ``model`` that cannot be loaded is an error."""
    try:
        encoder = load_encoder(model)
    except ModelError as exc:
        if model:
            raise
        report.embed_note = (f"lesions stored without embeddings: {exc}. Embed them later with "
                             "`lesiondb embed --model PATH` (see --help)")
        return report
    report.embedding = embed(encoder)
    return report
