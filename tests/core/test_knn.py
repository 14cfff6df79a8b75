"""lesiondb.core.knn: exact block-wise top-k against a float64 brute force; incremental updates."""
from __future__ import annotations

import numpy as np
import pytest

from lesiondb.core import knn


def _unit(rng, n, d):
    return knn.normalize(rng.normal(size=(n, d)))


def _clustered(rng, n, d, centres=12, spread=0.35):
    c = rng.normal(size=(centres, d))
    return knn.normalize(c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, d)))


def _naive(x, k, groups=None):
    """A loop over every pair in float64, sorted by (distance, index): the definition."""
    x = np.asarray(x, dtype=np.float64)
    out_i, out_d = [], []
    for i in range(len(x)):
        cand = []
        for j in range(len(x)):
            if j == i or (groups is not None and groups[i] == groups[j]):
                continue
            cand.append((float(np.sqrt(((x[i] - x[j]) ** 2).sum())), j))
        cand.sort()
        cand = cand[:k]
        out_i.append([j for _, j in cand] + [-1] * (k - len(cand)))
        out_d.append([d for d, _ in cand] + [np.inf] * (k - len(cand)))
    return np.array(out_i), np.array(out_d)


@pytest.mark.parametrize("n,d,k,block", [(300, 8, 10, None), (257, 32, 5, 7), (50, 4, 1, 3), (400, 64, 10, 64)])
def test_knn_equals_brute_force(n, d, k, block):
    rng = np.random.default_rng(n + d)
    x = _clustered(rng, n, d)
    got = knn.knn(x, k, block_rows=block)
    ref = knn.brute_force(x, k)
    assert np.array_equal(got.index, ref.index)
    assert np.allclose(got.distance, ref.distance, atol=1e-6)
    assert np.array_equal(got.rows, np.arange(n))


def test_brute_force_matches_the_naive_definition():
    rng = np.random.default_rng(1)
    x = _unit(rng, 40, 5)
    g = rng.integers(0, 6, 40)
    for groups in (None, g):
        ref = knn.brute_force(x, 7, groups, exclude_same_group=groups is not None)
        idx, dist = _naive(x, 7, groups)
        assert np.array_equal(ref.index, idx)
        assert np.allclose(ref.distance, dist, atol=1e-12)


def test_self_is_never_a_neighbour_and_distances_ascend():
    rng = np.random.default_rng(2)
    x = _unit(rng, 200, 16)
    nb = knn.knn(x, 10)
    assert not (nb.index == np.arange(200)[:, None]).any()
    assert (np.diff(nb.distance, axis=1) >= 0).all()
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - x[nb.index].astype(np.float64), axis=2)
    assert np.allclose(d, nb.distance, atol=1e-6)


def test_same_group_exclusion():
    rng = np.random.default_rng(3)
    x = _clustered(rng, 240, 12)
    groups = np.array([f"P{i % 17}" for i in range(240)])
    got = knn.knn(x, 8, groups=groups, exclude_same_group=True, block_rows=31)
    ref = knn.brute_force(x, 8, groups, exclude_same_group=True)
    assert np.array_equal(got.index, ref.index)
    assert all(groups[j] != groups[i] for i in range(240) for j in got.index[i])


def test_ties_break_by_lower_index_deterministically():
    rng = np.random.default_rng(4)
    base = _unit(rng, 30, 6)
    x = np.repeat(base, 4, axis=0)  # every vector 4 times: exact ties everywhere
    a = knn.knn(x, 5, block_rows=13)
    b = knn.knn(x, 5, block_rows=120)
    ref = knn.brute_force(x, 5)
    assert np.array_equal(a.index, ref.index) and np.array_equal(b.index, ref.index)
    # the three copies come first, in index order
    assert list(a.index[0][:3]) == [1, 2, 3]
    assert list(a.index[5][:3]) == [4, 6, 7]


@pytest.mark.parametrize("pad_limit", [knn._PAD_LIMIT, 1000])
def test_many_tied_candidates_stay_exact(monkeypatch, pad_limit):
    # Identical vectors make every column a candidate (both the padded and the sort path).
    monkeypatch.setattr(knn, "_PAD_LIMIT", pad_limit)
    rng = np.random.default_rng(10)
    x = np.concatenate([np.tile(knn.normalize(np.ones((1, 3))), (400, 1)), _unit(rng, 100, 3)])
    nb = knn.knn(x, 4, block_rows=250)
    assert np.array_equal(nb.index[0], [1, 2, 3, 4])
    assert np.array_equal(nb.index[399], [0, 1, 2, 3])
    assert np.array_equal(nb.index, knn.brute_force(x, 4).index)


