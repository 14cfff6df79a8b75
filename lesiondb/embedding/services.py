"""Services on the lesion graph: similar lesions, type prediction, clustering.

Each service is a named Cypher query (or a few) plus the Python around it; the client methods
(:class:`lesiondb.client.Client`) and the CLI commands (``lesiondb similar``, ``classify``,
``cluster``) are thin layers over these functions.

- :func:`similar` reads a lesion's precomputed SIMILAR_TO edges (one indexed lookup); when
  filters or a larger k leave fewer than k, it falls back to an exact scan of the embeddings.
- :func:`similar_to_vector` queries by a vector (a region embedded on the fly) through the
  engine's vector index, or exactly by a scan.
- :func:`predict_types`: k-nearest-neighbour vote among labelled lesions, with the share of
  votes as confidence, written beside the label (``predictedType*``), never over it.
- :func:`cluster`: Louvain communities (networkx, seeded) of the SIMILAR_TO graph, written as
  ``(:Cluster)`` nodes with their size and dominant type.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import knn
from ..core.records import LESION_TYPES, TYPE_CODES
from ..core.results import Result, json_field
from ..errors import InputError
from ..graph.engine import Engine
from . import store as sim

log = logging.getLogger(__name__)

#: How many index hits to fetch per wanted row when filters apply after the vector index.
OVERFETCH = 4
PREDICT_BATCH = 5000


def type_name_of(value: str | int | None) -> str | None:
    """A coarse lesion type given as name (``liver``) or code (``4``) → its name; None passes."""
    if value is None or value == "":
        return None
    s = str(value).strip().lower()
    if s.lstrip("-").isdigit():
        code = int(s)
        if code in LESION_TYPES:
            return LESION_TYPES[code]
    elif s in TYPE_CODES:
        return s
    valid = ", ".join(f"{c} {n}" for c, n in LESION_TYPES.items())
    raise InputError(f"unknown lesion type {value!r}; use a name or code: {valid}")


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise InputError(f"k must be at least 1, got {k}")
    return int(k)


# -- similar lesions ----------------------------------------------------------------------------
def similar(engine: Engine, lesion_id: str, k: int = sim.DEFAULT_K, type_name: str | int | None = None,
            exclude_same_patient: bool = False) -> list[dict[str, Any]]:
    """The ``k`` lesions most similar to ``lesion_id``, nearest first.

    Each row: lesionId, distance, rank (1…), typeName, typeCode, predictedTypeName, patientId,
    studyId, longDiameterMm, locationX/Y/Z, source (``edges`` or ``scan``).
    """
    k = _check_k(k)
    tname = type_name_of(type_name)
    rows = engine.run("similar_lesions", lesionId=lesion_id, k=k, typeName=tname,
                      excludeSamePatient=bool(exclude_same_patient))
    if len(rows) >= k:
        return _ranked(rows, "edges")
    info = engine.run("lesion_embedding", lesionId=lesion_id)
    if not info:
        raise InputError(f"no lesion {lesion_id!r} in the graph (list ids with `lesiondb query lesions`)")
    me = info[0]
    if not me.get("embedded"):
        why = me.get("embeddingProblem") or "it was not embedded yet"
        raise InputError(f"lesion {lesion_id} has no embedding ({why}); embed it with "
                         "`lesiondb embed --images DIR` or `lesiondb embed --cohort DIR`")
    if tname is None and not exclude_same_patient and int(me.get("edges") or 0) >= k:
        return _ranked(rows, "edges")
    # Filters removed stored neighbours, or k exceeds the stored edges: exact scan.
    rows = engine.run("similar_lesions_scan", lesionId=lesion_id, k=k, typeName=tname,
                      excludeSamePatient=bool(exclude_same_patient))
    return _ranked(rows, "scan")


def similar_to_vector(engine: Engine, vector: Sequence[float] | np.ndarray, k: int = sim.DEFAULT_K,
                      type_name: str | int | None = None, exclude_patient_id: str | None = None,
                      model_id: str | None = None, exact: bool = False) -> list[dict[str, Any]]:
    """The ``k`` lesions nearest to ``vector`` (an embedding from the active model, or ``model_id``).

    Through the vector index (approximate, asking for more hits when filters apply) unless
    ``exact`` or there is no index; then by an exact scan.
    """
    k = _check_k(k)
    tname = type_name_of(type_name)
    model = active_model(engine, model_id)
    v = np.asarray(vector, dtype=np.float64).ravel()
    if len(v) != int(model["dim"]):
        raise InputError(f"the vector has {len(v)} dimensions but model {model['modelId']} makes "
                         f"{model['dim']}-dimensional embeddings")
    _, stored = sim.encode_vectors(v[None, :])
    vec = stored[0].astype(np.float64).tolist()
    params = dict(vector=vec, modelId=model["modelId"], typeName=tname, excludePatientId=exclude_patient_id)
    if not exact and sim.vector_index(engine) is not None:
        want = k if tname is None and exclude_patient_id is None else k * OVERFETCH
        rows = engine.run("similar_by_vector", k=max(want, k), **params)
        if len(rows) >= k:
            return _ranked(rows[:k], "index")
    rows = engine.run("similar_by_vector_scan", k=k, **params)
    return _ranked(rows, "scan")


def _ranked(rows: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows, 1):
        r = dict(r)
        r["rank"] = i
        r["source"] = source
        r["distance"] = float(r["distance"]) if r.get("distance") is not None else None
        out.append(r)
    return out


def active_model(engine: Engine, model_id: str | None = None) -> dict[str, Any]:
    """The graph's (:Model) row: ``model_id``'s, else the active one (InputError when none)."""
    rows = engine.run("models")
    if model_id:
        for r in rows:
            if r["modelId"] == model_id:
                return r
        raise InputError(f"no model {model_id!r} in the graph (known: {', '.join(r['modelId'] for r in rows) or 'none'})")
    act = next((r for r in rows if r.get("active")), None)
    if act is None:
        raise InputError("nothing is embedded in this graph yet: run `lesiondb embed` (or ingest with --images)")
    return act


# -- type prediction ------------------------------------------------------------------------------
def vote(types: Sequence[int], distances: Sequence[float]) -> tuple[int, float, int]:
    """Majority vote of neighbour type codes → (code, share of votes, votes). Ties go to the type
    whose voters are nearer in total, then to the smaller code."""
    types = [int(t) for t in types]
    if not types:
        return -1, 0.0, 0
    counts = Counter(types)
    dsum: dict[int, float] = {}
    for t, d in zip(types, distances, strict=True):
        dsum[t] = dsum.get(t, 0.0) + float(d)
    best = min(counts, key=lambda t: (-counts[t], dsum[t], t))
    return best, counts[best] / len(types), len(types)


@dataclass
class TypePredictions(Result):
    """What :func:`predict_types` predicted (and wrote)."""

    model_id: str
    method: str
    k: int
    unlabelled: int
    predicted: int
    distribution: dict[str, int]
    mean_confidence: float | None
    written: int
    seconds: float
    predictions: list[dict[str, Any]] = field(default_factory=list)
    state_from: str | None = json_field(default=None, omit_none=True)
    labelled: int | None = json_field(default=None, omit_none=True)
    held_out_accuracy: dict[str, Any] | None = json_field(default=None, omit_none=True)
    cleared: int | None = json_field(default=None, omit_none=True)


def predict_types(engine: Engine, k: int = sim.DEFAULT_K, method: str = "embeddings", write: bool = True,
                  cache_dir: str | Path | None = None) -> TypePredictions:
    """Predict the coarse type of every embedded, unlabelled lesion by a k-NN vote.

    ``method="embeddings"``: the k nearest *labelled* lesions by embedding (exact); ``"edges"``:
    the labelled lesions among each lesion's stored SIMILAR_TO neighbours (faster, fewer votes).
    Also reports the vote's accuracy on labelled lesions with their own patient held out
    (``embeddings`` method), a check of the embedding on this graph. Returns a summary with the
    predictions (``predictions``: lesionId, typeCode, typeName, confidence, votes).
    """
    k = _check_k(k)
    if method not in ("embeddings", "edges"):
        raise InputError(f"unknown method {method!r}: use 'embeddings' or 'edges'")
    model = active_model(engine, None)
    mid = model["modelId"]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"modelId": mid, "method": method, "k": k}
    preds: list[tuple[str, int, float, int]] = []
    if method == "embeddings":
        table, _, source = sim.load_state(engine, mid, int(model.get("k") or sim.DEFAULT_K), cache_dir,
                                          with_lists=False)
        out["stateFrom"] = source
        labels = {r["lesionId"]: r.get("typeName") for r in engine.run("lesion_types", modelId=mid)}
        types = np.array([TYPE_CODES.get(labels.get(i) or "", -1) for i in table.ids], dtype=np.int64)
        lab = np.flatnonzero(types >= 0)
        unl = np.flatnonzero((types < 0) & np.isin(table.ids, list(labels)))
        out["labelled"], out["unlabelled"] = int(len(lab)), int(len(unl))
        if len(lab) and len(unl):
            nb = knn.search(table.vectors[lab], table.vectors[unl], k)
            for line, row in enumerate(unl):
                ok = nb.index[line] >= 0
                code, conf, n = vote(types[lab][nb.index[line][ok]], nb.distance[line][ok])
                preds.append((str(table.ids[row]), code, conf, n))
        if len(lab) > 1:
            out["heldOutAccuracy"] = _held_out_accuracy(table.vectors[lab], types[lab], table.patients[lab], k)
    else:
        votes: dict[str, tuple[list[int], list[float]]] = {}
        labelled: dict[str, bool] = {}
        for r in engine.run("type_vote_edges"):
            labelled[r["lesionId"]] = bool(r["labelled"])
            t, d = votes.setdefault(r["lesionId"], ([], []))
            t.append(int(r["typeCode"]))
            d.append(float(r["distance"]))
        for lid in sorted(votes):
            if labelled[lid]:
                continue
            code, conf, n = vote(*votes[lid])
            preds.append((lid, code, conf, n))
        out["unlabelled"] = len(preds)
    preds = [p for p in preds if p[1] >= 0]
    out["predicted"] = len(preds)
    out["distribution"] = dict(sorted(Counter(LESION_TYPES[p[1]] for p in preds).items()))
    out["meanConfidence"] = round(float(np.mean([p[2] for p in preds])), 4) if preds else None
    out["written"] = 0
    if write:
        rows = [[lid, code, LESION_TYPES[code], round(conf, 4)] for lid, code, conf, _ in preds]
        res = engine.write("write_type_predictions", rows, batch_size=PREDICT_BATCH, modelId=mid,
                           method=method, k=k) if rows else []
        out["written"] = int(sum(r.get("written") or 0 for r in res))
        cleared = engine.execute("clear_type_predictions", modelId=mid)
        out["cleared"] = int(sum(r.get("cleared") or 0 for r in cleared))
        if out["written"] or out["cleared"]:
            sim.refresh_vector_index(engine)  # FalkorDB's index loses lesions whose properties were SET
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["predictions"] = [{"lesionId": lid, "typeCode": code, "typeName": LESION_TYPES[code],
                           "confidence": round(conf, 4), "votes": n} for lid, code, conf, n in preds]
    return TypePredictions(**{_snake(k_): v for k_, v in out.items()})


def _held_out_accuracy(x: np.ndarray, types: np.ndarray, patients: np.ndarray, k: int) -> dict[str, Any]:
    """k-NN vote accuracy on labelled lesions, each predicted from other patients' lesions only."""
    nb = knn.knn(x, k, groups=patients, exclude_same_group=True)
    right = 0
    n = 0
    for line in range(len(x)):
        ok = nb.index[line] >= 0
        if not ok.any():
            continue
        code, _, _ = vote(types[nb.index[line][ok]], nb.distance[line][ok])
        right += int(code == types[line])
        n += 1
    return {"lesions": n, "accuracy": round(right / n, 4) if n else None,
            "note": "labelled lesions predicted from other patients' labelled lesions"}


