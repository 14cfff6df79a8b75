"""The paper's evaluation of an encoder on a patch set, against the baselines; and the
metadata-only type accuracy on DeepLesion's DL_info (no images).

Baselines: ``location_only`` (the normalised (x, y, z) location as the feature vector) and
``untrained`` (the same encoder config with random init, seeded). Measures: :mod:`lesiondb.core.metrics`.
torch is imported only by the functions that need it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import beats, evaluate_embedding, knn_classification_accuracy, knn_predict

BASELINES = ("location_only", "untrained")


def untrained_like(model, seed: int = 0):
    """The same encoder config, randomly initialised with ``seed``."""
    import torch

    from .encoders import create_encoder

    cfg = dict(model.config)
    name = cfg.pop("name")
    torch.manual_seed(seed)
    return create_encoder(name, **cfg).eval()


def evaluate_model_on(model, data, k: int = 5, *, seed: int = 0, exclude_same_patient: bool = True,
                      batch_size: int = 256) -> dict[str, Any]:
    """``{"retrieval": …, "classification_accuracy": …, "clustering": …, "baselines": {name: …},
    "beats_baselines": {name: {measure: bool}}}`` for a model on a :class:`PatchSet`."""
    from .infer import embed_patches, prepare_for_inference

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


def size_features(sizes_mm: np.ndarray, ref: np.ndarray | None = None, weight: float = 0.1) -> np.ndarray:
    """log RECIST diameters, standardised on ``ref`` (default: themselves), scaled to sit beside
    normalised locations (whose spread is ~0.1–0.2)."""
    logs = np.log(np.maximum(np.asarray(sizes_mm, dtype=np.float64), 1e-3))
    r = logs if ref is None else np.log(np.maximum(np.asarray(ref, dtype=np.float64), 1e-3))
    return (logs - r.mean(0)) / (r.std(0) + 1e-9) * weight


def metadata_type_accuracy(dl_info: str | Path, k: int = 5) -> dict[str, Any]:
    """kNN type accuracy from normalised location (and size) alone on DL_info's labelled val/test rows.

    Two settings: ``val_to_test`` (val rows are the reference, test rows are classified) and
    ``leave_one_out`` (val + test, neighbours from other patients only). Features: ``location``
    (x, y, z) and ``location_size`` (plus standardised log long/short diameters).
    """
    from ..core.pseudonym import Pseudonymizer
    from ..datasets.deeplesion import RowError, read_dl_info

    rows = [r for r in read_dl_info(dl_info, Pseudonymizer(b"lesiondb-eval-metadata-only")) if not isinstance(r, RowError)]
    keep = [r for r in rows if r.lesion.split in ("val", "test") and r.lesion.type_code > 0]
    if not keep:
        from ..errors import InputError

        raise InputError("no labelled val/test rows (Coarse_lesion_type 1..8 with Train_Val_Test 2 or 3)",
                         str(dl_info))
    loc = np.array([r.lesion.location for r in keep], dtype=np.float64)
    size = np.array([(r.lesion.long_diameter_mm, r.lesion.short_diameter_mm) for r in keep])
    types = np.array([r.lesion.type_code for r in keep])
    split = np.array([r.lesion.split for r in keep])
    groups = np.array([r.patient.patient_id for r in keep])
    feats = {"location": loc, "location_size": np.concatenate([loc, size_features(size)], axis=1)}
    val, test = split == "val", split == "test"
    acc: dict[str, dict[str, float]] = {"val_to_test": {}, "leave_one_out": {}}
    for name, X in feats.items():
        if val.any() and test.any():
            if name == "location_size":  # standardise on the reference rows only
                X = np.concatenate([loc, size_features(size, size[val])], axis=1)
            pred = knn_predict(X[val], types[val], X[test], k=k)
            acc["val_to_test"][name] = float((pred == types[test]).mean())
        acc["leave_one_out"][name] = knn_classification_accuracy(feats[name], types, k=k, groups=groups)
    majority = np.bincount(types[test] if test.any() else types).argmax()
    return {"source": str(dl_info), "k": k, "labelled_rows": int(len(keep)), "val_rows": int(val.sum()),
            "test_rows": int(test.sum()), "accuracy": acc,
            "majority_class_accuracy": float(((types[test] if test.any() else types) == majority).mean()),
            "paper_location_only_baseline": 0.597}
