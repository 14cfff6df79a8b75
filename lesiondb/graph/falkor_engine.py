"""FalkorDB through the ``falkordb`` client, over the embedded server's unix socket."""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import redis
from falkordb import Edge, FalkorDB, Node

from ..errors import EngineError
from .embedded import EmbeddedFalkorDB
from .engine import Engine, Row

DEFAULT_GRAPH = "lesiondb"


class FalkorEngine(Engine):
    """A FalkorDB graph. Each statement is atomic on the server, so one batch = one transaction."""

    dialect = "falkordb"

    def __init__(self, db: Any, graph: str = DEFAULT_GRAPH, server: EmbeddedFalkorDB | None = None):
        self.db = db
        self.graph_name = graph
        self.graph = db.select_graph(graph)
        self.server = server

    @classmethod
    def embedded(cls, data_dir: str, graph: str | None = None) -> FalkorEngine:
        """Start (or attach to) the data dir's embedded server and open its graph."""
        server = EmbeddedFalkorDB(data_dir).start()
        try:
            db = FalkorDB(unix_socket_path=str(server.socket_path))
        except Exception as exc:
            server.stop()
            raise EngineError(f"cannot connect to the embedded FalkorDB at {server.socket_path}: {exc}") from exc
        return cls(db, graph or DEFAULT_GRAPH, server)

    def _read(self, text: str, params: dict[str, Any]) -> list[Row]:
        return self._run(text, params, read_only=True)

    def _write(self, text: str, params: dict[str, Any]) -> list[Row]:
        return self._run(text, params, read_only=False)

    def _run(self, text: str, params: dict[str, Any], read_only: bool, retries: int = 3) -> list[Row]:
        # FalkorDB takes parameters as a "CYPHER name=value …" prefix. The client's own
        # serializer is pure Python per value; batches of thousands of rows go through JSON instead.
        full = cypher_params_header(params) + text if params else text
        for attempt in range(retries + 2):
            try:
                res = (self.graph.ro_query if read_only else self.graph.query)(full)
                break
            except redis.exceptions.ResponseError as exc:
                # A read on a graph that does not exist yet: run it as a plain query instead.
                if read_only and "empty key" in str(exc):
                    read_only = False
                    continue
                raise
            except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                # Transient: the server is still loading its AOF, or a connection dropped.
                if attempt == retries:
                    raise
                time.sleep(0.2 * (attempt + 1))
        header = [h[1] if isinstance(h, list | tuple) else h for h in (res.header or [])]
        return [{k: _plain(v) for k, v in zip(header, row, strict=True)} for row in res.result_set]

    def _apply_schema_statement(self, text: str) -> None:
        try:
            self.graph.query(text)
        except Exception as exc:
            # FalkorDB has no IF NOT EXISTS: an existing index is the success case here.
            if "already indexed" in str(exc) or "already exists" in str(exc):
                return
            raise EngineError(f"schema statement failed: {exc}\n{text}") from exc

    def describe(self) -> dict[str, Any]:
        info = {"dialect": self.dialect, "engine": "falkordb", "graph": self.graph_name}
        if self.server is not None:
            info.update(dataDir=str(self.server.data_dir), socket=str(self.server.socket_path))
        return info

    def close(self) -> None:
        try:
            self.db.connection.close()
        except Exception:
            pass
        if self.server is not None:
            self.server.stop()


_KEY_RE = re.compile(r'(?<=[{,])"([A-Za-z_][A-Za-z0-9_]*)":')


def cypher_literal(value: Any) -> str:
    """A Cypher literal for a JSON-like value (maps, lists, strings, numbers, booleans, null).

    Built with the C JSON encoder, then map keys unquoted: with compact separators an unescaped
    ``"`` right after ``{`` or ``,`` and closed before ``:`` can only be a map key.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"query parameters must be finite numbers: {exc}") from None
    except TypeError:
        text = json.dumps(_jsonable(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _KEY_RE.sub(_unquoted_key, text) if "{" in text else text


def _unquoted_key(m: re.Match) -> str:
    return m.group(1) + ":"  # a function: Python 3.11 expands a template like r"\1:" slower, per match


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):  # numpy arrays and scalars
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"query parameters must be finite numbers, got {v}")
    return v


def cypher_params_header(params: dict[str, Any]) -> str:
    for k in params:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ValueError(f"bad parameter name {k!r}")
    return "CYPHER " + " ".join(f"{k}={cypher_literal(v)}" for k, v in params.items()) + " "


def _plain(v: Any) -> Any:
    """FalkorDB nodes/edges → property dicts; floats that are whole stay floats (as stored)."""
    if isinstance(v, Node):
        return {**v.properties, "_labels": list(v.labels or [])}
    if isinstance(v, Edge):
        return {**v.properties, "_type": v.relation}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v
