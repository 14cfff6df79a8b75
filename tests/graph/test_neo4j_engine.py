"""Neo4jEngine: unit tests on a fake driver (no server), and the Neo4j tier (marked ``neo4j``).

The Neo4j tier runs against ``LESIONDB_TEST_NEO4J_URI`` (with ``LESIONDB_PASSWORD``), e.g. the
``docker compose`` service or CI's ``neo4j:5-community`` service container; without it those
tests are skipped with the reason (see tests/conftest.py).
"""
from __future__ import annotations

import logging
import os
import uuid

import pytest

from lesiondb.errors import ConfigError, EngineError, LesionDBError, QueryError
from lesiondb.graph import queries
from lesiondb.graph.neo4j_engine import Neo4jEngine

SECRET = "s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _fake_driver_runs_do_not_count(request, monkeypatch):
    """A query run on the fake driver did not run on a Neo4j server: keep it out of the Neo4j query
    coverage that tests/conftest.py checks when the tier is on."""
    if "neo4j" not in request.fixturenames:
        from lesiondb.graph import engine as engine_mod

        monkeypatch.setattr(engine_mod, "EXECUTED", set())


# -- a fake of the official driver's session API ---------------------------------------------------
class FakeRecord:
    def __init__(self, data):
        self._data = data

    def data(self):
        return dict(self._data)

    def items(self):
        return list(self._data.items())


class FakeTx:
    def __init__(self, session, kind):
        self.session, self.kind = session, kind

    def run(self, text, params=None):
        self.session.driver.calls.append((self.kind, self.session.database, text, dict(params or {})))
        if self.session.driver.fail:
            raise RuntimeError(self.session.driver.fail)
        return [FakeRecord(r) for r in self.session.driver.result]


class FakeSummary:
    def consume(self):
        return self


class FakeSession:
    def __init__(self, driver, database):
        self.driver, self.database = driver, database

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.driver.closed_sessions += 1

    def execute_read(self, fn, *args, **kwargs):
        return fn(FakeTx(self, "read"), *args, **kwargs)

    def execute_write(self, fn, *args, **kwargs):
        return fn(FakeTx(self, "write"), *args, **kwargs)

    def run(self, text, params=None):  # auto-commit (schema DDL)
        self.driver.calls.append(("autocommit", self.database, text, dict(params or {})))
        return FakeSummary()


class FakeDriver:
    def __init__(self, result=None, fail=None):
        self.calls: list[tuple[str, str | None, str, dict]] = []
        self.result = result or []
        self.fail = fail
        self.closed = False
        self.closed_sessions = 0
        self.session_kwargs: list[dict] = []

    def session(self, **kwargs):
        self.session_kwargs.append(kwargs)
        return FakeSession(self, kwargs.get("database"))

    def close(self):
        self.closed = True


def test_reads_go_through_execute_read_on_the_named_database():
    drv = FakeDriver(result=[{"label": "Lesion", "count": 3}])
    eng = Neo4jEngine(drv, database="lesions")
    rows = eng.run("count_nodes")
    assert rows == [{"label": "Lesion", "count": 3}]
    assert [(k, db) for k, db, _, _ in drv.calls] == [("read", "lesions")]
    assert drv.calls[0][2] == queries.load("count_nodes", "neo4j").text
    assert drv.session_kwargs == [{"database": "lesions"}]
    assert drv.closed_sessions == 1


def test_plain_values_are_read_as_they_come_and_graph_values_as_the_driver_maps_them():
    class Node:  # stands in for a driver type (neo4j.graph.Node): Record.data() maps it
        pass

    class Record(FakeRecord):
        def data(self):
            return {k: ({"mapped": True} if isinstance(v, Node) else v) for k, v in self._data.items()}

    plain = {"id": "L-1", "embedding": [0.5, -0.25], "props": {"a": [1, "x"], "b": None}, "flag": True}
    drv = FakeDriver()
    rows_plain = [plain, {"id": "L-2", "n": Node()}]

    class Tx(FakeTx):
        def run(self, text, params=None):
            return [Record(r) for r in rows_plain]

    from lesiondb.graph import neo4j_engine

    out = neo4j_engine._collect(Tx(FakeSession(drv, None), "read"), "RETURN 1", {})
    assert out == [plain, {"id": "L-2", "n": {"mapped": True}}]
    assert out[0]["embedding"] is not plain["embedding"]  # copied, not shared with the driver's record


