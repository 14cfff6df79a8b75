"""Where lesiondb works: the data dir, the graph engine and the pseudonym key, in one object.

A :class:`Workspace` is what the CLI and the Python client both hold. It opens the engine on first
use (the data dir's embedded FalkorDB, or Neo4j when a URI is given), loads the pseudonym key once,
and names the data dir's caches. The use cases themselves take explicit inputs (an engine, a
:class:`~lesiondb.core.pseudonym.Pseudonymizer`, a cache folder), so they run without a workspace.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .core.pseudonym import Pseudonymizer
from .graph import Engine, default_data_dir, open_engine


@dataclass
class Workspace:
    """A data dir and an engine (opened lazily, closed by :meth:`close`)."""

    data_dir: Path = field(default_factory=default_data_dir)
    uri: str | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    pseudonym_key: str | None = None
    _engine: Engine | None = field(default=None, repr=False)
    _ids: Pseudonymizer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    @classmethod
    def open(cls, data_dir: str | os.PathLike | None = None, uri: str | None = None, user: str | None = None,
             password: str | None = None, database: str | None = None,
             pseudonym_key: str | None = None) -> Workspace:
        return cls(Path(data_dir).expanduser() if data_dir else default_data_dir(), uri, user, password, database,
                   pseudonym_key)

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_engine(self.data_dir, uri=self.uri, user=self.user, password=self.password,
                                       database=self.database)
        return self._engine

    def ids(self, key: str | None = None) -> Pseudonymizer:
        """The pseudonymizer of this data dir (``key`` overrides the workspace's key)."""
        if key is not None and key != self.pseudonym_key:
            return Pseudonymizer.from_data_dir(self.data_dir, key)
        if self._ids is None:
            self._ids = Pseudonymizer.from_data_dir(self.data_dir, self.pseudonym_key)
        return self._ids

    @property
    def embedding_cache(self) -> Path:
        """Cache of the embedding table (read back instead of every vector from the graph)."""
        return self.data_dir / "embeddings"

    @property
    def patch_cache(self) -> Path:
        """Cache of training patches (``lesiondb train``)."""
        return self.data_dir / "cache" / "patches"

    @property
    def crop_cache(self) -> Path:
        """Cache of the crops ``lesiondb serve`` renders (patient images: a private folder)."""
        return self.data_dir / "cache" / "crops"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
