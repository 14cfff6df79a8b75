"""Small lesion graphs with embeddings, for the similarity, service, CLI and cookbook tests.

Lesions carry a type label on two thirds of them; embeddings are clustered by type (so the
services have something to find) with explicit ids, patients and studies.
"""
from __future__ import annotations

import numpy as np

from lesiondb.core.records import LESION_TYPES

DIM = 16


def lesion_rows(n: int, seed: int = 0, n_patients: int | None = None, prefix: str = "L"):
    """``upsert_lesions`` rows and the ground truth: (rows, types (1..8), vectors (n, DIM))."""
    rng = np.random.default_rng(seed)
    n_patients = n_patients or max(2, n // 8)
    types = rng.integers(1, 9, n)
    centres = np.random.default_rng(1234).normal(size=(9, DIM)) * 1.5
    vectors = centres[types] + rng.normal(size=(n, DIM))
    rows = []
    for i in range(n):
        pid = f"P-{i % n_patients:04d}"
        labelled = i % 3 != 0
        lesion = {"lesionId": f"{prefix}-{i:05d}", "source": "synthetic", "typeCode": int(types[i]) if labelled else -1,
                  "labelled": labelled, "longDiameterMm": float(10 + i % 30), "locationX": 0.5, "locationY": 0.5,
                  "locationZ": float(i % 10) / 10, "contentHash": f"h{i}"}
        if labelled:
            lesion["typeName"] = LESION_TYPES[int(types[i])]
        rows.append({"patient": {"patientId": pid, "source": "synthetic"},
                     "study": {"studyId": f"S-{pid}-{i % 2}", "studyIndex": 1 + i % 2},
                     "lesion": lesion})
    return rows, types, vectors


def build(engine, n: int = 120, seed: int = 0, k: int = 5, model_id: str = "model-a", embed: int | None = None,
          cache_dir=None, n_patients: int | None = None):
    """Write ``n`` lesions, embed the first ``embed`` (default all) with ``model_id``, mark the
    rest as without image. Returns (ids, patients, types, vectors, report)."""
    from lesiondb.embedding import store as sim

    rows, types, vectors = lesion_rows(n, seed, n_patients)
    engine.write("upsert_lesions", rows)
    ids = [r["lesion"]["lesionId"] for r in rows]
    patients = [r["patient"]["patientId"] for r in rows]
    m = n if embed is None else embed
    report = sim.embed_arrays(engine, sim.ModelInfo(model_id, "test-encoder", DIM), ids[:m], vectors[:m],
                              patients[:m], [int(t) if i % 3 else -1 for i, t in enumerate(types[:m])],
                              k=k, cache_dir=cache_dir, missing=[(i, "no image") for i in ids[m:]])
    return ids, patients, types, vectors, report


def make_tiny_model(folder):
    """An untrained encoder saved like a trained one (the pipeline only needs its shape and id)."""
    import torch

    from lesiondb.imaging.patches import PatchSpec
    from lesiondb.nn.encoders import create_encoder
    from lesiondb.nn.model_io import save_model

    torch.manual_seed(0)
    path = folder / "tiny"
    save_model(create_encoder("resnet18_ms", width=8, embed_dim=32), path, patch=PatchSpec(size_px=48))
    return path


def make_cohort(folder):
    """A 4-patient synthetic DICOM cohort (about 10 annotated lesions)."""
    from lesiondb.synth.generate import generate_cohort

    out = folder / "c"
    generate_cohort(out, 4, seed=3, images=True, workers=1)
    return out
