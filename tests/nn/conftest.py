"""Fixtures for the encoder tests: small patch sets made in numpy (no cohort, no DICOM)."""
from __future__ import annotations

import numpy as np
import pytest

from lesiondb.imaging.patches import PatchSpec
from lesiondb.nn.data import PatchSet

TYPE_HU = {1: 700.0, 4: -40.0, 5: 150.0, 6: 400.0}  # lesion HU per type on a 40 HU background
TEXTURE = {1: 0.0, 4: 0.25, 5: 0.5, 6: 0.75}  # background stripe phase per type (organ context)


def toy_patchset(n: int = 96, size: int = 32, seed: int = 0, types=(1, 4, 5, 6)) -> PatchSet:
    """Lesions whose type sets the blob's HU and the context texture, whose size sets the blob
    radius and whose location shifts the background level: learnable in a few steps on CPU."""
    rng = np.random.default_rng(seed)
    spec = PatchSpec(size_px=size, spacing_mm=1.0, context_mm=4.0)
    t = rng.choice(np.array(types), n)
    loc = rng.random((n, 3)).astype(np.float32)
    long_mm = rng.uniform(4, 12, n).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((n, 3, size, size), np.float32)
    boxes = np.empty((n, 4), np.float32)
    c = size / 2.0
    for i in range(n):
        bg = 40.0 + 200.0 * (loc[i, 2] - 0.5) + 80.0 * np.sin(xx / 3.0 + 2 * np.pi * TEXTURE[int(t[i])])
        r = long_mm[i] / 2.0
        blob = ((xx - c) ** 2 + (yy - c) ** 2) <= r * r
        sl = np.where(blob, TYPE_HU[int(t[i])], bg) + rng.normal(0, 10, (size, size))
        images[i] = np.clip((sl + 1024.0) / 2048.0, 0, 1)[None]
        boxes[i] = (c - r, c - r, c + r, c + r)
    return PatchSet(images.astype(np.float16), boxes, t.astype(np.int64), loc,
                    np.stack([long_mm, long_mm * 0.7], 1), np.array([f"P{i // 3:03d}" for i in range(n)]),
                    np.array([f"A{i:04d}" for i in range(n)]), spec)


@pytest.fixture
def toy():
    return toy_patchset()


TINY_ENCODER = {"width": 8, "depths": [1, 1], "feature_stages": [0, 1], "roi_size": [2, 1], "stage_dim": 16,
                "embed_dim": 16}