# -- clustering -------------------------------------------------------------------------------------
CLUSTER_METHODS = ("auto", "networkx", "gds")


@dataclass
class Clustering(Result):
    """What :func:`cluster` found (and wrote)."""

    model_id: str
    method: str
    resolution: float
    seed: int | None
    lesions: int
    edges: int
    clusters: int
    modularity: float | None
    type_purity: float | None
    largest: list[dict[str, Any]]
    seconds: dict[str, float]
    assigned: int | None = json_field(default=None, omit_none=True)


def cluster(engine: Engine, resolution: float = 1.0, seed: int = 0, write: bool = True,
            method: str = "auto") -> Clustering:
    """Louvain communities of the active model's SIMILAR_TO graph, written as
    ``(:Cluster {clusterId, size, dominantType, …})`` with ``(:Lesion)-[:IN_CLUSTER]->(:Cluster)``.

    ``method``: ``networkx`` (in this process, seeded), ``gds`` (Neo4j Graph Data Science's
    Louvain on the server: the edges never leave it), or ``auto`` (GDS when the engine is Neo4j
    with the plug-in and ``resolution`` is 1, which GDS Louvain cannot change; else networkx).
    Edge weight: cosine similarity of the two embeddings (1 − d²/2, at least 0); the kNN edges
    are taken as undirected. Deterministic for a given graph (and seed, for networkx).
    """
    if not resolution > 0:
        raise InputError(f"resolution must be positive, got {resolution}")
    if method not in CLUSTER_METHODS:
        raise InputError(f"unknown clustering method {method!r}; expected one of {', '.join(CLUSTER_METHODS)}")
    model = active_model(engine, None)
    mid = model["modelId"]
    t0 = time.perf_counter()
    types = {r["lesionId"]: r.get("typeName") for r in engine.run("lesion_types", modelId=mid)}
    if method == "auto":
        method = "gds" if resolution == 1.0 and gds_available(engine) else "networkx"
    if method == "gds":
        if resolution != 1.0:
            raise InputError("GDS Louvain has no resolution parameter: leave --resolution at 1 "
                             "or use --method networkx")
        if not gds_available(engine):
            raise InputError("--method gds needs Neo4j with the Graph Data Science plug-in "
                             "(NEO4J_PLUGINS='[\"graph-data-science\"]' in docker-compose.yml); "
                             "use --method networkx")
        comms, n_edges, modularity = _communities_gds(engine, mid, types)
        label = "louvain-gds"
    else:
        comms, n_edges, modularity = _communities_networkx(engine, mid, types, resolution, seed)
        label = "louvain-networkx"
    t_compute = time.perf_counter() - t0
    comms = sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0]))
    created = sim.now_iso()
    clusters, assign = [], []
    purity_num = purity_den = 0
    for i, members in enumerate(comms, 1):
        cid = f"C{i:04d}"
        labelled = [types[m] for m in members if types.get(m)]
        dom, share = None, None
        if labelled:
            counts = Counter(labelled)
            dom = min(counts, key=lambda t: (-counts[t], t))
            share = counts[dom] / len(labelled)
            purity_num += counts[dom]
            purity_den += len(labelled)
        clusters.append({"clusterId": cid, "size": len(members), "dominantType": dom,
                         "dominantTypeShare": None if share is None else round(share, 4),
                         "labelled": len(labelled), "modelId": mid, "method": label,
                         "resolution": float(resolution), "seed": int(seed) if label == "louvain-networkx" else None,
                         "createdAt": created})
        assign.extend([m, cid] for m in members)
    out = {"modelId": mid, "method": label, "resolution": resolution,
           "seed": seed if label == "louvain-networkx" else None,
           "lesions": len(types), "edges": n_edges, "clusters": len(clusters),
           "modularity": None if modularity is None else round(float(modularity), 4),
           "typePurity": round(purity_num / purity_den, 4) if purity_den else None,
           "largest": [{k: c[k] for k in ("clusterId", "size", "dominantType", "dominantTypeShare", "labelled")}
                       for c in clusters[:10]]}
    if write:
        engine.execute("delete_clusters")
        # Cypher maps cannot hold nulls on FalkorDB nodes: drop them (absent = unknown).
        rows = [{k: v for k, v in c.items() if v is not None} for c in clusters]
        engine.write("write_clusters", rows, batch_size=5000)
        res = engine.write("assign_clusters", assign, batch_size=5000)
        out["assigned"] = int(sum(r.get("assigned") or 0 for r in res))
    out["seconds"] = {"communities": round(t_compute, 3), "total": round(time.perf_counter() - t0, 3)}
    return Clustering(**{_snake(k_): v for k_, v in out.items()})


