"""Engine parity (the Neo4j tier): the same pipeline on the embedded FalkorDB and on Neo4j gives the
same graph, the same answers and the same results.

A 4-patient synthetic CT cohort goes through ingest (embedding with a tiny encoder) → ingest again
→ match → mine → reviews → match again → classify → cluster on each engine, with the same
pseudonym key (:mod:`tests.pipeline_factory`). Then: every use case's result, the node and
relationship counts, the tracks, SAME_LESION and POSSIBLE_SAME_LESION edges, the proposals, the
SIMILAR_TO lists, every node's and relationship's properties (types included: an integer stays an
integer), similar lesions by id and by vector (through the index and by scan), and every read
query's rows. And the real DeepLesion rows give the same graph on both: 10,857 lesions, 1,492
patients, 3,589 studies.
"""
from __future__ import annotations

import json
import math
import re
import uuid

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.embedding import services
from lesiondb.graph import graph_stats, queries
from lesiondb.graph.neo4j_import import dump_graph
from lesiondb.mining import review as proposal_review
from lesiondb.tracking import review as possible_review
from tests.conftest import NEO4J_URI
from tests.pipeline_factory import CLOCK, run_pipeline

pytestmark = pytest.mark.neo4j

KEY = "5eed" * 16  # one pseudonym key for both engines: the same ids
ENGINES = ("falkordb", "neo4j")


# -- comparing ----------------------------------------------------------------------------------------
def differences(a, b, path: str = "", rel: float = 1e-9, abs_: float = 1e-6, skip=frozenset()) -> list[str]:
    """Where ``a`` and ``b`` differ: types exactly (bool, int, float, str, list, dict), floats within
    ``rel``/``abs_`` (FalkorDB returns doubles to 15 digits, and embeddings as float32); map keys
    in ``skip`` are left out."""
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} {a!r:.60} vs {type(b).__name__} {b!r:.60}"]
    if isinstance(a, float):
        return [] if math.isclose(a, b, rel_tol=rel, abs_tol=abs_) else [f"{path}: {a!r} vs {b!r}"]
    if isinstance(a, dict):
        out = [f"{path}.{k}: only on {'falkordb' if k in a else 'neo4j'}" for k in sorted(set(a) ^ set(b))
               if k not in skip]
        for k in sorted((set(a) & set(b)) - skip):
            out += differences(a[k], b[k], f"{path}.{k}", rel, abs_, skip)
        return out
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]", rel, abs_, skip)]
    return [] if a == b else [f"{path}: {a!r:.80} vs {b!r:.80}"]


def _without_clock(props: dict) -> dict:
    return {k: v for k, v in props.items() if k not in CLOCK}


def _canon(row) -> str:
    return json.dumps(row, sort_keys=True, default=str)


# -- the two graphs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parity_cohort(tmp_path_factory):
    from lesiondb.synth.generate import generate_cohort

    root = tmp_path_factory.mktemp("parity") / "cohort"
    generate_cohort(root, 4, seed=5, images=True, workers=1)
    return root


@pytest.fixture(scope="module")
def built(falkor_server, parity_cohort, tiny_model):
    """{engine name: (engine, pipeline results)}, the same cohort and key on both."""
    if not NEO4J_URI:
        pytest.skip("Neo4j tier: set LESIONDB_TEST_NEO4J_URI (and LESIONDB_PASSWORD) to run it")
    from falkordb import FalkorDB

    from lesiondb.graph.falkor_engine import FalkorEngine
    from tests.conftest import _neo4j_engine

    falkor = FalkorEngine(FalkorDB(unix_socket_path=str(falkor_server.socket_path)), graph="parity_" + uuid.uuid4().hex[:8])
    neo = _neo4j_engine()
    from lesiondb.embedding import store as sim

    sim.drop_vector_index(neo)  # a fresh graph: no index left by an earlier test
    out = {}
    for name, eng in (("falkordb", falkor), ("neo4j", neo)):
        out[name] = (eng, run_pipeline(eng, parity_cohort, tiny_model, Pseudonymizer.from_text(KEY)))
    yield out
    falkor.graph.delete()
    falkor.close()
    neo.close()


def _both(built, fn):
    return fn(built["falkordb"][0]), fn(built["neo4j"][0])


