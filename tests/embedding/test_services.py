"""lesiondb.embedding.services and the client methods: similar lesions, type prediction, clustering."""
from __future__ import annotations

import numpy as np
import pytest

from lesiondb.client import Client
from lesiondb.core import knn
from lesiondb.core.records import LESION_TYPES
from lesiondb.embedding import services
from lesiondb.embedding import store as sim
from lesiondb.errors import InputError
from tests.similarity_factory import build


@pytest.fixture
def graph(engine, tmp_path):
    ids, patients, types, vectors, _ = build(engine, n=160, embed=150, k=5, n_patients=20)
    table = sim.read_embeddings(engine, "model-a")
    return engine, ids, patients, types, table


def _reference(table, patients_by_id, types_by_id, query_row, k, type_name=None, exclude_patient=None):
    """Brute force: (distance, lesionId) order over the stored vectors, filters applied first."""
    q = table.vectors[query_row].astype(np.float64)
    cand = []
    for j, lid in enumerate(table.ids):
        if j == query_row:
            continue
        if type_name is not None and types_by_id.get(lid) != type_name:
            continue
        if exclude_patient is not None and patients_by_id[lid] == exclude_patient:
            continue
        cand.append((float(np.linalg.norm(q - table.vectors[j].astype(np.float64))), lid))
    return [lid for _, lid in sorted(cand)[:k]]


def _labels(ids, types):
    return {lid: LESION_TYPES[int(t)] for i, (lid, t) in enumerate(zip(ids, types, strict=True)) if i % 3}


def test_similar_reads_the_stored_edges(graph):
    engine, ids, patients, types, table = graph
    rows = services.similar(engine, ids[7], k=5)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5] and {r["source"] for r in rows} == {"edges"}
    ref = knn.brute_force(table.vectors, 5)
    row = table.positions([ids[7]])[0]
    assert [r["lesionId"] for r in rows] == [table.ids[j] for j in ref.index[row]]
    assert np.allclose([r["distance"] for r in rows], ref.distance[row], atol=1e-5)
    pid = dict(zip(ids, patients, strict=True))
    assert all(r["patientId"] == pid[r["lesionId"]] for r in rows)
    assert all(r["studyId"].startswith("S-" + r["patientId"]) for r in rows)


@pytest.mark.parametrize("type_name,exclude", [("liver", False), (None, True), (4, True), ("lung", True)])
def test_filtered_similar_is_exact(graph, type_name, exclude):
    engine, ids, patients, types, table = graph
    pid = dict(zip(ids, patients, strict=True))
    labels = _labels(ids, types)
    tname = services.type_name_of(type_name)
    for lid in (ids[1], ids[30], ids[100]):
        rows = services.similar(engine, lid, k=6, type_name=type_name, exclude_same_patient=exclude)
        ref = _reference(table, pid, labels, table.positions([lid])[0], 6, tname, pid[lid] if exclude else None)
        assert [r["lesionId"] for r in rows] == ref
        assert all(r["typeName"] == tname for r in rows if tname)
        assert all(r["patientId"] != pid[lid] for r in rows if exclude)


def test_a_k_above_the_stored_edges_scans(graph):
    engine, ids, patients, types, table = graph
    rows = services.similar(engine, ids[3], k=12)
    assert len(rows) == 12 and rows[0]["source"] == "scan"
    assert [r["lesionId"] for r in rows] == _reference(table, dict(zip(ids, patients, strict=True)), {}, table.positions([ids[3]])[0], 12)


def test_similar_explains_what_is_wrong(graph):
    engine, ids, *_ = graph
    with pytest.raises(InputError, match="no lesion 'L-nope'"):
        services.similar(engine, "L-nope")
    with pytest.raises(InputError, match="no image.*lesiondb embed"):
        services.similar(engine, ids[155])  # one of the lesions without an image
    with pytest.raises(InputError, match="unknown lesion type 'spleen'"):
        services.similar(engine, ids[1], type_name="spleen")
    with pytest.raises(InputError, match="k must be at least 1"):
        services.similar(engine, ids[1], k=0)