def test_writes_go_through_execute_write_after_the_schema():
    drv = FakeDriver(result=[{"total": 2, "unchanged": 0}])
    eng = Neo4jEngine(drv, database="lesions")
    rows = [{"patient": {"patientId": f"P{i}"}, "study": {"studyId": f"S{i}"},
             "lesion": {"lesionId": f"L{i}", "contentHash": "h"}} for i in range(5)]
    out = eng.write("upsert_lesions", rows, batch_size=2)
    schema = queries.schema("neo4j")
    kinds = [k for k, _, _, _ in drv.calls]
    # Schema first, in auto-commit (DDL), then one managed write transaction per batch.
    assert kinds == ["autocommit"] * len(schema) + ["write"] * 3
    assert [t for _, _, t, _ in drv.calls[:len(schema)]] == [q.text for q in schema]
    batches = [p["rows"] for k, _, _, p in drv.calls if k == "write"]
    assert batches == [rows[0:2], rows[2:4], rows[4:5]]
    assert {db for _, db, _, _ in drv.calls} == {"lesions"}
    assert len(out) == 3
    # The schema is applied once per engine, not before every write.
    drv.calls.clear()
    eng.execute("upsert_lesions", rows=rows[:1])
    assert [k for k, _, _, _ in drv.calls] == ["write"]


def test_default_database_is_the_servers_default():
    drv = FakeDriver()
    Neo4jEngine(drv).run("count_relationships")
    assert drv.session_kwargs == [{"database": None}]


def test_driver_errors_name_the_query():
    eng = Neo4jEngine(FakeDriver(fail="Neo.ClientError.Statement.SyntaxError: boom"))
    with pytest.raises(QueryError) as exc:
        eng.run("count_nodes")
    assert exc.value.name == "count_nodes" and "SyntaxError" in str(exc.value)


def test_missing_parameter_is_reported_before_the_driver_is_called():
    drv = FakeDriver()
    with pytest.raises(QueryError, match="patientId"):
        Neo4jEngine(drv).run("patient_studies")
    assert drv.calls == []


def test_close_closes_only_an_owned_driver():
    shared = FakeDriver()
    Neo4jEngine(shared).close()
    assert not shared.closed
    owned = FakeDriver()
    Neo4jEngine(owned, owns_driver=True).close()
    assert owned.closed


@pytest.mark.parametrize("uri", ["http://localhost:7474", "localhost:7687", "redis://localhost:6379",
                                 "file:///tmp/x"])
def test_bad_uri_scheme_is_a_config_error(uri):
    with pytest.raises(ConfigError, match="bolt:// or neo4j://"):
        Neo4jEngine.connect(uri, password=SECRET)


def test_unreachable_server_error_never_shows_the_password(monkeypatch):
    monkeypatch.setenv("LESIONDB_PASSWORD", SECRET)
    with pytest.raises(EngineError) as exc:
        Neo4jEngine.connect("bolt://127.0.0.1:9")  # discard port: connection refused at once
    msg = str(exc.value)
    assert "bolt://127.0.0.1:9" in msg and "neo4j" in msg
    assert SECRET not in msg and SECRET not in repr(exc.value)


@pytest.mark.parametrize("scheme", ["bolt", "neo4j"])
def test_password_in_uri_is_refused_without_echoing_it(scheme):
    try:
        Neo4jEngine.connect(f"{scheme}://neo4j:{SECRET}@127.0.0.1:9")
    except Exception as exc:  # noqa: BLE001 - asserting on whatever comes out
        assert isinstance(exc, LesionDBError), f"{type(exc).__name__} is not a lesiondb error"
        assert SECRET not in str(exc)
    else:
        pytest.fail("a URI with a password in it was accepted")


