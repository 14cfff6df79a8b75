"""The paper's embedding measures (Yan et al., CVPR 2018, §5): retrieval, classification, clustering.

Pure numpy / scikit-learn. Every function takes feature vectors ``X`` (n, d) compared by Euclidean
distance, and per-lesion attributes:

- ``types`` (n,) int, ``-1`` = unlabelled (such lesions are skipped as queries and as votes);
- ``locations`` (n, 3) normalised (x, y, z) body location in [0, 1];
- ``sizes_mm`` (n,) or (n, 2): RECIST long (and short) diameter in mm;
- ``groups`` (n,) optional, e.g. patient ids: neighbours from the query's own group are excluded
  (a follow-up of the same lesion is a trivial match that says nothing about the embedding).

Definitions, for a query ``a`` and its K nearest neighbours ``b``:

- type error@K = fraction of the K neighbours whose type differs from the query's;
- location error@K = mean Euclidean distance between normalised locations ``‖loc_a − loc_b‖``;
- size error@K = mean relative size difference ``|d_a − d_b| / max(d_a, d_b)`` (averaged over the
  long and short diameters when both are given);
- classification accuracy = leave-one-out K-NN majority vote (ties → the nearest of the tied types);
- clustering: k-means with as many clusters as types, purity and NMI against the types.

All errors are averaged over queries (lower is better); accuracy, purity, NMI: higher is better.
"""
from __future__ import annotations

import numpy as np


