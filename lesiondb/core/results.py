"""Typed results of the use cases: dataclasses that turn themselves into JSON.

Every use case (ingest, embed, match, mine, evaluate, …) returns a dataclass deriving from
:class:`Result`; ``to_json()`` gives the JSON object the CLI prints with ``--json`` and the client
hands back. Field names become camelCase keys; ``field(metadata=…)`` can rename a key (``json``),
leave a None out (``omit_none``) or merge a nested mapping into the parent (``flatten``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def camel(name: str) -> str:
    """``seconds_per_study`` → ``secondsPerStudy``."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def jsonable(value: Any) -> Any:
    """Plain JSON values: nested results, numpy scalars and arrays, paths, tuples and sets."""
    if isinstance(value, Result):
        return value.to_json()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy
    if callable(tolist):
        return jsonable(tolist())
    return value


def json_field(*, key: str | None = None, omit_none: bool = False, flatten: bool = False,
               default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with JSON options (see the module doc)."""
    meta = {"json": key, "omit_none": omit_none, "flatten": flatten}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Result:
    """Base of every use case's result (a dataclass): ``to_json()`` and ``to_dict()`` (the same)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.repr and not f.metadata.get("json"):
                continue  # internal state
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("flatten"):
                out.update(jsonable(value or {}))
                continue
            out[f.metadata.get("json") or camel(f.name)] = jsonable(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.to_json()

    def __getitem__(self, key: str) -> Any:
        """Read a result like the JSON object it prints (``result["embedded"]``)."""
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)
