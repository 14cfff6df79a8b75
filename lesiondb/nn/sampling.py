"""Sequential sampling (Yan et al., CVPR 2018, §4.2) and pseudo-labels for unlabelled lesions.

For an anchor A the sampler draws a sequence B1 … Bn of decreasing similarity: ``n_same`` lesions
of A's type sorted by increasing location+size distance to A, then one lesion of another type.
The triplet loss along the sequence (see :mod:`lesiondb.nn.losses`) then asks
d(A, B1) < d(A, B2) < … < d(A, Bn): the embedding orders by type first, then location and size.

Location+size distance: ``d_ls = ‖loc_A − loc_B‖₂ + size_weight · rel(size_A, size_B)`` with ``loc``
the normalised (x, y, z) body location and ``rel`` the mean relative difference of the RECIST long
and short diameters (``|a − b| / max(a, b)``).

Types come from labels or, for unlabelled lesions (DeepLesion's training split has none),
pseudo-labels (:class:`PseudoLabeler`): K-NN votes of the labelled lesions in the current
embedding (k-means clusters when nothing is labelled), refreshed as training goes on.

Pure numpy (+ scikit-learn for k-means); randomness only from the ``rng`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.metrics import knn_predict, relative_size_difference


@dataclass
class SequentialSampler:
    """Draws sequences ``[A, B1, …, B_n_same, B_other]`` (indices; -1 where none exists).

    ``near_k > 0`` draws B1 from A's ``near_k`` nearest same-type lesions by ``d_ls`` (the others
    uniformly), so that the fine end of the location/size order is seen often; 0 is the paper's
    uniform draw.
    """

    n_same: int = 3
    size_weight: float = 1.0
    near_k: int = 0

    def ls_distance(self, locations: np.ndarray, sizes_mm: np.ndarray, a: int, b: np.ndarray) -> np.ndarray:
        """Location+size distance from lesion ``a`` to lesions ``b``."""
        dl = np.linalg.norm(locations[b] - locations[a], axis=-1)
        ds = relative_size_difference(np.broadcast_to(sizes_mm[a], sizes_mm[b].shape), sizes_mm[b])
        return dl + self.size_weight * ds

    def sample(self, types, locations, sizes_mm, anchors, rng: np.random.Generator,
               groups=None) -> tuple[np.ndarray, np.ndarray]:
        """Sequences (n_anchors, n_same + 2) and the validity of each consecutive triplet (…, n_same + 1).

        Triplet ``i`` is (A, B_i, B_{i+1}); it is invalid when either is missing, when both are the
        same lesion, or when their location+size distances tie (no order to learn).
        ``groups`` is accepted for API symmetry and not used: the same lesion in a follow-up study
        is legitimately the most similar one.
        """
        types = np.asarray(types)
        loc = np.asarray(locations, dtype=np.float64)
        size = np.asarray(sizes_mm, dtype=np.float64)
        size = size[:, None] if size.ndim == 1 else size
        by_type = {t: np.flatnonzero(types == t) for t in np.unique(types[types >= 0])}
        typed = np.flatnonzero(types >= 0)
        L = self.n_same + 2
        seqs = np.full((len(anchors), L), -1, dtype=np.int64)
        dls = np.full((len(anchors), L - 1), np.nan)
        for r, a in enumerate(np.asarray(anchors, dtype=np.int64)):
            seqs[r, 0] = a
            t = types[a]
            if t < 0:
                continue
            same = by_type[t]
            same = same[same != a]
            if len(same):
                take = min(self.n_same, len(same))
                if self.near_k > 0:
                    d_all = self.ls_distance(loc, size, a, same)
                    near = same[np.argsort(d_all, kind="stable")[: self.near_k]]
                    first = rng.choice(near, 1)
                    rest_pool = same[same != first[0]]
                    rest = rng.choice(rest_pool, min(take - 1, len(rest_pool)), replace=False)
                    picks = np.concatenate([first, rest])
                else:
                    picks = rng.choice(same, take, replace=False)
                d = self.ls_distance(loc, size, a, picks)
                order = np.argsort(d, kind="stable")
                picks, d = picks[order], d[order]
                # too few of this type: repeat the farthest so the type step stays last
                pad = self.n_same - len(picks)
                seqs[r, 1:-1] = np.concatenate([picks, np.repeat(picks[-1:], pad)])
                dls[r, :-1] = np.concatenate([d, np.repeat(d[-1:], pad)])
            else:
                seqs[r, 1:-1] = a  # no other lesion of this type: (A, A, B_other) still pushes B_other away
            other = typed[types[typed] != t]
            if len(other):
                seqs[r, L - 1] = rng.choice(other)
        valid = (seqs[:, 1:-1] >= 0) & (seqs[:, 2:] >= 0) & (seqs[:, 1:-1] != seqs[:, 2:])
        # same-type steps need a strict location+size order; the last step (other type) always has one
        ties = np.zeros_like(valid)
        ties[:, :-1] = ~(dls[:, 1:-1] > dls[:, :-2])
        valid &= ~ties
        return seqs, valid


class PseudoLabeler:
    """Types for unlabelled lesions from features (embeddings, or location+size at the start).

    ``fit(features, labels)``: labelled lesions keep their label; each unlabelled one gets the
    majority type of its ``k`` nearest labelled lesions. With no labelled lesion at all, k-means
    clusters (``n_clusters``) stand in for types, as in the paper's iterative refinement.
    """

    def __init__(self, k: int = 10, n_clusters: int = 8, random_state: int = 0):
        self.k = k
        self.n_clusters = n_clusters
        self.random_state = random_state

    def fit(self, features, labels) -> PseudoLabeler:
        X = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64)
        out = y.copy()
        known = y >= 0
        if known.all():
            pass
        elif known.any():
            out[~known] = knn_predict(X[known], y[known], X[~known], k=self.k)
        else:
            from sklearn.cluster import KMeans  # 1.3 s to import: only for pseudo-labels

            k = min(self.n_clusters, len(X))
            out = KMeans(n_clusters=k, n_init=10, random_state=self.random_state).fit_predict(X).astype(np.int64)
        self.labels_ = out
        self.pseudo_mask_ = ~known
        return self


def metadata_features(locations, sizes_mm, size_weight: float = 1.0) -> np.ndarray:
    """Normalised location plus log-size features: the starting point of pseudo-labelling."""
    loc = np.asarray(locations, dtype=np.float64)
    size = np.asarray(sizes_mm, dtype=np.float64)
    size = size[:, None] if size.ndim == 1 else size
    logs = np.log(np.maximum(size, 1e-3))
    logs = (logs - logs.mean(0)) / (logs.std(0) + 1e-9) * 0.1 * size_weight
    return np.concatenate([loc, logs], axis=1)