def test_the_pipeline_exercises_every_step(built, neo4j):
    results = built["falkordb"][1]
    assert {"accept proposal", "reject proposal", "accept possible"} <= set(results), \
        "the cohort should give proposals and POSSIBLE edges to review (pick another seed)"
    assert results["ingest"]["embedded"] > 0 and results["ingest again"]["written"] == 0
    assert results["match"]["tracks"] > 0 and results["mine"]["created"] > 1


def test_every_use_case_reports_the_same(built, neo4j):
    assert differences(built["falkordb"][1], built["neo4j"][1]) == []


def test_the_same_node_and_relationship_counts(built, neo4j):
    a, b = _both(built, graph_stats)
    assert a == b
    assert {"Patient", "Study", "Lesion", "Track", "Proposal", "Cluster", "Model"} <= set(a["nodes"])
    assert {"HAS_STUDY", "HAS_LESION", "SIMILAR_TO", "SAME_LESION", "POSSIBLE_SAME_LESION", "IN_TRACK",
            "IN_STUDY", "PROPOSED_FOR", "IN_CLUSTER"} <= set(a["relationships"])


def test_the_same_tracks(built, neo4j):
    def tracks(eng):
        out = {}
        for p in eng.run("patients"):
            for r in eng.run("patient_tracks", patientId=p["patientId"]):
                t = out.setdefault(r["trackingUid"], {"status": r["status"], "nVisits": r["nVisits"], "members": []})
                t["members"].append((r["lesionId"], r["studyIndex"], r["response"]))
        return out

    a, b = _both(built, tracks)
    assert len(a) > 3
    assert differences(a, b) == []


def test_the_same_same_lesion_and_possible_edges(built, neo4j):
    def edges(eng):
        pids = [p["patientId"] for p in eng.run("patients")]
        same = sorted(eng.run("match_patient_edges", patientIds=pids), key=_canon)
        possible = possible_review.list_possible(eng)
        return same, possible

    (same_a, pos_a), (same_b, pos_b) = _both(built, edges)
    assert same_a and pos_a and {p["status"] for p in pos_a} >= {"accepted"}
    assert differences(same_a, same_b) == []
    assert differences(pos_a, pos_b) == []  # ordered by patient, probability, reviewId


def test_the_same_proposals(built, neo4j):
    a, b = _both(built, lambda eng: [_without_clock(p) for p in proposal_review.list_proposals(eng)])
    assert len(a) > 1 and {p["status"] for p in a} >= {"accepted", "rejected"}
    assert [(p["proposalId"], p["sliceIndex"], p["status"]) for p in a] == \
           [(p["proposalId"], p["sliceIndex"], p["status"]) for p in b]
    assert differences(a, b, abs_=1e-6) == []  # scores and every other property


def test_the_same_similar_to_lists(built, neo4j):
    def lists(eng):
        mid = services.active_model(eng)["modelId"]
        return {r["lesionId"]: sorted(zip(r["ranks"], r["neighbours"], r["distances"], strict=True))
                for r in eng.run("similarity_lists", modelId=mid)}

    a, b = _both(built, lists)
    assert len(a) > 8 and all(len(v) == 5 for v in a.values())
    assert differences(a, b) == []


def test_every_node_and_relationship_is_the_same(built, neo4j):
    (nodes_a, rels_a), (nodes_b, rels_b) = _both(built, dump_graph)
    assert set(nodes_a) == set(nodes_b)
    diffs = []
    for key in sorted(nodes_a):
        diffs += differences(_without_clock(nodes_a[key]), _without_clock(nodes_b[key]), f"{key}")
    assert diffs == []
    assert [r[:5] for r in rels_a] == [r[:5] for r in rels_b]
    assert differences([_without_clock(r[5]) for r in rels_a], [_without_clock(r[5]) for r in rels_b]) == []


def test_the_same_similar_lesions_by_id_and_by_vector(built, neo4j):
    def answers(eng):
        mid = services.active_model(eng)["modelId"]
        out = {}
        for r in eng.run("embeddings", modelId=mid):
            lid, vec = r["lesionId"], r["embedding"]
            out[lid] = {"edges": services.similar(eng, lid, k=4),
                        "scan": services.similar(eng, lid, k=4, exclude_same_patient=True),
                        "index": services.similar_to_vector(eng, vec, k=4),
                        "exact": services.similar_to_vector(eng, vec, k=4, exact=True)}
        return out

    a, b = _both(built, answers)
    assert len(a) > 8
    assert {r["source"] for v in a.values() for r in v["index"]} == {"index"}
    assert differences(a, b, abs_=1e-5) == []


