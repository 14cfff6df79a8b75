"""lesiondb.embedding.store: embeddings, models, the vector index and SIMILAR_TO edges in the graph."""
from __future__ import annotations

import numpy as np
import pytest

from lesiondb.core import knn
from lesiondb.embedding import store as sim
from lesiondb.errors import InputError
from tests.similarity_factory import DIM, build


def _stored_lists(engine, model_id):
    """{lesionId: [(rank, neighbour, distance, modelId)]} straight from the graph."""
    rows = engine._read("MATCH (a:Lesion)-[r:SIMILAR_TO]->(b:Lesion) RETURN a.lesionId AS a, b.lesionId AS b, "
                        "r.rank AS rank, r.distance AS distance, r.modelId AS modelId", {})
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["a"], []).append((int(r["rank"]), r["b"], float(r["distance"]), r["modelId"]))
    return {a: sorted(v) for a, v in out.items()}


def _count(engine, rel):
    return {r["type"]: int(r["count"]) for r in engine.run("count_relationships")}.get(rel, 0)


def _brute(table: sim.EmbeddingTable, k: int) -> dict[str, list[str]]:
    ref = knn.brute_force(table.vectors, k)
    return {table.ids[i]: [table.ids[j] for j in ref.index[i] if j >= 0] for i in range(len(table))}


def test_every_embedded_lesion_has_k_edges_equal_to_brute_force(engine):
    ids, _, _, _, report = build(engine, n=150, embed=130, k=6)
    assert report.embedded == 130 and report.not_embedded == 20 and report.total_embedded == 130
    table = sim.read_embeddings(engine, "model-a")
    assert list(table.ids) == sorted(ids[:130])
    lists = _stored_lists(engine, "model-a")
    ref = _brute(table, 6)
    assert set(lists) == set(ids[:130])
    for lid, edges in lists.items():
        assert [e[0] for e in edges] == [1, 2, 3, 4, 5, 6]
        assert [e[1] for e in edges] == ref[lid]
        assert all(e[3] == "model-a" for e in edges)
        d = [e[2] for e in edges]
        assert d == sorted(d)
        own = table.vectors[table.positions([lid])[0]].astype(np.float64)
        for _, other, dist, _ in edges:
            v = table.vectors[table.positions([other])[0]].astype(np.float64)
            assert dist == pytest.approx(np.linalg.norm(own - v), abs=1e-5)
    # lesions without images: in the graph, marked, no edge in or out
    rows = engine._read("MATCH (l:Lesion) WHERE l.embedded = false OPTIONAL MATCH (l)-[r:SIMILAR_TO]-() "
                        "RETURN l.lesionId AS id, l.embeddingProblem AS why, count(r) AS edges", {})
    assert sorted(r["id"] for r in rows) == sorted(ids[130:])
    assert all(r["why"] == "no image" and r["edges"] == 0 for r in rows)


def test_re_running_adds_nothing(engine, tmp_path):
    ids, patients, types, vectors, _ = build(engine, n=90, k=5, cache_dir=tmp_path)
    before = _stored_lists(engine, "model-a")
    for cache in (tmp_path, None):  # from the cache, and reading the graph back
        r = sim.embed_arrays(engine, sim.ModelInfo("model-a", "test-encoder", DIM), ids, vectors, patients,
                             k=5, cache_dir=cache)
        assert r.edges_written == 0 and r.lesions_rewired == 0 and r.stale_edges_deleted == 0
        assert r.state_from == ("cache" if cache else "graph")
        assert _stored_lists(engine, "model-a") == before
        assert _count(engine, "SIMILAR_TO") == 90 * 5
    assert len(engine.run("models")) == 1


def test_incremental_ingest_rewires_only_changed_neighbourhoods(engine, tmp_path):
    ids, patients, _, vectors, _ = build(engine, n=200, embed=190, k=5, cache_dir=tmp_path)
    before = _stored_lists(engine, "model-a")
    r = sim.embed_arrays(engine, sim.ModelInfo("model-a", "test-encoder", DIM), ids[190:], vectors[190:],
                         patients[190:], k=5, cache_dir=tmp_path)
    assert r.knn_mode.startswith("incremental")
    assert 10 <= r.lesions_rewired < 200
    after = _stored_lists(engine, "model-a")
    ref = _brute(sim.read_embeddings(engine, "model-a"), 5)
    assert {a: [e[1] for e in v] for a, v in after.items()} == ref
    rewired = {a for a in after if after[a] != before.get(a)}
    assert len(rewired) == r.lesions_rewired
    assert set(ids[190:]) <= rewired
    # a lesion re-embedded with a changed vector moves its neighbours too, without the cache
    moved = vectors[5] * -1.0
    r = sim.embed_arrays(engine, sim.ModelInfo("model-a", "test-encoder", DIM), [ids[5]], moved[None], [patients[5]],
                         k=5)
    assert r.state_from == "graph" and r.lesions_rewired >= 1
    ref = _brute(sim.read_embeddings(engine, "model-a"), 5)
    assert {a: [e[1] for e in v] for a, v in _stored_lists(engine, "model-a").items()} == ref


