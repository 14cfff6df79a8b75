"""The paper's evaluation of an encoder on a patch set, against the baselines (the metadata-only
type accuracy on DL_info, which needs no torch, is :mod:`lesiondb.embedding.baseline`).

Baselines: ``location_only`` (the normalised (x, y, z) location as the feature vector) and
``untrained`` (the same encoder config with random init, seeded). Measures: :mod:`lesiondb.core.metrics`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.metrics import beats, evaluate_embedding
from .encoders import create_encoder
from .infer import embed_patches, prepare_for_inference

BASELINES = ("location_only", "untrained")


def untrained_like(model, seed: int = 0):
    """The same encoder config, randomly initialised with ``seed``."""
    cfg = dict(model.config)
    name = cfg.pop("name")
    torch.manual_seed(seed)
    return create_encoder(name, **cfg).eval()


def evaluate_model_on(model, data, k: int = 5, *, seed: int = 0, exclude_same_patient: bool = True,
                      batch_size: int = 256) -> dict[str, Any]:
    """``{"retrieval": …, "classification_accuracy": …, "clustering": …, "baselines": {name: …},
    "beats_baselines": {name: {measure: bool}}}`` for a model on a :class:`PatchSet`."""
    groups = data.groups if exclude_same_patient else None

    def score(X: np.ndarray) -> dict:
        return evaluate_embedding(X, data.types, data.locations, data.sizes_mm, k=k, groups=groups,
                                  random_state=seed)

    emb = embed_patches(prepare_for_inference(model), data.images, data.boxes, batch_size)
    out = score(emb)
    base = {
        "location_only": score(np.asarray(data.locations, dtype=np.float64)),
        "untrained": score(embed_patches(untrained_like(model, seed), data.images, data.boxes, batch_size)),
    }
    out["baselines"] = base
    out["beats_baselines"] = {name: beats(out, b) for name, b in base.items()}
    out["lesions"] = int(len(data))
    out["k"] = k
    out["exclude_same_patient"] = exclude_same_patient
    return out
