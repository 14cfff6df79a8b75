"""The Cypher files and their loader (lesiondb/queries.py).

- every .cypher file has a complete header whose parameters match the body's ``$params`` exactly;
- a query overridden for one dialect exists for the other, with the same parameters;
- the loader: dialect override, schema order, unknown names;
- the cross-cutting check that every FalkorDB query runs in the suite (tests/conftest.py's
  ``pytest_sessionfinish``, fed by ``lesiondb.graph.engine.EXECUTED``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lesiondb.errors import QueryError, QueryNotFound
from lesiondb.graph import queries

CYPHER = Path(__file__).resolve().parents[2] / "cypher"
FOLDERS = ("core", *queries.DIALECTS)
ALL_FILES = sorted(p for f in FOLDERS for p in (CYPHER / f).rglob("*.cypher"))
_SCALAR = {"ANY", "BOOLEAN", "STRING", "INTEGER", "FLOAT", "NUMBER", "MAP", "NULL", "DATE", "DATETIME",
           "LOCAL DATETIME", "LOCAL TIME", "TIME", "ZONED DATETIME", "ZONED TIME", "DURATION", "POINT"}


def _valid_type(t: str) -> bool:
    """A Cypher type name as the headers use them: STRING, LIST<FLOAT>, INTEGER | FLOAT, ..."""
    parts = queries._split_params(t.replace("|", ","))
    if not parts:
        return False
    for p in (" ".join(p.upper().split()) for p in parts):
        m = re.fullmatch(r"LIST\s*<(.+)>", p)
        if not (_valid_type(m.group(1)) if m else p in _SCALAR):
            return False
    return True


def _rel(p: Path) -> str:
    return str(p.relative_to(CYPHER))


def test_there_are_queries_and_schema_for_each_dialect():
    assert ALL_FILES, f"no .cypher files under {CYPHER}"
    for dialect in queries.DIALECTS:
        assert queries.schema(dialect), f"no schema statements for {dialect}"
        assert "upsert_lesions" in queries.names(dialect)


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_header_is_complete(path: Path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    header = []
    for line in lines:
        if not line.startswith("//"):
            break
        header.append(line)
    keys = [m.group(1) for m in (re.match(r"^//\s*(\w+)\s*:", h) for h in header) if m]
    for key in ("name", "params", "returns", "idempotent"):
        assert keys.count(key) == 1, f"{_rel(path)}: header needs exactly one '// {key}:' line (has {keys})"
    assert keys[:4] == ["name", "params", "returns", "idempotent"], \
        f"{_rel(path)}: header must open with name, params, returns, idempotent (in that order); has {keys}"

    dialect = path.relative_to(CYPHER).parts[0]
    q = queries.parse_query(path, dialect)
    if path.parent.name == "schema":
        m = re.fullmatch(r"(\d+)_(\w+)", path.stem)
        assert m, f"{_rel(path)}: schema files are named NN_what.cypher (applied in file-name order)"
        assert q.name == f"schema_{m.group(2)}", f"{_rel(path)}: name should be schema_{m.group(2)}"
    else:
        assert q.name == path.stem, f"{_rel(path)}: '// name: {q.name}' differs from the file name"
    assert q.returns, f"{_rel(path)}: '// returns:' is empty"
    assert re.match(r"(yes|no|read-only)\b", q.idempotent), \
        f"{_rel(path)}: '// idempotent:' must start with yes, no or read-only (is {q.idempotent!r})"
    assert q.used_params == set(q.params), (
        f"{_rel(path)}: header params {sorted(q.params)} != body $params {sorted(q.used_params)}")
    for pname, ptype in q.params.items():
        assert _valid_type(ptype), f"{_rel(path)}: parameter {pname} has unknown type {ptype!r}"
    body = "\n".join(lines[len(header):]).strip()
    assert body, f"{_rel(path)}: no statement after the header"
    if "$rows" in body:  # batched writes are UNWIND $rows (engine.write's contract)
        assert re.match(r"UNWIND\s+\$rows\s+AS\s+\w+", body), f"{_rel(path)}: a $rows query opens with UNWIND $rows"


def _plain_queries(folder: str) -> dict[str, queries.Query]:
    return {p.stem: queries.parse_query(p, folder) for p in sorted((CYPHER / folder).glob("*.cypher"))}


def test_dialect_overrides_exist_for_both_engines():
    falkor, neo = _plain_queries("falkordb"), _plain_queries("neo4j")
    assert sorted(set(falkor) - set(neo)) == [], "overridden for FalkorDB but missing in cypher/neo4j/"
    assert sorted(set(neo) - set(falkor)) == [], "overridden for Neo4j but missing in cypher/falkordb/"
    assert queries.names("falkordb") == queries.names("neo4j", portable=True)


def test_plugin_queries_say_what_they_need_and_stay_out_of_the_portable_set():
    plugin = {p.stem: queries.parse_query(p, "neo4j") for p in sorted((CYPHER / "neo4j" / "gds").glob("*.cypher"))}
    assert plugin, "no Graph Data Science queries in cypher/neo4j/gds/"
    needing = {n for n, q in plugin.items() if q.requires}
    assert needing and all(plugin[n].requires == "gds" for n in needing)
    assert set(plugin) <= set(queries.names("neo4j")) and not set(plugin) & set(queries.names("neo4j", portable=True))
    assert not set(plugin) & set(queries.names("falkordb"))
    with pytest.raises(QueryNotFound):
        queries.load("gds_louvain", "falkordb")
    assert queries.load("gds_louvain", "neo4j").requires == "gds"


def test_dialect_variants_share_the_interface():
    core = _plain_queries("core")
    falkor, neo = _plain_queries("falkordb"), _plain_queries("neo4j")
    for name in set(falkor) & set(neo):
        assert falkor[name].params == neo[name].params, f"{name}: parameters differ between dialects"
        if name in core:
            assert core[name].params == neo[name].params, f"{name}: parameters differ from cypher/core/"


def test_falkordb_and_neo4j_schema_folders_hold_only_their_dialect():
    # FalkorDB has no IF NOT EXISTS; Neo4j schema statements need it to be idempotent.
    for q in queries.schema("falkordb"):
        assert "IF NOT EXISTS" not in q.text.upper(), q.path
    for q in queries.schema("neo4j"):
        assert "IF NOT EXISTS" in q.text.upper(), f"{q.path}: Neo4j schema statements must be idempotent"


# -- the loader ------------------------------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, body in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        name = p.stem if p.parent.name != "schema" else "schema_" + p.stem.split("_", 1)[1]
        p.write_text(f"// name: {name}\n// params: none\n// returns: x\n// idempotent: read-only\n{body}\n")
    return root


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    root = _tree(tmp_path / "cypher", {
        "core/shared.cypher": "RETURN 'core' AS x",
        "core/over.cypher": "RETURN 'core' AS x",
        "neo4j/over.cypher": "RETURN 'neo4j' AS x",
        "falkordb/over.cypher": "RETURN 'falkordb' AS x",
        "core/schema/02_b.cypher": "RETURN 2",
        "neo4j/schema/01_a.cypher": "RETURN 1",
        "falkordb/schema/03_c.cypher": "RETURN 3",
    })
    monkeypatch.setattr(queries, "query_dir", lambda: root)
    return root


def test_dialect_variant_overrides_core(fake_tree):
    assert queries.load("over", "neo4j").path == fake_tree / "neo4j" / "over.cypher"
    assert queries.load("over", "falkordb").path == fake_tree / "falkordb" / "over.cypher"
    shared = queries.load("shared", "neo4j")
    assert shared.path == fake_tree / "core" / "shared.cypher" and shared.dialect == "core"
    assert queries.names("neo4j") == ["over", "shared"]


def test_schema_is_core_then_dialect_in_file_order(fake_tree):
    assert [q.name for q in queries.schema("neo4j")] == ["schema_b", "schema_a"]
    assert [q.name for q in queries.schema("falkordb")] == ["schema_b", "schema_c"]


def test_unknown_query_names_the_known_ones(fake_tree):
    with pytest.raises(QueryNotFound) as exc:
        queries.load("nope", "falkordb")
    msg = str(exc.value)
    assert "'nope'" in msg and "over" in msg and "shared" in msg


def test_unknown_dialect_is_rejected():
    with pytest.raises(ValueError, match="unknown dialect"):
        queries.load("count_nodes", "memgraph")


def test_real_unknown_query_lists_real_names():
    with pytest.raises(QueryNotFound, match="upsert_lesions"):
        queries.load("no_such_query", "neo4j")


def test_header_params_are_parsed_with_nested_types(tmp_path):
    p = tmp_path / "q.cypher"
    p.write_text("// name: q\n// params: rows: LIST<MAP>, m: MAP, k: INTEGER\n// returns: x\n"
                 "// idempotent: yes\n// Text mentioning $notAParam.\nUNWIND $rows AS r RETURN $m, $k\n")
    q = queries.parse_query(p, "core")
    assert q.params == {"rows": "LIST<MAP>", "m": "MAP", "k": "INTEGER"}
    assert q.used_params == {"rows", "m", "k"}
    assert q.description == "Text mentioning $notAParam."


def test_a_file_without_name_is_rejected(tmp_path):
    p = tmp_path / "q.cypher"
    p.write_text("// params: none\nRETURN 1\n")
    with pytest.raises(QueryNotFound, match="name"):
        queries.parse_query(p, "core")


# -- query coverage bookkeeping ----------------------------------------------------------------------
def test_engine_records_the_queries_it_ran(falkor_engine, monkeypatch):
    from lesiondb.graph import engine as engine_mod

    ran: set[tuple[str, str]] = set()
    monkeypatch.setattr(engine_mod, "EXECUTED", ran)
    applied = falkor_engine.apply_schema()
    assert {("falkordb", n) for n in applied} <= ran
    assert applied == [q.name for q in queries.schema("falkordb")]
    falkor_engine.run("count_nodes")
    assert ("falkordb", "count_nodes") in ran
    with pytest.raises(QueryError):  # a query that did not run to completion is not counted
        falkor_engine.run("lesions", patientId=None, studyId=None, typeName=None)
    assert ("falkordb", "lesions") not in ran


def test_coverage_check_lists_exactly_the_queries_never_run(request):
    here = Path(__file__).resolve().parents[1] / "conftest.py"
    conftest = next(p for p in request.config.pluginmanager.get_plugins()
                    if Path(getattr(p, "__file__", "") or "/").resolve() == here)

    everything = {("falkordb", n) for n in queries.names("falkordb")}
    everything |= {("falkordb", q.name) for q in queries.schema("falkordb")}
    assert conftest.falkordb_queries_never_run(everything) == {}
    some = sorted(everything)[0][1]
    missing = conftest.falkordb_queries_never_run(everything - {("falkordb", some)})
    assert list(missing) == [some]
    assert missing[some].endswith(".cypher")
    # Running a query on Neo4j does not count for FalkorDB.
    assert some in conftest.falkordb_queries_never_run({("neo4j", n) for _, n in everything})