def _six(field: str) -> str:
    try:
        return f"{float(field):.6f}" if "." in field or "E" in field else field
    except ValueError:
        return field


def _normalised(name: str, rows):
    """Rows of a query that does not order them (or collects in any order), in one order."""
    if name == "match_patient_lesions":  # numbers as toString() writes them: 6 decimals on FalkorDB
        rows = [{**r, "row": "|".join(_six(f) for f in r["row"].split("|"))} for r in rows]
    if isinstance(rows, list) and rows and "ranks" in rows[0]:  # similarity_lists: parallel lists
        rows = [{**r, "neighbours": None, "distances": None, "ranks": None,
                 "list": sorted(zip(r["ranks"], r["neighbours"], r["distances"], strict=True))} for r in rows]
    return sorted(rows, key=_canon)


def test_every_read_query_gives_the_same_rows(built, neo4j):
    """Each read-only query of the catalogue on both engines, with every patient or lesion id as
    its parameter (nulls elsewhere): the same rows; in the same order where the query orders
    them. GDS queries are Neo4j's alone."""
    falkor, neo = built["falkordb"][0], built["neo4j"][0]
    mid = services.active_model(falkor)["modelId"]
    pids = [p["patientId"] for p in falkor.run("patients")]
    lids = [r["lesionId"] for r in falkor.run("lesions", patientId=None, studyId=None, typeName=None, limit=10_000)]
    vec = falkor.run("embeddings", modelId=mid)[0]["embedding"]
    diffs, ran = [], []
    for name in sorted(set(queries.names("falkordb")) & set(queries.names("neo4j"))):
        q = queries.load(name, "neo4j")
        if q.idempotent != "read-only" or name in ("vector_index_info", "export_graph"):
            continue
        base = {p: None for p in q.params}
        base.update({k: v for k, v in {"limit": 10_000, "skip": 0, "k": 4, "excludeSamePatient": False, "modelId": mid,
                                         "patientIds": pids, "vector": vec}.items() if k in q.params})
        if "lesionId" in q.params:
            calls = [{**base, "lesionId": lid} for lid in lids]
        elif "patientId" in q.params:
            calls = [{**base, "patientId": pid} for pid in [*pids, None]]
        else:
            calls = [base]
        ordered = re.search(r"^ORDER BY", q.text, re.M) is not None and "collect(" not in q.text
        for params in calls:
            a, b = falkor.run(name, **params), neo.run(name, **params)
            if not ordered:
                a, b = _normalised(name, a), _normalised(name, b)
            diffs += differences(a, b, f"{name}({', '.join(k for k, v in params.items() if v is not None)})",
                                 abs_=1e-5, skip=CLOCK | {"claimedAt"})
        ran.append(name)
    assert len(ran) > 25
    assert diffs == []


# -- the real DeepLesion rows ---------------------------------------------------------------------------
def test_the_deeplesion_rows_give_the_same_graph_on_neo4j(dl_info, neo4j, falkor_engine):
    from lesiondb.ingest import ingest_deeplesion
    from tests.conftest import _neo4j_engine

    ids = Pseudonymizer.from_text(KEY)
    neo = _neo4j_engine()
    try:
        reports = {}
        for name, eng in (("falkordb", falkor_engine), ("neo4j", neo)):
            reports[name] = ingest_deeplesion(eng, str(dl_info), ids).to_json()
        stats = graph_stats(neo)
        assert stats["nodes"] == {"Lesion": 10_857, "Patient": 1_492, "Study": 3_589}
        assert stats["relationships"] == {"HAS_LESION": 10_857, "HAS_STUDY": 3_589}
        assert graph_stats(falkor_engine) == stats
        for r in reports.values():
            r.pop("seconds", None)
            r.pop("timings", None)
        assert differences(reports["falkordb"], reports["neo4j"]) == []
        (nodes_a, rels_a), (nodes_b, rels_b) = dump_graph(falkor_engine), dump_graph(neo)
        assert set(nodes_a) == set(nodes_b) and rels_a == rels_b
        diffs = [d for key in nodes_a for d in differences(_without_clock(nodes_a[key]),
                                                              _without_clock(nodes_b[key]), str(key))]
        assert diffs[:20] == []
    finally:
        neo._write("MATCH (n) DETACH DELETE n", {})
        neo.close()