def test_describe_has_no_credentials():
    import neo4j as driver_mod

    drv = driver_mod.GraphDatabase.driver("bolt://127.0.0.1:9", auth=("neo4j", SECRET))  # does not connect
    try:
        info = Neo4jEngine(drv, database="lesions").describe()
    finally:
        drv.close()
    assert info["dialect"] == "neo4j" and info["database"] == "lesions"
    assert SECRET not in repr(info)


# -- the Neo4j tier ------------------------------------------------------------------------------
def _rows(n: int, tag: str = "a") -> list[dict]:
    return [{"patient": {"patientId": f"P{i % 3}", "sex": "F"},
             "study": {"studyId": f"P{i % 3}-S{i % 2}", "studyIndex": i % 2},
             "lesion": {"lesionId": f"L{i}", "contentHash": f"{tag}{i}", "typeName": "liver"}} for i in range(n)]


@pytest.fixture
def neo4j_engine(neo4j):
    eng = Neo4jEngine.connect(neo4j)
    eng._write("MATCH (n) DETACH DELETE n", {})
    yield eng
    eng.close()


def _counts(eng) -> tuple[dict, dict]:
    nodes = {r["label"]: r["count"] for r in eng.run("count_nodes")}
    rels = {r["type"]: r["count"] for r in eng.run("count_relationships")}
    return nodes, rels


@pytest.mark.neo4j
def test_neo4j_schema_is_applied_idempotently(neo4j_engine):
    first = neo4j_engine.apply_schema()
    second = neo4j_engine.apply_schema()  # IF NOT EXISTS: a second run is a no-op, not an error
    assert first == second == [q.name for q in queries.schema("neo4j")]
    with neo4j_engine.driver.session(database=neo4j_engine.database) as session:  # SHOW: auto-commit
        constraints = [r.data() for r in session.run("SHOW CONSTRAINTS YIELD labelsOrTypes, properties, type")]
    unique = {(c["labelsOrTypes"][0], c["properties"][0]) for c in constraints if "UNIQUE" in c["type"]}
    assert {("Patient", "patientId"), ("Study", "studyId"), ("Lesion", "lesionId")} <= unique
    assert len(constraints) == len({(tuple(c["labelsOrTypes"]), tuple(c["properties"])) for c in constraints})


@pytest.mark.neo4j
def test_neo4j_upsert_is_idempotent(neo4j_engine):
    rows = _rows(7)
    first = neo4j_engine.write("upsert_lesions", rows, batch_size=3)
    assert sum(r["total"] for r in first) == 7 and sum(r["unchanged"] for r in first) == 0
    counts = _counts(neo4j_engine)
    assert counts[0] == {"Lesion": 7, "Patient": 3, "Study": 6}
    assert counts[1] == {"HAS_LESION": 7, "HAS_STUDY": 6}
    again = neo4j_engine.write("upsert_lesions", list(reversed(rows)), batch_size=2)
    assert sum(r["unchanged"] for r in again) == 7
    assert _counts(neo4j_engine) == counts
    changed = neo4j_engine.write("upsert_lesions", _rows(7, tag="b"), batch_size=7)
    assert sum(r["unchanged"] for r in changed) == 0
    assert _counts(neo4j_engine) == counts


@pytest.mark.neo4j
def test_reads_of_a_graph_missing_some_names_log_no_warning(neo4j_engine, caplog):
    """A graph without tracks, proposals or models yet (a fresh one) is normal: the server's
    "unknown property / label / relationship type" notifications are switched off, or the driver
    logs each at WARNING with the whole query (the embedded engine prints nothing)."""
    neo4j_engine.write("upsert_lesions", _rows(2))
    with caplog.at_level(logging.INFO, logger="neo4j"):
        assert neo4j_engine.run("models") == []
        assert neo4j_engine.run("match_patient_tracks", patientIds=["P0"]) == []
        neo4j_engine.run("proposals", status=None, patientId=None, proposalId=None, limit=5)
    assert [r.getMessage()[:120] for r in caplog.records if r.levelno >= logging.INFO] == []


