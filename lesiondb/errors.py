"""All exceptions lesiondb raises on purpose.

Every error names the input that caused it and, where there is one, how to fix it.
"""
from __future__ import annotations


class LesionDBError(Exception):
    """Base class of every lesiondb error."""


class ConfigError(LesionDBError):
    """Bad options or settings (data dir, URI, credentials)."""


class EngineError(LesionDBError):
    """The graph engine could not be reached, started or queried."""


class EngineUnavailable(EngineError):
    """The embedded engine cannot run on this platform or is not installed."""


class DataDirLocked(EngineError):
    """Another process owns the embedded engine of this data dir."""


class EngineInUse(EngineError):
    """``engine stop`` refused: other processes use the shared embedded engine."""


class QueryNotFound(LesionDBError):
    """No .cypher file carries the requested query name."""


class QueryError(EngineError):
    """A named query failed on the engine."""

    def __init__(self, name: str, message: str):
        super().__init__(f"query {name!r} failed: {message}")
        self.name = name


class InputError(LesionDBError):
    """One input item (row, file, image) is invalid.

    ``source`` names the file, ``line`` the 1-based line or item number where known.
    """

    def __init__(self, reason: str, source: str | None = None, line: int | None = None):
        where = source or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.source = source
        self.line = line


class ImageError(InputError):
    """An image or DICOM file is unreadable, inconsistent or missing."""


class ModelError(LesionDBError):
    """A model file is missing, corrupt or incompatible."""