def test_similar_to_vector_exact_and_through_the_index(graph):
    engine, ids, patients, types, table = graph
    q = table.vectors[10]
    exact = services.similar_to_vector(engine, q, k=8, exact=True)
    ref = knn.search(table.vectors, q[None], 8)
    assert [r["lesionId"] for r in exact] == [table.ids[j] for j in ref.index[0]]
    assert exact[0]["lesionId"] == table.ids[10] and exact[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert np.allclose([r["distance"] for r in exact], ref.distance[0], atol=1e-5)
    fast = services.similar_to_vector(engine, q, k=8)
    assert fast[0]["source"] == "index" and fast[0]["lesionId"] == table.ids[10]
    assert len({r["lesionId"] for r in fast} & {r["lesionId"] for r in exact}) >= 6
    liver = services.similar_to_vector(engine, q, k=4, type_name="liver", exclude_patient_id=patients[0])
    assert len(liver) == 4 and all(r["typeName"] == "liver" and r["patientId"] != patients[0] for r in liver)
    with pytest.raises(InputError, match="dimensions"):
        services.similar_to_vector(engine, np.ones(3))


def test_distances_through_the_vector_index_are_the_embeddings_own(graph):
    engine, ids, patients, types, table = graph
    for row in (10, 77, 149):
        q = table.vectors[row]
        fast = services.similar_to_vector(engine, q, k=8)
        assert {r["source"] for r in fast} == {"index"}
        ref = knn.search(table.vectors, q[None], len(table.ids))
        true = {table.ids[j]: d for j, d in zip(ref.index[0], ref.distance[0], strict=True)}
        # exact, whatever the index's own score (Neo4j's may be quantized), and in their order
        got = [r["distance"] for r in fast]
        assert np.allclose(got, [true[r["lesionId"]] for r in fast], atol=1e-3) and got == sorted(got)
        # 150 vectors: the approximate search misses at most one of the k nearest
        assert len({r["lesionId"] for r in fast} & {table.ids[j] for j in ref.index[0][:8]}) >= 7


def test_vote_counts_then_distance_then_code():
    assert services.vote([4, 4, 5], [0.1, 0.2, 0.05]) == (4, pytest.approx(2 / 3), 3)
    assert services.vote([4, 5], [0.3, 0.1])[0] == 5  # tie: nearer voters win
    assert services.vote([5, 4], [0.2, 0.2])[0] == 4  # full tie: smaller code
    assert services.vote([], []) == (-1, 0.0, 0)


@pytest.mark.parametrize("method", ["embeddings", "edges"])
def test_predict_types_writes_beside_the_label(graph, tmp_path, method):
    engine, ids, patients, types, table = graph
    out = services.predict_types(engine, k=5, method=method, cache_dir=tmp_path)
    embedded = set(table.ids)
    unlabelled = {lid for i, lid in enumerate(ids) if i % 3 == 0 and lid in embedded}
    got = {p["lesionId"]: p for p in out["predictions"]}
    assert set(got) <= unlabelled and len(got) >= 0.9 * len(unlabelled)
    assert out["written"] == len(got)
    truth = dict(zip(ids, types, strict=True))
    acc = np.mean([truth[lid] == p["typeCode"] for lid, p in got.items()])
    assert acc > 0.8  # the factory clusters embeddings by type
    assert all(0 < p["confidence"] <= 1 and p["typeName"] == LESION_TYPES[p["typeCode"]] for p in got.values())
    rows = {r["lesionId"]: r["lesion"] for r in engine.run("lesions", patientId=None, studyId=None, typeName=None,
                                                               limit=10**6)}
    for lid, props in rows.items():
        i = ids.index(lid)
        if i % 3:  # labelled: label untouched, no prediction
            assert props["typeCode"] == int(types[i]) and "predictedTypeCode" not in props
        elif lid in got:
            assert props["typeCode"] == -1 and props["predictedTypeCode"] == got[lid]["typeCode"]
            assert props["predictedTypeConfidence"] == pytest.approx(got[lid]["confidence"])
    if method == "embeddings":
        assert out["heldOutAccuracy"]["lesions"] > 50 and out["heldOutAccuracy"]["accuracy"] > 0.8


def test_predictions_of_lesions_labelled_since_are_cleared(graph, tmp_path):
    engine, ids, *_ = graph
    services.predict_types(engine, k=5, cache_dir=tmp_path)
    engine._write("MATCH (l:Lesion {lesionId: $id}) SET l.labelled = true, l.typeCode = 2, l.typeName = 'abdomen'",
                  {"id": ids[0]})
    out = services.predict_types(engine, k=5, cache_dir=tmp_path)
    assert out["cleared"] == 1
    props = engine.run("lesions", patientId=None, studyId=None, typeName="abdomen", limit=10**6)
    mine = next(r["lesion"] for r in props if r["lesionId"] == ids[0])
    assert "predictedTypeCode" not in mine and mine["typeCode"] == 2


def test_cluster_writes_one_cluster_per_lesion_and_is_deterministic(graph):
    engine, ids, patients, types, table = graph
    out = services.cluster(engine, seed=3, method="networkx")  # auto is GDS on Neo4j with the plug-in
    assert out["lesions"] == 150 and out["assigned"] == 150
    assert 2 <= out["clusters"] <= 40 and out["modularity"] > 0.3
    members = engine._read("MATCH (l:Lesion)-[:IN_CLUSTER]->(c:Cluster) RETURN l.lesionId AS l, c.clusterId AS c", {})
    assert sorted(m["l"] for m in members) == sorted(table.ids)
    stored = services.clusters(engine)
    assert sum(c["size"] for c in stored) == 150 and len(stored) == out["clusters"]
    labels = _labels(ids, types)
    by_cluster: dict[str, list[str]] = {}
    for m in members:
        by_cluster.setdefault(m["c"], []).append(m["l"])
    for c in stored:
        lab = [labels[x] for x in by_cluster[c["clusterId"]] if x in labels]
        assert c["size"] == len(by_cluster[c["clusterId"]]) and c["labelled"] == len(lab)
        if lab:
            top = max(lab.count(t) for t in set(lab))
            assert lab.count(c["dominantType"]) == top
            assert c["dominantTypeShare"] == pytest.approx(top / len(lab), abs=1e-4)
    again = services.cluster(engine, seed=3, method="networkx")
    members2 = engine._read("MATCH (l:Lesion)-[:IN_CLUSTER]->(c:Cluster) RETURN l.lesionId AS l, c.clusterId AS c", {})
    assert sorted((m["l"], m["c"]) for m in members2) == sorted((m["l"], m["c"]) for m in members)
    assert again["clusters"] == out["clusters"] and len(services.clusters(engine)) == out["clusters"]


def test_client_methods_return_dataframes(graph, tmp_path):
    engine, ids, *_ = graph
    db = Client(engine, data_dir=tmp_path, owns_engine=False)
    df = db.similar(ids[2], k=4, type="liver")
    assert list(df.columns[:4]) == ["rank", "lesionId", "distance", "typeName"] and len(df) == 4
    assert list(df["rank"]) == [1, 2, 3, 4]
    assert (df.typeName == "liver").all()
    preds = db.predict_types(k=5)
    assert len(preds) == preds.attrs["predicted"] and set(preds.columns) >= {"lesionId", "typeName", "confidence"}
    cl = db.clusters(compute=True, seed=1)
    assert cl["size"].sum() == 150 and cl.attrs["clusters"] == len(cl)
    assert len(db.clusters()) == len(cl)
    members = db.cluster_members(cl.clusterId[0])
    assert len(members) == cl["size"][0] and set(members.columns) >= {"lesionId", "patientId"}
    v = db.similar_to_vector(sim.read_embeddings(engine, "model-a").vectors[0], k=3, exact=True)
    assert len(v) == 3


# -- clustering on Neo4j's Graph Data Science ----------------------------------------------------
class _GdsEmulator:
    """An engine seen as Neo4j with GDS: ``gds_*`` queries are answered from the stored edges
    (Louvain by networkx; lesions without edges are not projected, as in GDS); everything else
    runs on the real engine. Stands in for the plug-in where there is no server with it, and
    produces the failure a server does not (Louvain running out of heap)."""

    dialect = "neo4j"

    def __init__(self, inner, fail_louvain=False):
        self.inner, self.fail_louvain = inner, fail_louvain
        self.graphs: set[str] = set()
        self.dropped: list[str] = []

    def run(self, name, **params):
        if name == "gds_available":
            return [{"procedures": 3}]
        if name == "gds_project_similarity":
            self.graphs.add(params["graphName"])
            edges = self.inner.run("similarity_edges", modelId=params["modelId"])
            pairs = {tuple(sorted((e["source"], e["target"]))) for e in edges}
            return [{"graphName": params["graphName"], "nodeCount": len({x for p in pairs for x in p}),
                     "pairs": len(pairs)}]
        if name == "gds_louvain":
            assert params["graphName"] in self.graphs
            if self.fail_louvain:
                raise RuntimeError("out of heap")
            import networkx as nx
            g = nx.Graph((e["source"], e["target"]) for e in self.inner.run("similarity_edges", modelId="model-a"))
            comms = nx.community.louvain_communities(g, seed=0)
            return [{"lesionId": m, "communityId": 1000 + i} for i, c in enumerate(comms) for m in c]
        if name == "gds_drop_graph":
            self.dropped.append(params["graphName"])
            self.graphs.discard(params["graphName"])
            return [{"graphName": params["graphName"]}]
        return self.inner.run(name, **params)

    def execute(self, name, **params):
        return self.inner.execute(name, **params)

    def write(self, name, rows, **kw):
        return self.inner.write(name, rows, **kw)


def test_cluster_on_gds_writes_every_lesion_and_drops_the_projection(graph):
    engine, ids, patients, types, table = graph
    left_out = min(table.ids)  # embedded, but without edges: GDS never sees it
    engine._write("MATCH (:Lesion {lesionId: $id})-[r:SIMILAR_TO]-() DELETE r", {"id": left_out})
    real = engine.dialect == "neo4j" and services.gds_available(engine)
    gds = engine if real else _GdsEmulator(engine)  # the plug-in itself wherever a server has it
    out = services.cluster(gds)  # auto: Neo4j with GDS, resolution 1
    assert out["method"] == "louvain-gds" and out["seed"] is None and out["modularity"] is None
    assert out["lesions"] == 150 and out["assigned"] == 150 and out["edges"] > 150
    if real:  # the in-memory graph is freed
        assert engine._read("CALL gds.graph.list() YIELD graphName RETURN graphName", {}) == []
    else:
        assert gds.dropped and not gds.graphs
    stored = services.clusters(engine)
    assert sum(c["size"] for c in stored) == 150 and {c["method"] for c in stored} == {"louvain-gds"}
    # the lesion GDS did not return is a cluster of its own
    members = engine._read("MATCH (l:Lesion {lesionId: $id})-[:IN_CLUSTER]->(c:Cluster) RETURN c.size AS size",
                           {"id": left_out})
    assert members == [{"size": 1}]
    # resolution != 1 is not something GDS Louvain can do: auto falls back, gds refuses
    assert services.cluster(gds, resolution=1.5, write=False)["method"] == "louvain-networkx"
    with pytest.raises(InputError, match="resolution"):
        services.cluster(gds, resolution=1.5, method="gds")


def test_gds_projection_is_dropped_when_louvain_fails(graph):
    engine, *_ = graph
    gds = _GdsEmulator(engine, fail_louvain=True)
    with pytest.raises(RuntimeError, match="out of heap"):
        services.cluster(gds, method="gds")
    assert len(gds.dropped) == 1 and not gds.graphs


def test_cluster_method_gds_needs_neo4j_with_the_plugin(graph):
    engine, *_ = graph
    with pytest.raises(InputError, match="unknown clustering method"):
        services.cluster(engine, method="leiden")
    if engine.dialect == "neo4j" and services.gds_available(engine):
        # A server with the plug-in: only a resolution other than 1 keeps Louvain off it.
        assert services.cluster(engine, resolution=1.5, write=False)["method"] == "louvain-networkx"
        with pytest.raises(InputError, match="resolution"):
            services.cluster(engine, resolution=1.5, method="gds")
        return
    assert not services.gds_available(engine)
    with pytest.raises(InputError, match="Graph Data Science"):
        services.cluster(engine, method="gds")
    assert services.cluster(engine, method="auto", write=False)["method"] == "louvain-networkx"


@pytest.fixture
def neo4j_graph(neo4j):
    """The ``graph`` fixture's graph on the Neo4j tier's server only."""
    from tests.conftest import _neo4j_engine

    engine = _neo4j_engine()
    build(engine, n=160, embed=150, k=5, n_patients=20)
    yield engine
    engine.close()


@pytest.mark.neo4j
def test_gds_cluster_on_a_real_neo4j_server(neo4j_graph):
    engine = neo4j_graph
    if not services.gds_available(engine):
        pytest.skip("the Neo4j tier's server has no Graph Data Science plug-in (tools/neo4j-server installs it)")
    out = services.cluster(engine)  # auto: GDS on a server with the plug-in
    assert out["method"] == "louvain-gds" and out["assigned"] == 150 and out["clusters"] >= 2
    again = services.cluster(engine, method="gds")
    assert again["clusters"] == out["clusters"]  # one thread: the same graph gives the same communities
    nx_out = services.cluster(engine, method="networkx", seed=0, write=False)
    assert abs(out["typePurity"] - nx_out["typePurity"]) < 0.15


# -- the vector index: as wide a search on both engines, and whole after property writes ----------
def _index_misses(engine, table, k=5):
    """Lesions whose k nearest through the vector index differ from the exact scan's."""
    misses = []
    for i in range(len(table)):
        fast = services.similar_to_vector(engine, table.vectors[i], k=k)
        exact = services.similar_to_vector(engine, table.vectors[i], k=k, exact=True)
        if fast[0]["source"] != "index" or [r["lesionId"] for r in fast] != [r["lesionId"] for r in exact]:
            misses.append(str(table.ids[i]))
    return misses


def test_the_vector_index_finds_the_exact_nearest_at_small_k(engine):
    """Neo4j's queryNodes searches with k as its candidate list: at k = 5 it missed true neighbours
    of 6 of these 400 lesions (FalkorDB's index searches 64 wide: none); both now search as wide."""
    build(engine, n=400, k=5)
    table = sim.read_embeddings(engine, "model-a")
    assert _index_misses(engine, table) == []


def test_a_reingest_leaves_the_vector_index_whole(engine):
    """Re-writing unchanged lesions (a second ingest of the same data) must not touch them: on
    FalkorDB any SET on an indexed lesion drops it from the HNSW search."""
    from tests.similarity_factory import lesion_rows

    build(engine, n=160, k=5)
    table = sim.read_embeddings(engine, "model-a")
    rows, _, _ = lesion_rows(160)
    res = engine.write("upsert_lesions", rows)
    assert sum(int(r["unchanged"]) for r in res) == 160
    assert _index_misses(engine, table) == []


def test_type_predictions_leave_the_vector_index_whole(engine, tmp_path):
    build(engine, n=160, k=5)
    table = sim.read_embeddings(engine, "model-a")
    out = services.predict_types(engine, k=5, cache_dir=tmp_path)
    assert out.written > 40
    assert _index_misses(engine, table) == []
