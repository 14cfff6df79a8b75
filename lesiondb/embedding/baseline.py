"""The paper's metadata-only baseline: kNN type accuracy from the normalised location (and size)
alone on DeepLesion's DL_info (``lesiondb eval embedding DL_info.csv --metadata-only``; no images)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.metrics import knn_classification_accuracy, knn_predict
from ..core.pseudonym import Pseudonymizer
from ..datasets.deeplesion import RowError, read_dl_info
from ..errors import InputError


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
    rows = [r for r in read_dl_info(dl_info, Pseudonymizer(b"lesiondb-eval-metadata-only")) if not isinstance(r, RowError)]
    keep = [r for r in rows if r.lesion.split in ("val", "test") and r.lesion.type_code > 0]
    if not keep:
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