def _as2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def pairwise_sqdist(X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances (n, m), clipped at 0."""
    X = np.asarray(X, dtype=np.float64)
    Y = X if Y is None else np.asarray(Y, dtype=np.float64)
    d = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * X @ Y.T
    return np.maximum(d, 0.0)


def knn_indices(X: np.ndarray, k: int, groups: np.ndarray | None = None,
                candidates: np.ndarray | None = None, queries: np.ndarray | None = None) -> np.ndarray:
    """Indices (q, k) of the k nearest neighbours of each query, nearest first.

    Self and (with ``groups``) same-group lesions are never neighbours; ``candidates`` (bool mask)
    restricts who may be a neighbour; ``queries`` (int indices) selects the queries (default: all).
    Ties are broken by index (stable), so results are deterministic. Rows with fewer than k
    eligible neighbours are padded with -1.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    q = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    g = None if groups is None else np.asarray(groups)
    cand = None if candidates is None else np.asarray(candidates, dtype=bool)
    out = np.full((len(q), k), -1, dtype=np.int64)
    for s in range(0, len(q), _CHUNK):  # chunks keep memory at O(chunk × n)
        qs = q[s: s + _CHUNK]
        d = pairwise_sqdist(X[qs], X)
        d[np.arange(len(qs)), qs] = np.inf
        if g is not None:
            d[g[qs][:, None] == g[None, :]] = np.inf
        if cand is not None:
            d[:, ~cand] = np.inf
        kk = min(k, n)
        order = _smallest(d, kk)
        order[np.take_along_axis(d, order, axis=1) == np.inf] = -1
        out[s: s + len(qs), :kk] = order
    return out


_CHUNK = 1024


def _smallest(d: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest entries per row, ascending; ties broken by index."""
    if k >= d.shape[1]:
        return np.argsort(d, axis=1, kind="stable")
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(d, part, axis=1).max(axis=1, keepdims=True)
    # rows with ties at the k-th distance: fall back to a stable full sort for exact tie-breaking
    n_le = (d <= kth).sum(axis=1)
    out = np.empty((len(d), k), dtype=np.int64)
    simple = n_le == k
    if simple.any():
        p = part[simple]
        v = np.take_along_axis(d[simple], p, axis=1)
        o = np.argsort(v, axis=1, kind="stable")
        p_sorted = np.take_along_axis(p, o, axis=1)
        # equal distances inside the top k: order them by index
        vs = np.take_along_axis(v, o, axis=1)
        for r in np.flatnonzero((np.diff(vs, axis=1) == 0).any(axis=1)):
            idx = np.lexsort((p_sorted[r], vs[r]))
            p_sorted[r] = p_sorted[r][idx]
        out[simple] = p_sorted
    if (~simple).any():
        out[~simple] = np.argsort(d[~simple], axis=1, kind="stable")[:, :k]
    return out


def relative_size_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a − b| / max(a, b)`` averaged over the last axis (the diameters: long, or long and short).

    Scalars compare directly; arrays of shape (..., m) give shape (...).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.maximum(np.maximum(a, b), 1e-9)
    r = np.abs(a - b) / den
    return r.mean(axis=-1) if r.ndim else r


def retrieval_errors(X, types, locations, sizes_mm, k: int = 5, groups=None) -> dict[str, float]:
    """Top-K retrieval errors for type, location and size (lower is better).

    Type error is computed over labelled queries and labelled neighbours only; location and size
    errors over every lesion.
    """
    types = np.asarray(types)
    loc = np.asarray(locations, dtype=np.float64)
    size = _as2d(sizes_mm)
    labelled = types >= 0
    out: dict[str, float] = {}
    # location / size: all lesions
    nn = knn_indices(X, k, groups)
    ok = nn >= 0
    rows = np.repeat(np.arange(len(nn))[:, None], k, axis=1)
    if ok.any():
        dl = np.linalg.norm(loc[rows[ok]] - loc[nn[ok]], axis=1)
        ds = relative_size_difference(size[rows[ok]], size[nn[ok]])
        out[f"location_error_at_{k}"] = float(_mean_per_query(dl, rows[ok], len(nn)))
        out[f"size_error_at_{k}"] = float(_mean_per_query(ds, rows[ok], len(nn)))
    else:
        out[f"location_error_at_{k}"] = out[f"size_error_at_{k}"] = float("nan")
    # type: labelled queries among labelled candidates
    qi = np.flatnonzero(labelled)
    if len(qi):
        nt = knn_indices(X, k, groups, candidates=labelled, queries=qi)
        okt = nt >= 0
        r = np.repeat(np.arange(len(qi))[:, None], k, axis=1)
        wrong = (types[qi][r[okt]] != types[nt[okt]]).astype(np.float64)
        out[f"type_error_at_{k}"] = float(_mean_per_query(wrong, r[okt], len(qi)))
    else:
        out[f"type_error_at_{k}"] = float("nan")
    return {f"type_error_at_{k}": out[f"type_error_at_{k}"],
            f"location_error_at_{k}": out[f"location_error_at_{k}"],
            f"size_error_at_{k}": out[f"size_error_at_{k}"]}


def _mean_per_query(values: np.ndarray, query: np.ndarray, n: int) -> float:
    """Mean over queries of the mean over that query's neighbours (queries with none are skipped)."""
    s = np.bincount(query, weights=values, minlength=n)
    c = np.bincount(query, minlength=n)
    has = c > 0
    return float((s[has] / c[has]).mean()) if has.any() else float("nan")


def knn_vote(neighbour_types: np.ndarray) -> np.ndarray:
    """Majority type of each row of (q, k) neighbour types (nearest first; -1 = no neighbour).

    Ties go to the tied type whose first occurrence is nearest.
    """
    out = np.full(len(neighbour_types), -1, dtype=np.int64)
    for i, row in enumerate(neighbour_types):
        row = row[row >= 0]
        if not len(row):
            continue
        vals, first, counts = np.unique(row, return_index=True, return_counts=True)
        best = counts.max()
        tied = first[counts == best]
        out[i] = row[tied.min()]
    return out


def knn_classification_accuracy(X, types, k: int = 5, groups=None) -> float:
    """Leave-one-out K-NN type classification accuracy over the labelled lesions."""
    types = np.asarray(types)
    labelled = types >= 0
    qi = np.flatnonzero(labelled)
    if not len(qi):
        return float("nan")
    nn = knn_indices(X, k, groups, candidates=labelled, queries=qi)
    nt = np.where(nn >= 0, types[np.maximum(nn, 0)], -1)
    pred = knn_vote(nt)
    return float((pred == types[qi]).mean())


def knn_predict(X_ref, types_ref, X_query, k: int = 5) -> np.ndarray:
    """Types of queries by majority vote of their K nearest labelled reference lesions."""
    types_ref = np.asarray(types_ref)
    d = pairwise_sqdist(X_query, X_ref)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return knn_vote(types_ref[order])


def purity(labels_true, labels_pred) -> float:
    """Fraction of lesions whose cluster's majority type is their own."""
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    codes = np.unique(t, return_inverse=True)[1]
    total = 0
    for c in np.unique(p):
        total += np.bincount(codes[p == c]).max()
    return float(total / len(t)) if len(t) else float("nan")


def clustering_scores(X, types, n_clusters: int | None = None, random_state: int = 0) -> dict[str, float]:
    """k-means (k = number of types unless given) on the labelled lesions: purity and NMI."""
    from sklearn.cluster import KMeans  # scikit-learn takes 1.3 s to import: only for this measure
    from sklearn.metrics import normalized_mutual_info_score

    types = np.asarray(types)
    keep = types >= 0
    Xl = np.asarray(X, dtype=np.float64)[keep]
    tl = types[keep]
    k = n_clusters or len(np.unique(tl))
    if len(tl) < 2 or k < 1:
        return {"purity": float("nan"), "nmi": float("nan")}
    k = min(k, len(tl))
    pred = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit_predict(Xl)
    return {"purity": purity(tl, pred), "nmi": float(normalized_mutual_info_score(tl, pred))}


def evaluate_embedding(X, types, locations, sizes_mm, k: int = 5, groups=None,
                       random_state: int = 0) -> dict:
    """All measures, nested: ``{"retrieval": {...}, "classification_accuracy": …, "clustering": {...}}``."""
    return {
        "retrieval": retrieval_errors(X, types, locations, sizes_mm, k=k, groups=groups),
        "classification_accuracy": knn_classification_accuracy(X, types, k=k, groups=groups),
        "clustering": clustering_scores(X, types, random_state=random_state),
    }


def flatten(d: dict, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out = {}
    for key, v in d.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def higher_is_better(measure: str) -> bool:
    """Errors are better low; accuracy, purity and NMI high."""
    return "error" not in measure


def beats(model: dict, baseline: dict, measures=None) -> dict[str, bool]:
    """Per measure, whether ``model`` is strictly better than ``baseline`` (nested result dicts).

    ``measures``: names in flattened form (``"retrieval.type_error_at_5"``); default: the six
    measures of the paper present in both.
    """
    fm, fb = flatten(model), flatten(baseline)
    if measures is None:
        measures = [m for m in fm if m in fb and (m.startswith("retrieval.") or m.startswith("clustering.")
                                                  or m == "classification_accuracy")]
    out = {}
    for name in measures:
        if name in fm and name in fb:
            a, b = fm[name], fb[name]
            out[name] = bool(a > b) if higher_is_better(name) else bool(a < b)
    return out
