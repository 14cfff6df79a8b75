"""The source identifiers of a synthetic cohort, for the privacy checks (graph, files, JSON, pages)."""
from __future__ import annotations

from pathlib import Path

from lesiondb.datasets.cohort import read_ground_truth


def source_identifiers(root: Path) -> set[str]:
    """Every source identifier of the cohort at ``root``: patient ids, study and series UIDs,
    study dates in both the ISO and the DICOM form."""
    gt = read_ground_truth(root)
    out = set()
    for p in gt.patients:
        out.add(p["patient_id"])
        for s in p["studies"]:
            out |= {s["study_uid"], s["series_uid"], s["study_date"], s["study_date"].replace("-", "")}
    return out
