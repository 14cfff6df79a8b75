"""Triplet losses along sampled sequences (pytorch-metric-learning style: distance + sampler + loss).

For a sequence ``[A, B1, …, Bn]`` from :class:`lesiondb.nn.sampling.SequentialSampler`, the loss is

    L = mean over valid i of  max(0, d(A, B_i) − d(A, B_{i+1}) + m_i)

with ``m_i = margin`` for same-type steps and ``type_margin`` for the last step (into another type).
"""
from __future__ import annotations

import torch
from torch import nn


class LpDistance:
    """Row-wise Euclidean distance (``power=1``) or its square (``power=2``)."""

    def __init__(self, power: int = 2):
        if power not in (1, 2):
            raise ValueError("power must be 1 (Euclidean) or 2 (squared Euclidean)")
        self.power = power

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sq = ((a - b) ** 2).sum(-1)
        # sqrt has an infinite gradient at 0: keep it finite for identical vectors
        return sq if self.power == 2 else torch.sqrt(sq.clamp_min(1e-12))

    def __repr__(self) -> str:
        return f"LpDistance(power={self.power})"


DISTANCES = {"euclidean": lambda: LpDistance(1), "sqeuclidean": lambda: LpDistance(2)}


class SequentialTripletLoss(nn.Module):
    """Triplet margin loss along sequences of decreasing similarity.

    ``forward(embeddings (N, D), sequences (M, L) long, valid (M, L - 2) bool | None)``: sequences
    index rows of ``embeddings`` (column 0 the anchor, -1 = missing); ``valid[:, i]`` says whether the
    triplet (A, B_{i+1}, B_{i+2}) counts. Returns the mean over valid triplets (0 when none).
    """

    def __init__(self, margin: float = 0.1, type_margin: float | None = None,
                 distance: LpDistance | str = "sqeuclidean"):
        super().__init__()
        self.margin = float(margin)
        self.type_margin = float(margin if type_margin is None else type_margin)
        self.distance = DISTANCES[distance]() if isinstance(distance, str) else distance
        self.last_stats: dict[str, float] = {}

    def forward(self, embeddings: torch.Tensor, sequences: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        seq = torch.as_tensor(sequences, device=embeddings.device, dtype=torch.long)
        n_b = seq.shape[1] - 1
        if n_b < 2:
            raise ValueError("sequences need an anchor and at least two others")
        present = seq >= 0
        if valid is None:
            valid = present[:, 1:-1] & present[:, 2:]
        valid = torch.as_tensor(valid, device=embeddings.device, dtype=torch.bool)
        emb = embeddings[seq.clamp_min(0)]  # (M, L, D); missing rows masked below
        d = self.distance(emb[:, :1], emb[:, 1:])  # (M, L - 1)
        margins = torch.full((n_b - 1,), self.margin, device=embeddings.device, dtype=embeddings.dtype)
        margins[-1] = self.type_margin
        viol = torch.relu(d[:, :-1] - d[:, 1:] + margins)  # (M, L - 2)
        viol = viol * valid
        count = valid.sum()
        self.last_stats = {"triplets": float(count), "active": float(((viol > 0) & valid).sum())}
        if count == 0:
            return embeddings.sum() * 0.0
        return viol.sum() / count