def test_new_model_re_embeds_and_replaces_every_edge(engine, tmp_path):
    ids, patients, _, _, _ = build(engine, n=100, k=5, cache_dir=tmp_path)
    assert sim.vector_index(engine) == {"dimension": DIM, "state": "ONLINE"}
    rng = np.random.default_rng(5)
    new = rng.normal(size=(80, 8))
    r = sim.embed_arrays(engine, sim.ModelInfo("model-b", "bigger", 8), ids[:80], new, patients[:80], k=4,
                         cache_dir=tmp_path, missing=[(i, "image gone") for i in ids[80:]])
    assert r.embedded == 80 and r.not_embedded == 20 and r.vector_index == "rebuilt"
    lists = _stored_lists(engine, "model-b")
    assert set(lists) == set(ids[:80])
    assert all(len(v) == 4 and all(e[3] == "model-b" for e in v) for v in lists.values())
    assert _count(engine, "SIMILAR_TO") == 80 * 4
    models = {m["modelId"]: m for m in engine.run("models")}
    assert models["model-b"]["active"] and not models["model-a"]["active"]
    assert models["model-b"]["embeddedLesions"] == 80 and models["model-b"]["dim"] == 8
    assert sim.vector_index(engine)["dimension"] == 8
    status = {(r["modelId"], r["embedded"]): int(r["lesions"]) for r in engine.run("embedding_status")}
    assert status == {("model-b", True): 80, (None, False): 20}
    ref = _brute(sim.read_embeddings(engine, "model-b"), 4)
    assert {a: [e[1] for e in v] for a, v in lists.items()} == ref


def test_a_stale_cache_is_not_trusted(engine, tmp_path):
    ids, patients, _, vectors, _ = build(engine, n=80, embed=70, k=5, cache_dir=tmp_path)
    # another writer (no cache) changes the graph: the cache's version token no longer matches
    sim.embed_arrays(engine, sim.ModelInfo("model-a", "test-encoder", DIM), ids[70:75], vectors[70:75],
                     patients[70:75], k=5)
    r = sim.embed_arrays(engine, sim.ModelInfo("model-a", "test-encoder", DIM), ids[75:], vectors[75:],
                         patients[75:], k=5, cache_dir=tmp_path)
    assert r.state_from == "graph"
    ref = _brute(sim.read_embeddings(engine, "model-a"), 5)
    assert {a: [e[1] for e in v] for a, v in _stored_lists(engine, "model-a").items()} == ref
    table, lists, source = sim.load_state(engine, "model-a", 5, tmp_path)
    assert source == "cache" and len(table) == 80 and len(lists.rows) == 80


def test_a_larger_k_rewrites_every_list(engine):
    ids, patients, _, vectors, _ = build(engine, n=60, k=3)
    r = sim.EmbeddingRun(engine, sim.ModelInfo("model-a", "test-encoder", DIM), k=6)
    r.begin(expected=0)
    rep = r.finish()
    assert rep.lesions_rewired == 60 and _count(engine, "SIMILAR_TO") == 360
    r = sim.EmbeddingRun(engine, sim.ModelInfo("model-a", "test-encoder", DIM), k=2)
    r.begin(expected=0)
    r.finish()
    assert _count(engine, "SIMILAR_TO") == 120


def test_embeddings_are_stored_as_written(engine):
    ids, _, _, vectors, _ = build(engine, n=30, k=3)
    table = sim.read_embeddings(engine, "model-a")
    _, stored = sim.encode_vectors(vectors)
    order = np.argsort(ids)
    assert np.array_equal(table.vectors, stored[order])
    assert np.allclose(np.linalg.norm(table.vectors, axis=1), 1.0, atol=1e-6)


def test_bad_embeddings_are_rejected(engine):
    build(engine, n=10, k=3)
    run = sim.EmbeddingRun(engine, sim.ModelInfo("model-a", "test-encoder", DIM), k=3)
    with pytest.raises(InputError, match="zero or not finite"):
        run.add(["L-00000"], np.zeros((1, DIM)))
    with pytest.raises(InputError, match="do not fit model"):
        run.add(["L-00000"], np.ones((1, DIM + 1)))
    with pytest.raises(InputError, match="k must be"):
        sim.EmbeddingRun(engine, sim.ModelInfo("model-a", "test-encoder", DIM), k=0)
