"""The sequential triplet loss against a naive Python loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lesiondb.nn.losses import LpDistance, SequentialTripletLoss


def _naive(emb, seqs, valid, margin, type_margin, power):
    total, count = 0.0, 0
    for r, seq in enumerate(seqs):
        a = emb[seq[0]]
        for i in range(1, len(seq) - 1):
            if not valid[r][i - 1]:
                continue
            d1 = sum((float(a[j]) - float(emb[seq[i]][j])) ** 2 for j in range(len(a)))
            d2 = sum((float(a[j]) - float(emb[seq[i + 1]][j])) ** 2 for j in range(len(a)))
            if power == 1:
                d1, d2 = d1 ** 0.5, d2 ** 0.5
            m = type_margin if i == len(seq) - 2 else margin
            total += max(0.0, d1 - d2 + m)
            count += 1
    return total / count if count else 0.0


@pytest.mark.parametrize("power", [1, 2])
def test_loss_matches_naive_loop(power):
    rng = np.random.default_rng(power)
    emb = torch.nn.functional.normalize(torch.randn(30, 8, dtype=torch.float64), dim=1)
    seqs = np.stack([rng.choice(30, 5, replace=False) for _ in range(12)])
    valid = rng.random((12, 3)) > 0.25
    loss = SequentialTripletLoss(margin=0.1, type_margin=0.3,
                                 distance=LpDistance(power))(emb, torch.from_numpy(seqs), torch.from_numpy(valid))
    assert float(loss) == pytest.approx(_naive(emb.numpy(), seqs, valid, 0.1, 0.3, power), rel=1e-9)


def test_missing_members_default_mask_and_no_valid_triplet():
    emb = torch.eye(4, dtype=torch.float64)
    seqs = torch.tensor([[0, 1, -1, 2], [1, 2, 3, 0]])
    lf = SequentialTripletLoss(margin=0.5, distance="sqeuclidean")
    # row 0: only (1, -1) and (-1, 2) involve a missing member → no triplet; row 1: both count
    expected = _naive(emb.numpy(), [[1, 2, 3, 0]], [[True, True]], 0.5, 0.5, 2)
    assert float(lf(emb, seqs)) == pytest.approx(expected)
    assert lf.last_stats["triplets"] == 2
    zero = lf(emb, seqs, torch.zeros(2, 2, dtype=torch.bool))
    assert float(zero) == 0.0


def test_gradient_pulls_nearer_member_closer():
    a = torch.tensor([[1.0, 0.0]])
    b1 = torch.tensor([[0.0, 1.0]], requires_grad=True)  # far, but should be the nearer one
    b2 = torch.tensor([[0.9, 0.1]])  # near, but should be farther
    emb = torch.cat([a, b1, b2, torch.tensor([[-1.0, 0.0]])])
    loss = SequentialTripletLoss(margin=0.1)(emb, torch.tensor([[0, 1, 2, 3]]))
    assert loss.item() > 0
    loss.backward()
    step = -b1.grad[0]
    assert float(step @ (a[0] - b1[0].detach())) > 0  # gradient descent moves B1 towards A


def test_satisfied_sequence_has_zero_loss():
    emb = torch.tensor([[0.0], [0.1], [0.5], [2.0]])
    assert float(SequentialTripletLoss(margin=0.05, type_margin=0.5)(emb, torch.tensor([[0, 1, 2, 3]]))) == 0.0