@pytest.mark.neo4j
def test_neo4j_errors_and_describe_never_show_credentials(neo4j, neo4j_engine, monkeypatch):
    password = os.environ.get("LESIONDB_PASSWORD") or ""
    assert password, "the Neo4j tier needs LESIONDB_PASSWORD"
    info = neo4j_engine.describe()
    assert password not in repr(info)
    with pytest.raises(QueryError) as exc:  # a server-side error: constraint violation on a bad row
        neo4j_engine.write("upsert_lesions", [{"patient": {}, "study": {}, "lesion": {}}])
    assert password not in str(exc.value)
    # One wrong password only: Neo4j locks the user out for a while after 3 failed logins in a row.
    monkeypatch.setenv("LESIONDB_PASSWORD", SECRET)
    with pytest.raises(EngineError) as exc:
        Neo4jEngine.connect(neo4j)
    assert SECRET not in str(exc.value) and password not in str(exc.value)
    assert neo4j in str(exc.value)  # it does say where it tried


@pytest.mark.neo4j
def test_neo4j_vector_index_is_not_quantized(neo4j_engine):
    """Neo4j 5.26 quantizes vector indexes by default: scores off by hundredths, close neighbours
    reordered. lesiondb's index is created without, so its scores are the exact 1 / (1 + d²)."""
    import numpy as np

    from lesiondb.embedding import store as sim

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    neo4j_engine._write("UNWIND $rows AS r CREATE (:Lesion {lesionId: r.id, embedding: r.v})",
                        {"rows": [{"id": f"L{i:02d}", "v": v.tolist()} for i, v in enumerate(vectors)]})
    sim.drop_vector_index(neo4j_engine)
    try:
        assert sim.ensure_vector_index(neo4j_engine, 8)
        assert sim.vector_index(neo4j_engine) == {"dimension": 8, "state": "ONLINE"}
        with neo4j_engine.driver.session(database=neo4j_engine.database) as session:
            options = session.run("SHOW VECTOR INDEXES YIELD name, options WHERE name = 'lesion_embedding' "
                                  "RETURN options").single()["options"]
        assert options["indexConfig"]["vector.quantization.enabled"] is False
        hits = neo4j_engine._read("CALL db.index.vector.queryNodes('lesion_embedding', 10, $v) YIELD node, score "
                                  "RETURN node.lesionId AS id, score", {"v": vectors[0].tolist()})
        d = {f"L{i:02d}": x for i, x in enumerate(np.linalg.norm(vectors - vectors[0], axis=1))}
        assert [h["id"] for h in hits] == sorted(d, key=d.get)[:10]
        assert np.allclose([h["score"] for h in hits], [1 / (1 + d[h["id"]] ** 2) for h in hits], atol=1e-6)
    finally:
        sim.drop_vector_index(neo4j_engine)


# Warnings EXPLAIN may give that say nothing about the query itself: a label, relationship type or
# property the database has never held (a fresh server). Success (00…) and no-data (02…) statuses
# pass too; every other warning (01…, deprecations included) or information (03…) fails.
_UNKNOWN_TOKEN = {"01N50", "01N51", "01N52"}


@pytest.mark.neo4j
def test_every_neo4j_query_plans_on_the_server_without_a_warning(neo4j_engine):
    """The server's own planner accepts every query the Neo4j engine runs (portable core, dialect
    variants, GDS), with no deprecation or performance warning: each query's parameters given as
    nulls, since EXPLAIN plans without running."""
    findings = {}
    with neo4j_engine.driver.session(database=neo4j_engine.database) as session:
        for name in queries.names("neo4j"):
            q = queries.load(name, "neo4j")
            summary = session.run("EXPLAIN " + q.text, {p: None for p in q.params}).consume()
            found = [f"{g.gql_status}: {g.status_description}" for g in summary.gql_status_objects
                     if not g.gql_status.startswith(("00", "02")) and g.gql_status not in _UNKNOWN_TOKEN]
            if found:
                findings[name] = found
    assert findings == {}
