"""Ingest: stream records from a reader into the graph in idempotent ``UNWIND`` batches.

A bad item never stops the batch: it is reported (source, line, reason) and skipped; every
committed batch stays committed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..core.records import Annotated
from ..errors import ConfigError
from ..graph.engine import DEFAULT_BATCH, Engine, batched

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingest did. ``written`` counts lesions created or changed."""

    source: str
    read: int = 0
    written: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def reject(self, reason: str, source: str | None = None, line: int | None = None, **more: Any) -> None:
        self.rejected.append({"source": source or self.source, "line": line, "reason": reason, **more})

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "read": self.read, "written": self.written,
            "unchanged": self.unchanged, "duplicates": self.duplicates,
            "rejected": len(self.rejected), "errors": self.rejected, **self.extra,
        }


def check_pseudonym_key(engine: Engine, ids: Any) -> str | None:
    """Read-only twin of :func:`claim_pseudonym_key` for commands that map source files to ids
    without writing them (``embed --dl-info``, ``mine --dl-info``): :class:`ConfigError` when the
    graph recorded another key. Returns the graph's fingerprint (None: none recorded yet)."""
    rows = engine.run("graph_info")
    have = rows[0]["fingerprint"] if rows else None
    if have is not None and have != ids.fingerprint:
        raise ConfigError(
            f"the pseudonym key (fingerprint {ids.fingerprint}) is not the key this graph's ids were made with "
            f"(fingerprint {have}): no file name would match a lesion. Use the key of the ingest: drop "
            "--pseudonym-key / LESIONDB_PSEUDONYM_KEY to use the data dir's pseudonym.key, or pass that key.")
    return have


def claim_pseudonym_key(engine: Engine, ids: Any) -> str:
    """Record the fingerprint of ``ids``' key in the graph (first ingest), or check it against the
    one recorded: :class:`ConfigError` when they differ, before anything is written, since ids
    made with another key would duplicate every patient, study and lesion already there.
    Returns the fingerprint."""
    fp = ids.fingerprint
    rows = engine.execute("claim_pseudonym_key", fingerprint=fp,
                          claimedAt=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    have = rows[0]["fingerprint"] if rows else fp
    if have != fp:
        raise ConfigError(
            f"the pseudonym key (fingerprint {fp}) is not the key this graph's ids were made with "
            f"(fingerprint {have}); ingesting with it would add every patient, study and lesion a second "
            "time under other ids. Use the same key: drop --pseudonym-key / LESIONDB_PSEUDONYM_KEY to use the "
            "data dir's pseudonym.key, or pass the key this graph was built with; or ingest into another "
            "graph (--data-dir, or another database).")
    return fp


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


def ingest_deeplesion(
    engine: Engine,
    path: str,
    ids: Any,
    keep_source_ids: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    file_names: dict[str, str] | None = None,
) -> IngestReport:
    """Ingest a DL_info.csv: valid rows land, bad rows are reported with their line numbers.
    ``file_names`` (optional) gets lesionId → ``File_name`` of the valid rows, for the image reader."""
    from ..datasets.deeplesion import RowError, read_dl_info

    report = IngestReport(source=str(path))
    claim_pseudonym_key(engine, ids)

    def valid() -> Iterable[Annotated]:
        for item in read_dl_info(path, ids, keep_source_ids=keep_source_ids, file_names=file_names):
            if isinstance(item, RowError):
                report.read += 1
                report.reject(item.reason, item.source, item.line)
                log.warning("%s", item)
                if progress:
                    progress(1)
                continue
            yield item

    return write_annotated(engine, valid(), report, batch_size=batch_size, progress=progress)
