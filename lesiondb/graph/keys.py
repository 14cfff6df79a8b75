"""The pseudonym key a graph was built with: its fingerprint is recorded on the first ingest, and
every later command that makes or matches ids from source files checks its key against it."""
from __future__ import annotations

from datetime import datetime, timezone

from ..core.pseudonym import Pseudonymizer
from ..errors import ConfigError
from .engine import Engine


def check_pseudonym_key(engine: Engine, ids: Pseudonymizer) -> str | None:
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


def claim_pseudonym_key(engine: Engine, ids: Pseudonymizer) -> str:
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


__all__ = ["check_pseudonym_key", "claim_pseudonym_key"]
