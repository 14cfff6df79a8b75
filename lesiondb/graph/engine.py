"""The engine interface: run a named query with parameters and get rows; batched idempotent writes."""
from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import QueryError
from . import queries

log = logging.getLogger(__name__)

Row = dict[str, Any]
DEFAULT_BATCH = 2000

# (dialect, query name) of every query (schema statements included) that ran to completion in this
# process; tests/conftest.py checks at the end of a full test run that every FalkorDB query ran.
EXECUTED: set[tuple[str, str]] = set()


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for it in items:
        batch.append(it)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Engine(abc.ABC):
    """A graph engine speaking one Cypher dialect.

    Subclasses implement :meth:`_read`, :meth:`_write` and :meth:`close`; everything else is shared.
    """

    dialect: str = ""
    _schema_applied: bool = False

    # -- what subclasses provide ---------------------------------------------------------------
    @abc.abstractmethod
    def _read(self, text: str, params: dict[str, Any]) -> list[Row]:
        """Run a read-only statement."""

    @abc.abstractmethod
    def _write(self, text: str, params: dict[str, Any]) -> list[Row]:
        """Run a statement in one managed write transaction (retried on transient errors)."""

    @abc.abstractmethod
    def _apply_schema_statement(self, text: str) -> None:
        """Apply one schema statement, idempotently."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What this engine is and how to reach it (no secrets)."""
        return {"dialect": self.dialect}

    # -- shared API ----------------------------------------------------------------------------
    def query(self, name: str) -> queries.Query:
        return queries.load(name, self.dialect)

    def run(self, name: str, **params: Any) -> list[Row]:
        """Run the read query ``name`` and return its rows as dicts."""
        q = self.query(name)
        _check_params(q, params)
        try:
            rows = self._read(q.text, params)
        except QueryError:
            raise
        except Exception as exc:  # driver errors carry the server's message
            raise QueryError(name, str(exc)) from exc
        EXECUTED.add((self.dialect, q.name))
        return rows

    def execute(self, name: str, **params: Any) -> list[Row]:
        """Run the write query ``name`` once, in a managed write transaction."""
        self.ensure_schema()
        q = self.query(name)
        _check_params(q, params)
        try:
            rows = self._write(q.text, params)
        except QueryError:
            raise
        except Exception as exc:
            raise QueryError(name, str(exc)) from exc
        EXECUTED.add((self.dialect, q.name))
        return rows

    def write(
        self,
        name: str,
        rows: Iterable[Row],
        batch_size: int = DEFAULT_BATCH,
        on_batch: Callable[[list[Row], list[Row]], None] | None = None,
        **params: Any,
    ) -> list[Row]:
        """Write ``rows`` with the ``UNWIND $rows`` query ``name``, one transaction per batch.

        ``on_batch(batch, result)`` is called after each committed batch (progress, counters).
        Returns the result rows of every batch, concatenated.
        """
        self.ensure_schema()
        q = self.query(name)
        if "rows" not in q.params:
            raise QueryError(name, "a batched write query must declare a $rows parameter")
        out: list[Row] = []
        for batch in batched(rows, batch_size):
            try:
                res = self._write(q.text, {**params, "rows": batch})
            except Exception as exc:
                raise QueryError(name, str(exc)) from exc
            out.extend(res)
            EXECUTED.add((self.dialect, q.name))
            if on_batch is not None:
                on_batch(batch, res)
        return out

    def ensure_schema(self) -> None:
        if not self._schema_applied:
            self.apply_schema()

    def apply_schema(self) -> list[str]:
        """Create constraints and indexes if missing; returns the names of the statements applied."""
        applied = []
        for q in queries.schema(self.dialect):
            self._apply_schema_statement(q.text)
            EXECUTED.add((self.dialect, q.name))
            applied.append(q.name)
        self._schema_applied = True
        return applied

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_params(q: queries.Query, params: dict[str, Any]) -> None:
    missing = q.used_params - set(params)
    if missing:
        raise QueryError(q.name, f"missing parameter(s): {', '.join(sorted(missing))} "
                                 f"(declared: {', '.join(f'{k}: {v}' for k, v in q.params.items()) or 'none'})")