def test_fewer_candidates_than_k_are_padded():
    x = knn.normalize(np.eye(3))
    nb = knn.knn(x, 5)
    assert (nb.counts() == 2).all()
    assert (nb.index[:, 2:] == -1).all() and np.isinf(nb.distance[:, 2:]).all()
    assert np.isinf(nb.radius()).all()
    groups = np.array(["a", "a", "b"])
    nb = knn.knn(x, 5, groups=groups, exclude_same_group=True)
    assert list(nb.index[0][:2]) == [2, -1] and list(nb.index[2][:3]) == [0, 1, -1]


def test_subset_rows_and_search_match_the_full_computation():
    rng = np.random.default_rng(5)
    x = _clustered(rng, 300, 10)
    full = knn.knn(x, 6)
    rows = np.array([3, 77, 150, 299])
    part = knn.knn(x, 6, rows=rows)
    assert np.array_equal(part.rows, rows)
    assert np.array_equal(part.index, full.index[rows])
    s = knn.search(x, x[rows], 6, exclude_rows=rows)
    assert np.array_equal(s.index, full.index[rows])
    q = _unit(rng, 5, 10)
    s = knn.search(x, q, 6)
    d = np.linalg.norm(q[:, None, :].astype(np.float64) - x[None].astype(np.float64), axis=2)
    ref = np.argsort(d, axis=1, kind="stable")[:, :6]
    assert np.array_equal(s.index, ref)


def test_search_excludes_the_query_group():
    rng = np.random.default_rng(6)
    x = _clustered(rng, 100, 6)
    groups = np.array([f"P{i % 9}" for i in range(100)])
    q = x[:4]
    s = knn.search(x, q, 5, groups=groups, query_groups=groups[:4])
    ref = knn.brute_force(x, 5, groups, exclude_same_group=True)
    assert np.array_equal(s.index, ref.index[:4])


@pytest.mark.parametrize("replace", [False, True])
def test_incremental_update_equals_full_recompute(replace):
    rng = np.random.default_rng(7 + replace)
    n_old, n_new, k = 500, 40, 10
    x_old = _clustered(rng, n_old, 16)
    old = knn.knn(x_old, k)
    x = np.concatenate([x_old, _clustered(rng, n_new, 16)])
    changed = np.arange(n_old, n_old + n_new)
    if replace:  # some existing lesions are re-embedded as well
        moved = np.array([5, 123, 400])
        x[moved] = _unit(rng, 3, 16)
        changed = np.concatenate([moved, changed])
    old_in_new_space = knn.Neighbours(old.rows, old.index, old.distance)
    affected = knn.affected_rows(x, old_in_new_space, changed)
    assert len(affected) < n_old + n_new  # only part is recomputed
    part = knn.knn(x, k, rows=affected)
    index = np.vstack([old.index, np.full((n_new, k), -1)])
    dist = np.vstack([old.distance, np.full((n_new, k), np.inf)])
    index[affected], dist[affected] = part.index, part.distance
    full = knn.knn(x, k)
    assert np.array_equal(index, full.index)
    assert np.array_equal(dist, full.distance)
    # every row whose list changed was flagged
    changed_rows = np.flatnonzero((full.index[:n_old] != old.index).any(axis=1))
    assert set(changed_rows) <= set(affected)


def test_affected_by_radius_needs_the_lists_for_re_embedded_rows():
    rng = np.random.default_rng(9)
    x_old = _clustered(rng, 300, 8)
    old = knn.knn(x_old, 6)
    x = np.concatenate([x_old, _clustered(rng, 20, 8)])
    radius = np.concatenate([old.radius(), np.full(20, np.inf)])
    new = np.arange(300, 320)
    by_radius = knn.affected_by_radius(x, radius, new)
    by_lists = knn.affected_rows(x, old, new)
    assert set(by_radius) == set(by_lists)
    # a re-embedded row: the rows listing it must be named, or they keep a stale neighbour
    x[10] = _unit(rng, 1, 8)[0]
    pointing = np.flatnonzero((old.index == 10).any(axis=1))
    rows = knn.affected_by_radius(x, radius, np.concatenate([[10], new]), pointing_at_changed=pointing)
    part = knn.knn(x, 6, rows=rows)
    index = np.vstack([old.index, np.full((20, 6), -1)])
    index[rows] = part.index
    assert np.array_equal(index[:300], knn.knn(x, 6).index[:300])


def test_memory_bound_by_block_rows():
    assert knn.block_rows_for(1_000_000, memory_mb=64) == 11
    assert knn.block_rows_for(10, memory_mb=64) == 2048
    assert knn.block_rows_for(0) >= 1


def test_bad_input_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="zero or not finite"):
        knn.normalize(np.array([[0.0, 0.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="L2-normalised"):
        knn.knn(np.array([[3.0, 4.0], [1.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="2-D"):
        knn.normalize(np.ones(3))
    with pytest.raises(ValueError, match="groups"):
        knn.knn(knn.normalize(np.eye(3)), 1, exclude_same_group=True)
    with pytest.raises(ValueError, match="dimension"):
        knn.search(knn.normalize(np.eye(3)), knn.normalize(np.ones((1, 2))), 1)