def _snake(key: str) -> str:
    """``typePurity`` → ``type_purity`` (the result fields of a summary built as a dict)."""
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def gds_available(engine: Engine) -> bool:
    """Whether the engine is Neo4j with the Graph Data Science procedures lesiondb calls."""
    if engine.dialect != "neo4j":
        return False
    rows = engine.run("gds_available")
    return bool(rows) and int(rows[0]["procedures"]) == 3


def _communities_networkx(engine: Engine, mid: str, types: dict, resolution: float, seed: int):
    """(communities, undirected edge count, modularity) with networkx, the edges read into memory."""
    import networkx as nx  # only clustering needs it (0.2 s to import)

    g = nx.Graph()
    g.add_nodes_from(sorted(types))
    for e in sorted(engine.run("similarity_edges", modelId=mid), key=lambda r: (r["source"], r["target"])):
        w = max(0.0, 1.0 - float(e["distance"]) ** 2 / 2.0)
        a, b = e["source"], e["target"]
        if g.has_edge(a, b):
            w = max(w, g[a][b]["weight"])
        g.add_edge(a, b, weight=w)
    comms = nx.community.louvain_communities(g, weight="weight", resolution=resolution, seed=seed) if len(g) else []
    modularity = nx.community.modularity(g, comms, weight="weight", resolution=resolution) if g.number_of_edges() else None
    return comms, g.number_of_edges(), modularity


