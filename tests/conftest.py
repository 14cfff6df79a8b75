"""Shared fixtures.

- ``shared_data``: the read-only real data at ``../shared/data`` (skips with a reason when absent).
- ``engine``: a fresh, empty graph. The embedded FalkorDB always; also Neo4j when
  ``LESIONDB_TEST_NEO4J_URI`` is set (tests using it then run once per engine; the Neo4j run is
  marked ``neo4j``). ``tools/neo4j-server start DIR`` starts a throwaway server for it.
- ``falkor_server``: one embedded server for the whole session (each test gets its own graph).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
NEO4J_URI = os.environ.get("LESIONDB_TEST_NEO4J_URI")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "neo4j" in getattr(item, "fixturenames", ()) and not NEO4J_URI:
            item.add_marker(pytest.mark.skip(
                reason="Neo4j tier: set LESIONDB_TEST_NEO4J_URI (and LESIONDB_PASSWORD) to run it"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED} (expected ../shared/data beside the repo)")
    return SHARED


@pytest.fixture(scope="session")
def dl_info(shared_data) -> Path:
    p = shared_data / "deeplesion" / "DL_info_available_merged.csv"
    if not p.is_file():
        pytest.skip(f"{p} is missing")
    return p


@pytest.fixture(scope="session")
def falkor_server(tmp_path_factory):
    from lesiondb.graph.embedded import EmbeddedFalkorDB

    srv = EmbeddedFalkorDB(tmp_path_factory.mktemp("falkor")).start()
    yield srv
    srv.stop()


def _falkor_engine(server):
    from falkordb import FalkorDB

    from lesiondb.graph.falkor_engine import FalkorEngine

    db = FalkorDB(unix_socket_path=str(server.socket_path))
    return FalkorEngine(db, graph="t_" + uuid.uuid4().hex[:12])


def _neo4j_engine():
    from lesiondb.graph.neo4j_engine import Neo4jEngine

    eng = Neo4jEngine.connect(NEO4J_URI)
    eng._write("MATCH (n) DETACH DELETE n", {})
    return eng


@pytest.fixture(params=["falkordb", pytest.param("neo4j", marks=pytest.mark.neo4j)] if NEO4J_URI else ["falkordb"])
def engine(request, falkor_server):
    """An empty graph on each available engine (the Neo4j one carries the ``neo4j`` marker, so
    ``pytest -m neo4j`` runs every engine-parametrised test on Neo4j with the tier)."""
    if request.param == "neo4j":
        eng = _neo4j_engine()
    else:
        eng = _falkor_engine(falkor_server)
    yield eng
    if request.param == "falkordb":
        try:
            eng.graph.delete()
        except Exception:
            pass
    eng.close()


@pytest.fixture
def falkor_engine(falkor_server):
    """An empty graph on the embedded FalkorDB only (for dialect-specific tests)."""
    eng = _falkor_engine(falkor_server)
    yield eng
    try:
        eng.graph.delete()
    except Exception:
        pass


@pytest.fixture
def neo4j():
    """Present only in the Neo4j tier (tests asking for it are skipped without LESIONDB_TEST_NEO4J_URI)."""
    return NEO4J_URI


# -- every query must run somewhere in the suite, on each engine the run has ---------------------
_DESELECTED = pytest.StashKey[int]()


def pytest_deselected(items):
    if items:
        config = items[0].config
        config.stash[_DESELECTED] = config.stash.get(_DESELECTED, 0) + len(items)


def _whole_suite_ran(session) -> bool:
    """True when nothing narrowed the run: no -k/-m deselection, no path below tests/, no --ignore/--lf."""
    config = session.config
    opt = config.option
    if (opt.keyword or config.stash.get(_DESELECTED, 0) or getattr(opt, "collectonly", False)
            or getattr(opt, "lf", False) or getattr(opt, "stepwise", False)
            or getattr(opt, "deselect", None) or getattr(opt, "ignore", None)
            or getattr(opt, "ignore_glob", None) or hasattr(config, "workerinput")
            or getattr(opt, "numprocesses", None)):
        return False
    tests_dir = REPO / "tests"
    for arg in config.args:
        if "::" in arg:
            return False
        p = (config.invocation_params.dir / arg).resolve()
        if p != tests_dir and p not in tests_dir.parents:
            return False
    return True


def queries_never_run(dialect: str, executed: set[tuple[str, str]]) -> dict[str, str]:
    """``{query name: file}`` of ``dialect``'s queries (portable core, plug-in folders and schema
    included) missing from ``executed``."""
    from lesiondb.graph import queries

    wanted = {n: str(queries.load(n, dialect).path) for n in queries.names(dialect)}
    wanted.update({q.name: str(q.path) for q in queries.schema(dialect)})
    ran = {name for d, name in executed if d == dialect}
    return {n: p for n, p in sorted(wanted.items()) if n not in ran}


def falkordb_queries_never_run(executed: set[tuple[str, str]]) -> dict[str, str]:
    return queries_never_run("falkordb", executed)


def neo4j_queries_never_run(executed: set[tuple[str, str]]) -> dict[str, str]:
    return queries_never_run("neo4j", executed)


# What each check says about the engine it covers.
_COVERAGE = {"falkordb": ("FalkorDB-dialect", "the embedded engine"),
             "neo4j": ("Neo4j-dialect", "the Neo4j server (LESIONDB_TEST_NEO4J_URI)")}


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0 or session.testsfailed or not _whole_suite_ran(session):
        return
    from lesiondb.graph.engine import EXECUTED

    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr is not None else (lambda s, **kw: print(s))
    # Every FalkorDB query must run somewhere in the suite; every Neo4j one too when the Neo4j
    # tier is on (only engines connected to the server record "neo4j": the fake-driver tests
    # keep theirs apart).
    for dialect in ("falkordb", "neo4j") if NEO4J_URI else ("falkordb",):
        what, where = _COVERAGE[dialect]
        if not any(d == dialect for d, _ in EXECUTED):
            write(f"query coverage not checked: no query ran on {where} (unavailable here?)", yellow=True)
            continue
        missing = queries_never_run(dialect, EXECUTED)
        if missing:
            write("")
            write(f"FAILED query coverage: {len(missing)} {what} quer{'y' if len(missing) == 1 else 'ies'} "
                  f"never ran on {where} in this test run; add a test that runs "
                  "(each through Engine.run/execute/write/apply_schema):", red=True, bold=True)
            for name, path in missing.items():
                write(f"  {name}  ({path})", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- a small DICOM cohort with images and a tiny encoder (pipeline, embed and similar tests) ---------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.similarity_factory import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def image_cohort(tmp_path_factory):
    from tests.similarity_factory import make_cohort

    return make_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def sr_source(tmp_path_factory, falkor_server):
    """A synthetic cohort ingested, matched, with mining proposals, exported as DICOM SR reports
    (the interop and CLI tests read it; none writes to it)."""
    pytest.importorskip("highdicom")
    from tests.interop.helpers import make_source

    return make_source(tmp_path_factory.mktemp("interop"), falkor_server)
