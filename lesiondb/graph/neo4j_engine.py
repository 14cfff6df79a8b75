"""Neo4j 5 through the official driver: managed transactions (retried), the database named."""
from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError, EngineError
from .engine import Engine, Row


class Neo4jEngine(Engine):
    """A Neo4j engine around a driver the caller passes in (and may share)."""

    dialect = "neo4j"

    def __init__(self, driver: Any, database: str | None = None, owns_driver: bool = False):
        self.driver = driver
        self.database = database
        self._owns = owns_driver

    @classmethod
    def connect(cls, uri: str, user: str | None = None, password: str | None = None,
                database: str | None = None) -> Neo4jEngine:
        """Open a driver for ``uri``; credentials default to ``LESIONDB_USER`` / ``LESIONDB_PASSWORD``."""
        try:
            import neo4j
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise EngineError("the neo4j driver is not installed: pip install neo4j") from exc
        scheme, _, rest = uri.partition("://")
        if scheme not in ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"):
            raise ConfigError(f"--uri {_redact(uri)!r} is not a bolt:// or neo4j:// URI")
        if "@" in rest.split("/", 1)[0]:
            # Never echo it: the userinfo may hold a password.
            raise ConfigError(f"--uri must not contain credentials ({scheme}://…@…); "
                              "set LESIONDB_USER and LESIONDB_PASSWORD instead")
        user = user or os.environ.get("LESIONDB_USER", "neo4j")
        password = password if password is not None else os.environ.get("LESIONDB_PASSWORD")
        auth = (user, password) if password is not None else None
        try:
            driver = neo4j.GraphDatabase.driver(uri, auth=auth, **quiet_notifications(neo4j))
        except Exception as exc:
            raise ConfigError(f"bad Neo4j URI {_redact(uri)!r}: {type(exc).__name__}") from None
        try:
            driver.verify_connectivity()
        except Exception as exc:
            driver.close()
            # The message names the URI and user, never the password.
            raise EngineError(f"cannot connect to Neo4j at {uri} as {user!r}: {exc}. "
                              "Is the server up (docker compose up -d) and LESIONDB_PASSWORD set?") from exc
        return cls(driver, database=database or os.environ.get("LESIONDB_DATABASE"), owns_driver=True)

    def _read(self, text: str, params: dict[str, Any]) -> list[Row]:
        with self.driver.session(database=self.database) as session:
            return session.execute_read(_collect, text, params)

    def _write(self, text: str, params: dict[str, Any]) -> list[Row]:
        with self.driver.session(database=self.database) as session:
            return session.execute_write(_collect, text, params)

    def _apply_schema_statement(self, text: str) -> None:
        # Schema statements use IF NOT EXISTS; they run in auto-commit (DDL may not share a tx).
        with self.driver.session(database=self.database) as session:
            session.run(text).consume()

    def describe(self) -> dict[str, Any]:
        info = {"dialect": self.dialect, "engine": "neo4j", "database": self.database or "(default)"}
        try:
            info["uri"] = str(self.driver._pool.address)  # no credentials in it
        except Exception:
            pass
        return info

    def close(self) -> None:
        if self._owns:
            self.driver.close()


def quiet_notifications(neo4j: Any) -> dict[str, Any]:
    """Driver options that keep the server from sending "unrecognized" notifications.

    On a graph that does not hold every label, relationship type and property yet (a fresh
    database, one with no tracks or proposals) most read queries get such a warning per unknown
    name, and the driver logs each at WARNING with the whole query text: pages of noise the
    embedded engine never prints. Deprecation and performance notifications still come through.
    """
    if hasattr(neo4j, "NotificationDisabledClassification"):  # driver 5.22+
        return {"notifications_disabled_classifications": [neo4j.NotificationDisabledClassification.UNRECOGNIZED]}
    return {"notifications_disabled_categories": [neo4j.NotificationDisabledCategory.UNRECOGNIZED]}


def _redact(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}{sep}{host}{slash}{path}"


def _collect(tx: Any, text: str, params: dict[str, Any]) -> list[Row]:
    out = []
    for r in tx.run(text, params):
        try:
            out.append({k: _plain(v) for k, v in r.items()})
        except _NotPlain:  # a node, relationship, path (or other driver type): as the driver maps them
            out.append(_plain_any(r.data()))
    return out


class _NotPlain(Exception):
    pass


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _plain(v: Any) -> Any:
    """Values as they come (strings, numbers, lists, maps), checked by exact type: the driver's
    ``Record.data()`` tests every element of every list against its graph types (ABC
    ``isinstance``), which took two thirds of the client's time reading embeddings and exports."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is list:
        return [x if type(x) in _SCALARS else _plain(x) for x in v]
    if t is dict:
        return {k: x if type(x) in _SCALARS else _plain(x) for k, x in v.items()}
    raise _NotPlain


def _plain_any(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain_any(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain_any(x) for x in v]
    return v
