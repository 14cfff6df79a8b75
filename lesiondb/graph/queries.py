"""Named Cypher queries, one per ``.cypher`` file (aiosql style).

Layout of the query folder (``cypher/`` in a checkout, ``lesiondb/cypher`` inside a wheel)::

    core/NAME.cypher       portable openCypher, runs on both engines
    falkordb/NAME.cypher   FalkorDB variant, where the dialects differ
    neo4j/NAME.cypher      Neo4j 5 variant
    */schema/NN_NAME.cypher  schema statements, applied in file-name order
    neo4j/gds/NAME.cypher  Neo4j queries that need a server plug-in (Graph Data Science); their
                           header says ``// requires: gds``, and no FalkorDB twin is expected

Each file opens with a header of ``//`` comments::

    // name: similar_lesions
    // params: lesionId: STRING, k: INTEGER
    // returns: lesionId, distance
    // idempotent: yes
    // requires: gds           (optional: a server plug-in the query needs)
    // Free text describing the query.

A dialect folder overrides ``core`` for that engine; ``tests/test_queries.py`` checks that a
query overridden for one engine exists for the other as well.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import QueryNotFound

DIALECTS = ("falkordb", "neo4j")
# Server plug-ins some Neo4j queries need, each in its own folder under cypher/neo4j/.
PLUGINS = {"neo4j": ("gds",)}
_HEADER_RE = re.compile(r"^//\s*(\w+)\s*:\s*(.*)$")
_PARAM_RE = re.compile(r"\$(\w+)")


@dataclass(frozen=True)
class Query:
    name: str
    text: str
    path: Path
    dialect: str  # "core", "falkordb" or "neo4j"
    params: dict[str, str] = field(default_factory=dict)  # name -> declared type
    returns: str = ""
    idempotent: str = ""
    requires: str = ""  # a server plug-in the query needs ("gds"), or ""
    description: str = ""

    @property
    def used_params(self) -> set[str]:
        """Parameters referenced in the body (``$name``)."""
        body = "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("//"))
        return set(_PARAM_RE.findall(body))


def query_dir() -> Path:
    """The folder holding the ``.cypher`` files: inside the installed package, else the checkout's."""
    packaged = Path(str(resources.files("lesiondb"))) / "cypher"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "cypher"
    if checkout.is_dir():
        return checkout
    raise QueryNotFound(
        f"no cypher/ folder found next to the lesiondb package ({packaged}, {checkout}); reinstall lesiondb")


def parse_query(path: Path, dialect: str) -> Query:
    text = path.read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    desc: list[str] = []
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        m = _HEADER_RE.match(line)
        if m and m.group(1) in ("name", "params", "returns", "idempotent", "requires"):
            meta[m.group(1)] = m.group(2).strip()
        else:
            desc.append(line[2:].strip())
    name = meta.get("name")
    if not name:
        raise QueryNotFound(f"{path}: header has no '// name:' line")
    params: dict[str, str] = {}
    raw = meta.get("params", "").strip()
    if raw and raw.lower() != "none":
        for part in _split_params(raw):
            pname, _, ptype = part.partition(":")
            params[pname.strip().lstrip("$")] = ptype.strip() or "ANY"
    return Query(name=name, text=text, path=path, dialect=dialect, params=params,
                 returns=meta.get("returns", ""), idempotent=meta.get("idempotent", ""),
                 requires=meta.get("requires", ""), description=" ".join(d for d in desc if d))


def _split_params(raw: str) -> list[str]:
    """Split ``a: LIST<MAP>, b: INTEGER`` on top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in raw:
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [p.strip() for p in out if p.strip()]


@functools.cache
def _catalog(root: str) -> dict[str, dict[str, Query]]:
    """``{dialect-or-core: {name: Query}}`` for every non-schema query."""
    base = Path(root)
    out: dict[str, dict[str, Query]] = {}
    for folder in ("core", *DIALECTS):
        out[folder] = {}
        paths = sorted((base / folder).glob("*.cypher"))
        for plugin in PLUGINS.get(folder, ()):
            paths += sorted((base / folder / plugin).glob("*.cypher"))
        for p in paths:
            q = parse_query(p, folder)
            if q.name in out[folder]:
                raise QueryNotFound(f"duplicate query name {q.name!r} in {p} and {out[folder][q.name].path}")
            out[folder][q.name] = q
    return out


def catalog() -> dict[str, dict[str, Query]]:
    return _catalog(str(query_dir()))


def load(name: str, dialect: str) -> Query:
    """The query ``name`` for ``dialect``: its dialect variant if there is one, else the core one."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")
    cat = catalog()
    q = cat[dialect].get(name) or cat["core"].get(name)
    if q is None:
        known = sorted(set(cat["core"]) | set(cat[dialect]))
        raise QueryNotFound(f"no query named {name!r} for {dialect}; known: {', '.join(known)}")
    return q


def names(dialect: str, *, portable: bool = False) -> list[str]:
    """Query names for ``dialect``; ``portable`` leaves out the plug-in folders' queries."""
    cat = catalog()
    plugins = PLUGINS.get(dialect, ())
    found = set(cat["core"]) | {n for n, q in cat[dialect].items()
                                if not (portable and q.path.parent.name in plugins)}
    return sorted(found)


def schema(dialect: str) -> list[Query]:
    """Schema statements for ``dialect`` (``core/schema`` then ``DIALECT/schema``), in file-name order."""
    base = query_dir()
    out: list[Query] = []
    for folder in ("core", dialect):
        d = base / folder / "schema"
        if d.is_dir():
            out.extend(parse_query(p, folder) for p in sorted(d.glob("*.cypher")))
    return out
