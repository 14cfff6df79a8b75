"""Exact k-nearest neighbours of unit vectors, block-wise in memory (numpy + BLAS only).

Distances are Euclidean on L2-normalised rows: ``d² = 2 − 2·a·b``. A block of query rows is
multiplied against every row at once (one BLAS matmul), so memory is bounded by
``block_rows × n`` floats whatever ``n`` is.

Selecting the k best of each row without sorting (or even partitioning) the whole row: the k-th
best similarity among a fixed sample of columns is a lower bound of the row's k-th best overall
(the sample is a subset), so every true neighbour clears it; only the few candidates above it
are kept. Candidates are re-scored in float64 (exact up to rounding) and ordered by
``(distance, index)``, so ties break toward the lower row index, deterministically: the result
equals a float64 brute force that breaks ties the same way.

Incremental updates: :func:`affected_rows` says which existing rows' neighbourhoods can change
when some rows are added or replaced; recomputing only those (``knn(x, rows=…)``) gives exactly
the full recomputation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: float32 similarities are within ~1e-6 of the truth for unit vectors; keep a wide margin.
_F32_SLACK = 1e-4
_SAMPLE_COLUMNS = 2048
_RERANK_CHUNK = 1 << 15  # candidate pairs re-scored in float64 at a time
_TIE_TOL = 1e-9  # distances this close to a radius count as ties
_PAD_LIMIT = 8 * 2**20  # cells of the padded candidate matrix before the sort fallback
DEFAULT_MEMORY_MB = 192


@dataclass(frozen=True)
class Neighbours:
    """Top-k lists: ``index[i, j]`` is row i's (j+1)-th nearest row, ``distance[i, j]`` its distance.

    Rows with fewer than k candidates are padded with index ``-1`` and distance ``inf``.
    ``rows[i]`` is the query row (in ``x``) that line i describes.
    """

    rows: np.ndarray  # (m,) int64
    index: np.ndarray  # (m, k) int64
    distance: np.ndarray  # (m, k) float64

    @property
    def k(self) -> int:
        return self.index.shape[1]

    def counts(self) -> np.ndarray:
        """Number of real neighbours of each line."""
        return (self.index >= 0).sum(axis=1)

    def radius(self) -> np.ndarray:
        """Distance to the farthest listed neighbour (``inf`` when the list is not full)."""
        if self.k == 0:
            return np.full(len(self.rows), np.inf)
        return self.distance[:, -1].copy()

    def take(self, lines: np.ndarray) -> Neighbours:
        return Neighbours(self.rows[lines], self.index[lines], self.distance[lines])


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32). Raises ``ValueError`` on a zero or non-finite row."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, dim), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise ValueError(f"{bad.size} embedding row(s) are zero or not finite (first: row {bad[0]})")
    return (x / norms[:, None]).astype(np.float32)


def block_rows_for(n: int, memory_mb: float = DEFAULT_MEMORY_MB) -> int:
    """Query rows per block so that one block's similarity matrix and masks fit in ``memory_mb``."""
    per_row = max(n, 1) * (4 + 1 + 1)  # float32 similarities, a bool mask, an optional group mask
    return int(max(1, min(2048, memory_mb * 2**20 // per_row)))


def knn(
    x: np.ndarray,
    k: int = 10,
    *,
    rows: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    exclude_same_group: bool = False,
    memory_mb: float = DEFAULT_MEMORY_MB,
    block_rows: int | None = None,
) -> Neighbours:
    """The k nearest rows of ``x`` for each row in ``rows`` (default: every row), self excluded.

    ``x`` must hold unit rows (see :func:`normalize`). With ``exclude_same_group`` rows whose
    ``groups`` value (e.g. patient id) equals the query's are never neighbours.
    """
    x = _as_unit32(x)
    n = len(x)
    q_rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
    if q_rows.size and (q_rows.min() < 0 or q_rows.max() >= n):
        raise IndexError("rows must index x")
    g = _group_codes(groups, n) if exclude_same_group else None
    return _search(x, x[q_rows], q_rows, k, g, None if g is None else g[q_rows], memory_mb, block_rows)


def search(
    x: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    *,
    groups: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
    exclude_rows: np.ndarray | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
) -> Neighbours:
    """The k nearest rows of ``x`` to each of ``queries`` (vectors that need not be rows of ``x``).

    ``exclude_rows[i]`` (or -1) is a row of ``x`` never returned for query i (the query itself);
    with ``groups``/``query_groups`` given, rows of the query's group are excluded.
    """
    x = _as_unit32(x)
    qs = _as_unit32(queries)
    if qs.shape[1] != x.shape[1]:
        raise ValueError(f"query dimension {qs.shape[1]} differs from the embeddings' {x.shape[1]}")
    self_idx = (np.full(len(qs), -1, dtype=np.int64) if exclude_rows is None
                else np.asarray(exclude_rows, dtype=np.int64).ravel())
    gx = gq = None
    if groups is not None and query_groups is not None:
        codes, inv = np.unique(np.concatenate([np.asarray(groups, dtype=object).astype(str),
                                               np.asarray(query_groups, dtype=object).astype(str)]),
                               return_inverse=True)
        gx, gq = inv[: len(x)].astype(np.int64), inv[len(x):].astype(np.int64)
    return _search(x, qs, self_idx, k, gx, gq, memory_mb, None)


def affected_rows(
    x: np.ndarray,
    old: Neighbours,
    changed: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    exclude_same_group: bool = False,
    memory_mb: float = DEFAULT_MEMORY_MB,
) -> np.ndarray:
    """Rows of ``x`` whose top-k can differ after the rows ``changed`` were added or re-embedded.

    ``old`` holds the previous lists of (some) rows, in ``x``'s index space; its ``index`` may be
    empty (``k`` = 0 columns) when only radii are known — use :func:`affected_by_radius` then.
    A row is affected when it is itself changed, when it has no previous list, when its list
    names a changed row, or when a changed row now comes closer than its k-th neighbour (or its
    list was not full). Returns sorted row indices.
    """
    n = len(x)
    changed = _as_index(changed, n)
    has_old = np.zeros(n, dtype=bool)
    has_old[old.rows] = True
    radius = np.full(n, np.inf)
    radius[old.rows] = old.radius()
    hit = np.zeros(n, dtype=bool)
    hit[changed] = True
    hit[~has_old] = True
    if old.k and changed.size:
        is_changed = np.zeros(n, dtype=bool)
        is_changed[changed] = True
        listed = np.where(old.index >= 0, is_changed[np.clip(old.index, 0, None)], False)
        hit[old.rows[listed.any(axis=1)]] = True
    return np.flatnonzero(hit | _closer_than(x, changed, radius, groups, exclude_same_group, memory_mb))


def affected_by_radius(
    x: np.ndarray,
    radius: np.ndarray,
    changed: np.ndarray,
    *,
    pointing_at_changed: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    exclude_same_group: bool = False,
    memory_mb: float = DEFAULT_MEMORY_MB,
) -> np.ndarray:
    """Like :func:`affected_rows` when only each row's k-th distance is known (``inf``: no full list).

    ``pointing_at_changed`` are rows whose lists name a re-embedded row (they lose that neighbour).
    Rows at exactly their radius from a changed row count as affected (a tie may reorder them).
    """
    n = len(x)
    changed = _as_index(changed, n)
    radius = np.asarray(radius, dtype=np.float64).ravel()
    if radius.shape != (n,):
        raise ValueError(f"radius must have one value per row ({n}), got {radius.shape}")
    hit = np.zeros(n, dtype=bool)
    hit[changed] = True
    if pointing_at_changed is not None:
        hit[_as_index(pointing_at_changed, n)] = True
    return np.flatnonzero(hit | _closer_than(x, changed, radius, groups, exclude_same_group, memory_mb))


def brute_force(x: np.ndarray, k: int, groups: np.ndarray | None = None,
                exclude_same_group: bool = False) -> Neighbours:
    """Reference implementation: the full float64 distance matrix, sorted by (distance, index)."""
    x64 = np.asarray(x, dtype=np.float64)
    n = len(x64)
    d = np.sqrt(np.maximum(0.0, ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)))
    np.fill_diagonal(d, np.inf)
    if exclude_same_group and groups is not None:
        g = np.asarray(groups)
        d[g[:, None] == g[None, :]] = np.inf
    idx = np.full((n, k), -1, dtype=np.int64)
    dist = np.full((n, k), np.inf)
    cols = np.arange(n)
    for i in range(n):
        order = np.lexsort((cols, d[i]))[:k]
        order = order[np.isfinite(d[i, order])]
        idx[i, : len(order)] = order
        dist[i, : len(order)] = d[i, order]
    return Neighbours(np.arange(n, dtype=np.int64), idx, dist)


# -- internals ---------------------------------------------------------------------------------
def _as_unit32(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, dim), got shape {x.shape}")
    if len(x):
        norms = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        if not np.all(np.abs(norms - 1.0) < 1e-3):
            raise ValueError("embeddings must be L2-normalised rows; call lesiondb.core.knn.normalize first")
    return x


def _as_index(rows: np.ndarray, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.shape != (n,):
            raise ValueError(f"boolean row mask must have length {n}")
        return np.flatnonzero(rows)
    rows = np.unique(rows.astype(np.int64).ravel())
    if rows.size and (rows[0] < 0 or rows[-1] >= n):
        raise IndexError("row index out of range")
    return rows


def _group_codes(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        raise ValueError("exclude_same_group needs groups (one value per row)")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one value per row ({n}), got shape {groups.shape}")
    return np.unique(groups.astype(str), return_inverse=True)[1].astype(np.int64)


def _search(x: np.ndarray, qs: np.ndarray, self_idx: np.ndarray, k: int, gx: np.ndarray | None,
            gq: np.ndarray | None, memory_mb: float, block_rows: int | None) -> Neighbours:
    if k < 0:
        raise ValueError("k must be ≥ 0")
    n, m = len(x), len(qs)
    index = np.full((m, k), -1, dtype=np.int64)
    distance = np.full((m, k), np.inf)
    if k == 0 or n == 0 or m == 0:
        return Neighbours(self_idx.copy(), index, distance)
    b = block_rows or block_rows_for(n, memory_mb)
    # Evenly strided sample columns: deterministic, and spread over the whole index range.
    sample = np.unique(np.linspace(0, n - 1, num=min(n, _SAMPLE_COLUMNS)).astype(np.int64))
    xt = np.ascontiguousarray(x.T)
    floor = -np.finfo(np.float32).max  # above -inf: masked entries never pass a threshold
    for s in range(0, m, b):
        e = min(m, s + b)
        rr = np.arange(e - s)
        sim = qs[s:e] @ xt  # (rows, n) float32: the BLAS part
        own = self_idx[s:e]
        ok = own >= 0
        sim[rr[ok], own[ok]] = -np.inf
        if gx is not None:
            sim[gq[s:e, None] == gx[None, :]] = -np.inf
        # Stage 1: a lower bound of each row's k-th best similarity, from the sample columns.
        if len(sample) > k:
            kth = np.partition(sim[:, sample], len(sample) - k, axis=1)[:, len(sample) - k]
            thresh = np.maximum(kth - _F32_SLACK, floor).astype(np.float32)
        else:
            thresh = np.full(e - s, floor, dtype=np.float32)
        pos = np.flatnonzero(sim >= thresh[:, None])  # flat indices: far faster than 2-D nonzero
        r, c = np.divmod(pos, n)
        v = sim.ravel()[pos]
        del sim
        # Stage 2: the k-th best float32 similarity among the candidates (they hold the true
        # top k), then keep only those within float32 error of it for the exact re-score.
        r, c, v = _near_top(r, c, v, e - s, k)
        dot = np.einsum("ij,ij->i", qs[s + r].astype(np.float64), x[c].astype(np.float64))
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * dot))
        order = np.lexsort((c, dist, r))
        r, c, dist = r[order], c[order], dist[order]
        starts = np.searchsorted(r, rr)
        take = np.minimum(np.searchsorted(r, rr, side="right") - starts, k)
        valid = np.arange(k)[None, :] < take[:, None]
        at = np.where(valid, starts[:, None] + np.arange(k)[None, :], 0)
        if len(c):
            index[s:e] = np.where(valid, c[at], -1)
            distance[s:e] = np.where(valid, dist[at], np.inf)
    return Neighbours(self_idx.copy(), index, distance)


def _near_top(r: np.ndarray, c: np.ndarray, v: np.ndarray, rows: int, k: int):
    """Candidates (r, c, v) grouped by row → those within float32 slack of their row's k-th best."""
    if len(r) == 0:
        return r, c, v
    counts = np.bincount(r, minlength=rows)
    full = counts > k
    if not full.any():
        return r, c, v
    width = int(counts.max())
    if width * rows > _PAD_LIMIT:  # a row with very many candidates (ties): fall back to a sort
        order = np.lexsort((-v, r))
        r, c, v = r[order], c[order], v[order]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        kth = np.full(rows, -np.inf, dtype=np.float32)
        kth[full] = v[starts[full] + k - 1]
    else:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pad = np.full((rows, width), -np.inf, dtype=np.float32)
        pad[r, np.arange(len(r)) - starts[r]] = v
        kth = np.partition(pad, width - k, axis=1)[:, width - k]
        kth[~full] = -np.inf
    keep = v >= kth[r] - _F32_SLACK
    return r[keep], c[keep], v[keep]


def _closer_than(x: np.ndarray, changed: np.ndarray, radius: np.ndarray,
                 groups: np.ndarray | None, exclude_same_group: bool, memory_mb: float) -> np.ndarray:
    """Rows i with some changed row j (j ≠ i) at distance ≤ radius_i (or whose list was not full).

    Near-ties count as closer: recomputing a row that turns out unchanged costs little, missing
    one would leave a stale list.
    """
    x = _as_unit32(x)
    n = len(x)
    if changed.size == 0 or n == 0:
        return np.zeros(n, dtype=bool)
    out = ~np.isfinite(radius)
    g = _group_codes(groups, n) if exclude_same_group else None
    xc = x[changed].astype(np.float64)
    gc = None if g is None else g[changed]
    b = block_rows_for(len(changed), memory_mb)
    for s in range(0, n, b):
        e = min(n, s + b)
        dot = x[s:e].astype(np.float64) @ xc.T  # (rows, changed)
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * dot))
        rows = np.arange(s, e)
        d[rows[:, None] == changed[None, :]] = np.inf
        if gc is not None:
            d[g[s:e, None] == gc[None, :]] = np.inf
        out[s:e] |= (d <= radius[s:e, None] + _TIE_TOL).any(axis=1)
    return out
