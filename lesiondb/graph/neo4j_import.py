"""The graph as ``neo4j-admin database import full`` files: the bulk path for large archives.

``export_neo4j_import(engine, out_dir)`` reads the whole graph from any engine (label by label,
page by page: :func:`iter_nodes`) and writes, per label, a header file and a data file of nodes,
and per relationship type (and its start and end labels) a header file and a data file of
relationships, in the CSV dialect of ``neo4j-admin``:

- node ids are the label's key property (``lesionId:ID(Lesion)``: one id space per label, and the
  id is stored as that property, as the UNWIND ingest stores it); relationships name their ends
  by the same ids (``:START_ID(Study)``, ``:END_ID(Lesion)``);
- every property of the graph, typed from its values: ``boolean``, ``long``, ``double``,
  ``string``, arrays of those (``double[]`` …) with ``;`` between the elements (another character
  where a string in an array holds a ``;``), and ``float[]``
  for the lesion embeddings (32-bit: the precision the embeddings have, half the store);
- ``args`` in the result (and ``neo4j-admin-import.args`` in the folder, one argument a line)
  are the arguments of the import itself.

After the import, ``lesiondb init`` creates the constraints and, where lesions carry embeddings,
the vector index (the import writes data only).

:func:`dump_graph` reads the same pages into memory: what the engine parity tests compare.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.progress import Progress, stage
from ..core.results import Result
from ..errors import InputError
from .engine import Engine

#: Each label's key property: unique (the schema's constraints), and the node's import id.
LABEL_KEYS: dict[str, str] = {
    "Patient": "patientId", "Study": "studyId", "Lesion": "lesionId", "Track": "trackingUid",
    "Proposal": "proposalId", "Cluster": "clusterId", "Model": "modelId", "GraphInfo": "infoId",
}
#: Vector properties, written as 32-bit ``float[]``.
FLOAT32_ARRAYS = {("Lesion", "embedding")}
#: Nodes per read.
PAGE = 2000
#: The array delimiter: the first of these that no string in an array holds.
ARRAY_DELIMITERS = (";", "|", "^", "~", "`")
ARGS_FILE = "neo4j-admin-import.args"


@dataclass
class GraphNode:
    """One node as read: its label, id (key property), every property, outgoing relationships
    as ``(type, end label, end id, properties)``."""

    label: str
    id: str
    labels: list[str]
    props: dict[str, Any]
    out: list[tuple[str, str, str, dict[str, Any]]]


def iter_nodes(engine: Engine, label: str, page: int = PAGE) -> Iterator[GraphNode]:
    """Every node labelled ``label``, in key order, ``page`` per read."""
    key = LABEL_KEYS[label]
    after = ""
    while True:
        rows = engine.run("export_graph", label=label, key=key, keys=LABEL_KEYS, after=after, limit=int(page))
        for r in rows:
            # a relationship to a node of a label lesiondb does not know (no key) is left out
            yield GraphNode(label, r["id"], list(r["labels"]), dict(r["props"]),
                            [(o[0], o[1], o[2], dict(o[3] or {})) for o in r["out"] or [] if o[2] is not None])
        if len(rows) < page:
            return
        after = rows[-1]["id"]


def dump_graph(engine: Engine) -> tuple[dict[tuple[str, str], dict[str, Any]], list[tuple]]:
    """The whole graph in memory: ``{(label, id): properties}`` and the relationships as
    ``(type, start label, start id, end label, end id, properties)``, sorted."""
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    rels: list[tuple] = []
    for label in LABEL_KEYS:
        for n in iter_nodes(engine, label):
            nodes[(label, n.id)] = n.props
            rels.extend((t, label, n.id, el, eid, p) for t, el, eid, p in n.out)
    rels.sort(key=lambda r: (r[0], r[1], r[2], r[3], r[4], json.dumps(r[5], sort_keys=True, default=str)))
    return nodes, rels


# -- property types ---------------------------------------------------------------------------------
def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        kinds = {_kind(x) for x in v}
        if not kinds:
            return "[]"
        if kinds <= {"long", "double"}:
            return "double[]" if "double" in kinds else "long[]"
        if len(kinds) == 1 and next(iter(kinds)) in ("boolean", "string"):
            return next(iter(kinds)) + "[]"
        return "json"
    return "json"


def _merge(a: str | None, b: str) -> str:
    """The type holding values of both types (numbers widen to double; anything else mixed: json)."""
    if a is None or a == b:
        return b
    if b == "[]":
        return a if a.endswith("[]") else "json"
    if a == "[]":
        return b if b.endswith("[]") else "json"
    if {a, b} == {"long", "double"}:
        return "double"
    if {a, b} == {"long[]", "double[]"}:
        return "double[]"
    return "json"


class _Schema:
    """The columns of one file: every property seen, typed from every value."""

    def __init__(self, float32: set[str] = frozenset(), used: set[str] | None = None):
        self.types: dict[str, str | None] = {}
        self.float32 = float32
        self.used = used if used is not None else set()  # delimiter candidates found in array strings

    def add(self, props: dict[str, Any]) -> None:
        for k, v in props.items():
            if v is not None:
                self.types[k] = _merge(self.types.get(k), _kind(v))
                if isinstance(v, list | tuple):
                    self.used.update(c for x in v if isinstance(x, str) for c in ARRAY_DELIMITERS if c in x)

    def columns(self) -> list[tuple[str, str]]:
        """(name, neo4j-admin type) in name order; an array only ever seen empty is a string[]."""
        out = []
        for k in sorted(self.types):
            t = self.types[k] or "string"
            if t == "[]":
                t = "string[]"
            if t == "double[]" and k in self.float32:
                t = "float[]"
            out.append((k, "string" if t == "json" else t))
        return out

    def coerced(self) -> list[str]:
        return sorted(k for k, t in self.types.items() if t == "json")


def _cell(v: Any, typ: str, delimiter: str) -> str | None:
    """One value as neo4j-admin reads a field of type ``typ`` (None: an empty field, no property)."""
    if v is None:
        return None
    if typ.endswith("[]"):
        if not isinstance(v, list | tuple):
            v = [v]
        return delimiter.join(_scalar(x, typ[:-2]) for x in v)
    if typ == "string" and not isinstance(v, str):
        return json.dumps(v, sort_keys=True)  # a property of mixed types (reported as coerced)
    return _scalar(v, typ)


def _scalar(v: Any, typ: str) -> str:
    if typ == "boolean":
        return "true" if v else "false"
    if typ in ("double", "float"):
        f = float(v)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return repr(f)
    if typ == "long":
        return str(int(v))
    return str(v)


# -- the export -------------------------------------------------------------------------------------
@dataclass
class Neo4jImportExport(Result):
    """What ``lesiondb export neo4j-import`` wrote: counts per label and relationship type, the
    files, and the ``neo4j-admin`` arguments that import them."""

    out_dir: str
    nodes: dict[str, int] = field(default_factory=dict)
    relationships: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    #: properties whose values mixed types (written as JSON strings), as "Label.property"
    coerced: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0


def _q(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def export_neo4j_import(engine: Engine, out_dir: str | Path, *, database: str = "neo4j", page: int = PAGE,
                        overwrite: bool = False, progress: Progress | None = None) -> Neo4jImportExport:
    """Write the graph of ``engine`` into ``out_dir`` as ``neo4j-admin database import full`` files
    (see the module doc); ``database`` names the database in ``args``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} is not empty (pass overwrite / --overwrite to replace it)", str(out))
        shutil.rmtree(out)
    spill = out / ".spill"
    spill.mkdir(parents=True)
    result = Neo4jImportExport(out_dir=str(out))
    node_schema: dict[str, _Schema] = {}
    extra_labels: dict[str, bool] = {}
    rel_schema: dict[tuple[str, str, str], _Schema] = {}
    rel_files: dict[tuple[str, str, str], Any] = {}
    used: set[str] = set()
    # pass 1: read every node (and its outgoing relationships) once, learning the columns, into
    # JSON-lines spill files; pass 2 writes the CSV files with their final headers
    try:
        with stage(progress, "export: read graph") as b:
            for label in LABEL_KEYS:
                schema = node_schema[label] = _Schema({p for lab, p in FLOAT32_ARRAYS if lab == label}, used)
                count = 0
                with open(spill / f"n.{label}.jsonl", "w", encoding="utf-8") as nf:
                    for n in iter_nodes(engine, label, page):
                        props = {k: v for k, v in n.props.items() if k != LABEL_KEYS[label]}
                        schema.add(props)
                        if n.labels != [label]:
                            extra_labels[label] = True
                        nf.write(json.dumps([n.id, n.labels, props]) + "\n")
                        count += 1
                        for typ, end_label, end_id, rprops in n.out:
                            group = (typ, label, end_label)
                            if group not in rel_files:
                                rel_schema[group] = _Schema(used=used)
                                rel_files[group] = open(spill / f"r.{typ}.{label}.{end_label}.jsonl", "w",
                                                        encoding="utf-8")
                            rel_schema[group].add(rprops)
                            rel_files[group].write(json.dumps([n.id, end_id, rprops]) + "\n")
                        b.update(1)
                if count:
                    result.nodes[label] = count
        for fh in rel_files.values():
            fh.close()

        free = [c for c in ARRAY_DELIMITERS if c not in used]
        if not free:
            raise InputError("every array delimiter neo4j-admin could use (" + " ".join(ARRAY_DELIMITERS)
                             + ") occurs in a string of an array property: cannot write the arrays")
        delim = free[0]
        args = ["database", "import", "full", database]
        multiline = False
        with stage(progress, "export: write files", sum(result.nodes.values())) as b:
            ndir = out / "nodes"
            ndir.mkdir()
            for label in result.nodes:
                key = LABEL_KEYS[label]
                cols = node_schema[label].columns()
                header = [f"{key}:ID({label})"] + [f"{k}:{t}" for k, t in cols]
                quoted = [True] + [t in ("string", "string[]") for _, t in cols]
                with_labels = extra_labels.get(label, False)
                if with_labels:
                    header.append(":LABEL")
                    quoted.append(True)

                def rows(label=label, cols=cols, with_labels=with_labels):
                    with open(spill / f"n.{label}.jsonl", encoding="utf-8") as fh:
                        for line in fh:
                            nid, labels, props = json.loads(line)
                            row = [nid] + [_cell(props.get(k), t, delim) for k, t in cols]
                            if with_labels:
                                row.append(delim.join(labels))
                            b.update(1)
                            yield row

                hfile, dfile = ndir / f"{label}.header.csv", ndir / f"{label}.csv"
                hfile.write_text(",".join(header) + "\n", encoding="utf-8")
                multiline |= _write_data(dfile, rows(), quoted)[1]
                result.files += [str(hfile), str(dfile)]
                args.append(f"--nodes={label}={hfile.resolve()},{dfile.resolve()}")
                result.coerced += [f"{label}.{p}" for p in node_schema[label].coerced()]
            rdir = out / "relationships"
            rdir.mkdir()
            for group in sorted(rel_files):
                typ, start, end = group
                cols = rel_schema[group].columns()
                header = [f":START_ID({start})", f":END_ID({end})"] + [f"{k}:{t}" for k, t in cols]
                quoted = [True, True] + [t in ("string", "string[]") for _, t in cols]

                def rrows(group=group, cols=cols):
                    with open(spill / "r.{}.{}.{}.jsonl".format(*group), encoding="utf-8") as fh:
                        for line in fh:
                            a, z, props = json.loads(line)
                            yield [a, z] + [_cell(props.get(k), t, delim) for k, t in cols]

                stem = f"{typ}.{start}.{end}"
                hfile, dfile = rdir / f"{stem}.header.csv", rdir / f"{stem}.csv"
                hfile.write_text(",".join(header) + "\n", encoding="utf-8")
                n, ml = _write_data(dfile, rrows(), quoted)
                multiline |= ml
                result.relationships[typ] = result.relationships.get(typ, 0) + n
                result.files += [str(hfile), str(dfile)]
                args.append(f"--relationships={typ}={hfile.resolve()},{dfile.resolve()}")
                result.coerced += [f"{typ}.{p}" for p in rel_schema[group].coerced()]
        args.append(f"--array-delimiter={delim}")
        if multiline:  # slower to read: only when a value needs it
            args.append("--multiline-fields=true")
        result.args = args
        (out / ARGS_FILE).write_text("\n".join(args) + "\n", encoding="utf-8")
    finally:
        for fh in rel_files.values():
            fh.close()
        shutil.rmtree(spill, ignore_errors=True)
    result.bytes = sum(Path(f).stat().st_size for f in result.files)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _write_data(path: Path, rows: Iterable[list[str | None]], quoted: list[bool]) -> tuple[int, bool]:
    """Write the data rows: a string-typed value always quoted (an empty string stays one), other
    values bare, None as an empty bare field (no property). Returns (rows, whether a value holds
    a line break)."""
    n = 0
    multiline = False
    with open(path, "w", newline="", encoding="utf-8") as fh:
        for row in rows:
            cells = []
            for c, q in zip(row, quoted, strict=True):
                if c is None:
                    cells.append("")
                elif q:
                    multiline = multiline or "\n" in c or "\r" in c
                    cells.append(_q(c))
                else:
                    cells.append(c)
            fh.write(",".join(cells) + "\n")
            n += 1
    return n, multiline
