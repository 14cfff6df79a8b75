"""Fixtures of the web tests: a small synthetic cohort, and graphs built from it through the
library exactly as the CLI builds them (ingest → match → mine)."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from tests.identifiers import source_identifiers

NEO4J_URI = os.environ.get("LESIONDB_TEST_NEO4J_URI")
KEY = "lesiondb-web-tests-pseudonym-key-0001"
SEED = 5  # 3 patients: 7 pending proposals and 1 POSSIBLE_SAME_LESION link after mining


@dataclass
class Site:
    """A graph built from the cohort, with what the app needs to show it."""

    engine: object
    ids: Pseudonymizer
    cohort: Path


@pytest.fixture(scope="session")
def web_cohort(tmp_path_factory) -> Path:
    synth = pytest.importorskip("lesiondb.synth")
    root = tmp_path_factory.mktemp("web") / "cohort"
    synth.generate_cohort(root, 3, seed=SEED, workers=1)
    return root


@pytest.fixture(scope="session")
def cohort_identifiers(web_cohort) -> set[str]:
    """Every source identifier of the cohort: patient ids, study and series UIDs, study dates."""
    return source_identifiers(web_cohort)


def new_engine(kind: str, falkor_server):
    """A fresh, empty graph on ``kind`` (falkordb: a new graph on the session's server)."""
    if kind == "neo4j":
        from lesiondb.graph.neo4j_engine import Neo4jEngine

        eng = Neo4jEngine.connect(NEO4J_URI)
        eng._write("MATCH (n) DETACH DELETE n", {})
        return eng
    from falkordb import FalkorDB

    from lesiondb.graph.falkor_engine import FalkorEngine

    db = FalkorDB(unix_socket_path=str(falkor_server.socket_path))
    return FalkorEngine(db, graph="web_" + uuid.uuid4().hex[:12])


def drop(kind: str, eng) -> None:
    if kind == "falkordb":
        try:
            eng.graph.delete()
        except Exception:
            pass
    eng.close()


def build(engine, cohort: Path, ids: Pseudonymizer, *, embed: bool, rank_calibration: bool = True) -> None:
    """ingest → match → mine, each through its library function (as `lesiondb demo` runs them)."""
    from lesiondb.ingest import ingest_dicom
    from lesiondb.mining import StudyVolumes, mine
    from lesiondb.tracking import match_graph

    report = ingest_dicom(engine, cohort, ids, embed=embed)
    assert not report.rejected, report.rejected
    match_graph(engine, workers=1)
    mine(engine, StudyVolumes(cohort, ids), rank_calibration=rank_calibration)


ENGINES = ["falkordb", pytest.param("neo4j", marks=pytest.mark.neo4j)] if NEO4J_URI else ["falkordb"]


@pytest.fixture(scope="session", params=ENGINES)
def site(request, falkor_server, web_cohort) -> Site:
    """The cohort's graph with embeddings (SIMILAR_TO), tracks and proposals, on each engine.
    Read only: tests that decide work on copies of :func:`pristine`."""
    ids = Pseudonymizer.from_text(KEY)
    eng = new_engine(request.param, falkor_server)
    build(eng, web_cohort, ids, embed=True)
    yield Site(eng, ids, web_cohort)
    drop(request.param, eng)


@pytest.fixture(scope="session")
def pristine(falkor_server, web_cohort):
    """The cohort's graph without embeddings on the embedded engine, never changed (read-only
    tests); tests that accept or reject get their own graphs from :func:`fresh_graph`."""
    eng = new_engine("falkordb", falkor_server)
    build(eng, web_cohort, Pseudonymizer.from_text(KEY), embed=False)
    yield eng
    drop("falkordb", eng)


@pytest.fixture
def fresh_graph(falkor_server, web_cohort):
    """Makes new graphs of the cohort (embedded engine, no embeddings, mining without rank
    calibration: a second faster); all dropped after the test. (FalkorDB's GRAPH.COPY would be
    quicker, but it can wait forever on the embedded server's AOF rewrite.)"""
    made = []

    def make():
        eng = new_engine("falkordb", falkor_server)
        made.append(eng)
        build(eng, web_cohort, Pseudonymizer.from_text(KEY), embed=False, rank_calibration=False)
        return eng

    yield make
    for eng in made:
        drop("falkordb", eng)
