"""Graph engines behind one interface: Neo4j 5 (production) and an embedded FalkorDB (default)."""
from __future__ import annotations

import os
from pathlib import Path

from .embedded import EmbeddedFalkorDB, default_data_dir
from .engine import Engine, batched


def open_engine(
    data_dir: str | os.PathLike | None = None,
    uri: str | None = None,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
) -> Engine:
    """Neo4j when ``uri`` (or ``LESIONDB_URI``) is given, else the data dir's embedded FalkorDB."""
    uri = uri or os.environ.get("LESIONDB_URI")
    # each driver takes ~0.5 s to import: only the one in use is
    if uri:
        from .neo4j_engine import Neo4jEngine

        return Neo4jEngine.connect(uri, user=user, password=password, database=database)
    from .falkor_engine import FalkorEngine

    return FalkorEngine.embedded(str(Path(data_dir) if data_dir else default_data_dir()), graph=database)


def graph_stats(engine: Engine) -> dict[str, dict[str, int]]:
    """``{"nodes": {label: count}, "relationships": {type: count}}`` (``lesiondb stats``)."""
    return {"nodes": {r["label"]: int(r["count"]) for r in engine.run("count_nodes")},
            "relationships": {r["type"]: int(r["count"]) for r in engine.run("count_relationships")}}


__all__ = ["Engine", "EmbeddedFalkorDB", "batched", "default_data_dir", "graph_stats", "open_engine"]
