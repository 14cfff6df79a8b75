"""The paper's measures against naive re-implementations and hand-worked examples."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from lesiondb.core.metrics import (
    beats,
    clustering_scores,
    evaluate_embedding,
    flatten,
    knn_classification_accuracy,
    knn_indices,
    knn_predict,
    knn_vote,
    purity,
    retrieval_errors,
)


def _naive_neighbours(X, q, k, groups=None, allowed=None):
    d = [(float(np.sum((X[q] - X[j]) ** 2)), j) for j in range(len(X))
         if j != q and (groups is None or groups[j] != groups[q]) and (allowed is None or allowed[j])]
    return [j for _, j in sorted(d)[:k]]


def test_knn_indices_match_naive_search_with_groups_and_candidates():
    rng = np.random.default_rng(3)
    X = rng.random((60, 4))
    groups = rng.integers(0, 12, 60)
    allowed = rng.random(60) > 0.3
    nn = knn_indices(X, 5, groups, candidates=allowed)
    for q in range(60):
        assert list(nn[q]) == _naive_neighbours(X, q, 5, groups, allowed)


def test_knn_indices_pads_when_too_few_neighbours_and_breaks_ties_by_index():
    X = np.zeros((4, 2))  # all at the same point: ties everywhere
    nn = knn_indices(X, 3, groups=np.array([0, 0, 1, 2]))
    assert list(nn[0]) == [2, 3, -1]
    assert list(nn[2]) == [0, 1, 3]


def test_retrieval_errors_on_a_hand_worked_example():
    # two tight pairs far apart; k = 1: each lesion retrieves its pair partner
    X = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]])
    types = np.array([1, 1, 2, 3])
    loc = np.array([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    sizes = np.array([10.0, 20.0, 30.0, 30.0])
    r = retrieval_errors(X, types, loc, sizes, k=1)
    assert r["type_error_at_1"] == pytest.approx(0.5)  # pair 1 agrees, pair 2 does not
    assert r["location_error_at_1"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    assert r["size_error_at_1"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)


def test_retrieval_errors_match_a_naive_loop():
    rng = np.random.default_rng(7)
    n, k = 50, 5
    X = rng.normal(size=(n, 3))
    types = rng.integers(1, 4, n)
    types[:5] = -1  # unlabelled: not queries or neighbours for type error
    loc = rng.random((n, 3))
    sizes = rng.uniform(5, 50, (n, 2))
    groups = rng.integers(0, 15, n)
    r = retrieval_errors(X, types, loc, sizes, k=k, groups=groups)
    te, le, se = [], [], []
    for q in range(n):
        nb = _naive_neighbours(X, q, k, groups)
        le.append(np.mean([np.linalg.norm(loc[q] - loc[j]) for j in nb]))
        se.append(np.mean([np.mean(np.abs(sizes[q] - sizes[j]) / np.maximum(sizes[q], sizes[j])) for j in nb]))
        if types[q] >= 0:
            nb_t = _naive_neighbours(X, q, k, groups, types >= 0)
            te.append(np.mean([types[j] != types[q] for j in nb_t]))
    assert r["type_error_at_5"] == pytest.approx(np.mean(te))
    assert r["location_error_at_5"] == pytest.approx(np.mean(le))
    assert r["size_error_at_5"] == pytest.approx(np.mean(se))


def test_knn_vote_majority_and_nearest_tie_break():
    v = knn_vote(np.array([[2, 3, 3, 2, 5], [4, 1, 1, 4, -1], [-1, -1, -1, -1, -1], [7, 8, 8, 8, 7]]))
    assert list(v) == [2, 4, -1, 8]  # [2,2 vs 3,3]: 2 is nearest; [4,4 vs 1,1]: 4 nearest


def test_knn_classification_accuracy_leave_one_out():
    # two clusters, one mislabelled point inside cluster A
    X = np.array([[0, 0], [0, 0.1], [0.1, 0], [0.1, 0.1], [9, 9], [9, 9.1], [9.1, 9]], dtype=float)
    types = np.array([1, 1, 1, 2, 2, 2, 2])
    acc = knn_classification_accuracy(X, types, k=3)
    # point 3 (type 2) sits among type-1 points: wrong; every other point right
    assert acc == pytest.approx(6 / 7)
    assert list(knn_predict(X[:3], types[:3], np.array([[0.05, 0.05]]), k=3)) == [1]


def test_purity_and_nmi_against_definitions():
    t = np.array([1, 1, 1, 2, 2, 3, 3, 3])
    p = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    # cluster 0: {1,1,3} → 2; cluster 1: {1,2,2} → 2; cluster 2: {3,3} → 2
    assert purity(t, p) == pytest.approx(6 / 8)
    X = np.array([[0.0], [0.1], [5.0], [5.1], [10.0], [10.1]])
    types = np.array([4, 4, 5, 5, 6, 6])
    c = clustering_scores(X, types, random_state=0)
    assert c["purity"] == 1.0 and c["nmi"] == pytest.approx(1.0)
    shuffled = np.array([4, 5, 6, 4, 5, 6])
    c2 = clustering_scores(X, shuffled, random_state=0)
    pred = np.array([0, 0, 1, 1, 2, 2])
    assert c2["nmi"] == pytest.approx(normalized_mutual_info_score(shuffled, pred))
    assert c2["purity"] < 1.0


def test_evaluate_embedding_keys_and_beats():
    rng = np.random.default_rng(0)
    types = np.repeat([1, 2, 3], 20)
    X_good = np.eye(3)[types - 1] + rng.normal(0, 0.05, (60, 3))
    X_bad = rng.normal(size=(60, 3))
    loc = rng.random((60, 3))
    sizes = rng.uniform(5, 30, 60)
    good = evaluate_embedding(X_good, types, loc, sizes)
    bad = evaluate_embedding(X_bad, types, loc, sizes)
    assert set(flatten(good)) == {"retrieval.type_error_at_5", "retrieval.location_error_at_5",
                                  "retrieval.size_error_at_5", "classification_accuracy",
                                  "clustering.purity", "clustering.nmi"}
    assert good["retrieval"]["type_error_at_5"] == 0.0 and good["classification_accuracy"] == 1.0
    b = beats(good, bad)
    assert b["retrieval.type_error_at_5"] and b["classification_accuracy"] and b["clustering.nmi"]
    assert not beats(bad, good)["classification_accuracy"]
