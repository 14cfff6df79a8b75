"""Sequential sampling and pseudo-labels."""
from __future__ import annotations

import numpy as np

from lesiondb.core.metrics import relative_size_difference
from lesiondb.nn.sampling import PseudoLabeler, SequentialSampler, metadata_features


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 5, n), rng.random((n, 3)), rng.uniform(5, 60, (n, 2))


def test_sequences_same_type_by_increasing_distance_then_other_type():
    types, loc, size = _data()
    s = SequentialSampler(n_same=4, size_weight=0.5)
    seqs, valid = s.sample(types, loc, size, np.arange(80), np.random.default_rng(1))
    assert seqs.shape == (80, 6) and valid.shape == (80, 4)
    for a, *bs in seqs:
        same, other = bs[:-1], bs[-1]
        assert all(types[b] == types[a] and b != a for b in same)
        assert len(set(same)) == len(same)
        assert types[other] != types[a]
        d = [np.linalg.norm(loc[a] - loc[b]) + 0.5 * relative_size_difference(size[a], size[b]) for b in same]
        assert d == sorted(d)
    assert valid.all()


def test_sampling_is_reproducible_and_near_k_draws_a_close_first_member():
    types, loc, size = _data()
    s = SequentialSampler(n_same=3, near_k=2)
    a1 = s.sample(types, loc, size, np.arange(80), np.random.default_rng(5))[0]
    a2 = s.sample(types, loc, size, np.arange(80), np.random.default_rng(5))[0]
    assert (a1 == a2).all()
    for row in a1:
        a = row[0]
        same = np.flatnonzero((types == types[a]) & (np.arange(80) != a))
        d = np.linalg.norm(loc[same] - loc[a], axis=1) + relative_size_difference(
            np.broadcast_to(size[a], size[same].shape), size[same])
        assert row[1] in same[np.argsort(d, kind="stable")[:2]]


def test_rare_types_and_unlabelled_anchors():
    types = np.array([1, 1, 2, 3, -1])
    loc = np.zeros((5, 3))
    loc[:, 0] = [0.0, 0.1, 0.5, 0.9, 0.2]
    size = np.full((5, 2), 10.0)
    seqs, valid = SequentialSampler(n_same=3).sample(types, loc, size, np.arange(5), np.random.default_rng(0))
    # type 1 has one other member: it is repeated so the type step stays last
    assert list(seqs[0][1:4]) == [1, 1, 1] and types[seqs[0][4]] != 1
    assert list(valid[0]) == [False, False, True]
    # type 2 has no other member: (A, A, other)
    assert list(seqs[2][1:4]) == [2, 2, 2] and list(valid[2]) == [False, False, True]
    # an unlabelled anchor gets no sequence
    assert (seqs[4][1:] == -1).all() and not valid[4].any()


def test_pseudo_labeler_propagates_labels_and_falls_back_to_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [5, 5], [0, 5]])
    truth = np.repeat([1, 2, 3], 30)
    X = centres[truth - 1] + rng.normal(0, 0.5, (90, 2))
    labels = truth.copy()
    hidden = rng.random(90) < 0.7
    labels[hidden] = -1
    pl = PseudoLabeler(k=5).fit(X, labels)
    assert (pl.labels_[~hidden] == truth[~hidden]).all()
    assert (pl.labels_[hidden] == truth[hidden]).mean() > 0.95
    assert (pl.pseudo_mask_ == hidden).all()
    # nothing labelled: k-means clusters stand in for types (a relabelling of the truth)
    pl = PseudoLabeler(n_clusters=3, random_state=0).fit(X, np.full(90, -1))
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, pl.labels_) > 0.9


def test_metadata_features_shape():
    types, loc, size = _data(10)
    f = metadata_features(loc, size)
    assert f.shape == (10, 5) and np.allclose(f[:, :3], loc)