def _communities_gds(engine: Engine, mid: str, types: dict):
    """(communities, undirected edge count, None) from GDS Louvain on a projected in-memory graph,
    dropped afterwards. Lesions without edges (not projected) become clusters of their own, as
    isolated nodes do in networkx."""
    graph = f"lesiondb-similar-{mid}-{uuid.uuid4().hex[:8]}"
    try:
        proj = engine.run("gds_project_similarity", graphName=graph, modelId=mid)
        rows = engine.run("gds_louvain", graphName=graph)
    finally:
        engine.run("gds_drop_graph", graphName=graph)
    by_comm: dict[int, set] = {}
    for r in rows:
        if r["lesionId"] in types:
            by_comm.setdefault(int(r["communityId"]), set()).add(r["lesionId"])
    placed = set().union(*by_comm.values()) if by_comm else set()
    comms = list(by_comm.values()) + [{m} for m in sorted(set(types) - placed)]
    return comms, int(proj[0]["pairs"]) if proj else 0, None


def clusters(engine: Engine) -> list[dict[str, Any]]:
    """The stored clustering, largest first."""
    return engine.run("clusters")


def cluster_members(engine: Engine, cluster_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """The lesions of one stored cluster (lesionId, typeName, predictedTypeName, patientId, longDiameterMm)."""
    rows = engine.run("cluster_members", clusterId=cluster_id, limit=int(limit))
    if not rows and not any(c["clusterId"] == cluster_id for c in clusters(engine)):
        raise InputError(f"no cluster {cluster_id!r} (list them with `lesiondb cluster --show`)")
    return rows
