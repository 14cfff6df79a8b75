"""Evaluate missing-annotation mining on a synthetic cohort folder (ground truth known).

Tracks are the ground-truth tracks of the *annotated* instances, so the figures isolate mining from
matching. Lesion positions come from ``annotations.csv`` through the DICOM geometry, as ingest
computes them. Withheld instances are the targets.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import mining
from .core import mining as M
from .errors import ImageError, InputError

THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)


def _cases(root: Path, max_patients: int | None):
    """Yield (case, volumes {study_uid: (hu, grid)}, load errors) per patient of the cohort."""
    from .datasets import cohort as C
    from .datasets.deeplesion import RowError
    from .imaging.dicom import read_series

    gt = C.read_ground_truth(root)
    rows_by_ann = {}
    for r in C.read_rows(root / C.ANNOTATIONS):
        if not isinstance(r, RowError):
            rows_by_ann[r.annotation_id] = r
    inst_by_patient: dict[str, list[dict]] = {}
    for i in gt.instances:
        inst_by_patient.setdefault(i["patient_id"], []).append(i)
    patients = gt.patients[:max_patients] if max_patients else gt.patients
    for p in patients:
        pid = p["patient_id"]
        errors: list[dict] = []
        volumes: dict[str, Any] = {}
        studies = []
        t_load = time.perf_counter()
        for s in p.get("studies", []):
            folder = root / C.DICOM_DIR / pid / s["study_uid"] / s["series_uid"]
            try:
                vol = read_series(folder, allow_gaps=True)
                volumes[s["study_uid"]] = (vol, vol.hu, mining.grid_from_volume(vol))
            except (ImageError, InputError) as exc:
                errors.append({"item": str(folder), "reason": str(exc)})
            studies.append(mining.StudyData(s["study_uid"], mining.study_time({"studyDate": s.get("study_date"),
                                                                                  "studyIndex": s.get("study_index")}),
                                            study_uid=s["study_uid"], series_uid=s.get("series_uid"),
                                            image_ref=str(folder)))
        t_load = time.perf_counter() - t_load
        times = {s.study_id: s.time for s in studies}
        tracks: dict[str, list[M.Observation]] = {}
        lesions: dict[str, list[M.Observation]] = {}
        props: dict[str, dict] = {}
        for inst in inst_by_patient.get(pid, []):
            if not inst.get("annotated"):
                continue
            r = rows_by_ann.get(inst.get("annotation_id"))
            sid = inst["study_uid"]
            if r is None or sid not in volumes:
                continue
            vol = volumes[sid][0]
            col, row = r.center_px
            pos = tuple(float(v) for v in vol.voxel_to_patient(col, row, r.key_slice_index))
            o = M.Observation(lesion_id=r.annotation_id, study_id=sid, time=times.get(sid, 0.0),
                              long_diameter_mm=r.long_diameter_px * r.spacing_xy_mm[0],
                              short_diameter_mm=r.short_diameter_px * r.spacing_xy_mm[0],
                              position_mm=pos, location=r.location, slice_index=r.key_slice_index,
                              center_px=(col, row))
            tracks.setdefault(inst["track_id"], []).append(o)
            lesions.setdefault(sid, []).append(o)
            props[r.annotation_id] = {"bboxPx": list(r.bbox_px), "typeCode": r.type_code}
        case = mining.PatientCase(pid, studies, tracks, lesions, props)
        yield case, {k: (v[1], v[2]) for k, v in volumes.items()}, errors, t_load, inst_by_patient.get(pid, [])


def evaluate_cohort(root: str | Path, min_score: float = mining.DEFAULT_MIN_SCORE, max_patients: int | None = None,
                    embedder: mining.Embedder | None = None, params: M.ScoreParams = M.ScoreParams(),
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Recall, precision, median error and timing of mining on one cohort (see module doc)."""
    from .datasets import cohort as C

    root = Path(root)
    if not (root / C.GROUND_TRUTH).is_file():
        raise InputError(f"no {C.GROUND_TRUTH}: evaluate a cohort written by `lesiondb synth`", str(root))
    meta = C.read_cohort_meta(root)
    if meta.get("images") is False:
        raise InputError("the cohort has no images (made with --no-images); mining needs them", str(root))
    stats = mining.MiningStats()
    errors: list[dict] = []
    load_s = 0.0
    n_studies = 0
    withheld = 0
    minable: list[tuple[str, str]] = []
    # (score / evidence factor, right, error_mm or None) of each track-study best candidate: a
    # proposal at threshold th is one with score ≥ th × its study's evidence factor
    found: list[tuple[float, bool, float | None]] = []
    for case, vols, errs, t_load, insts in _cases(root, max_patients):
        errors += errs
        load_s += t_load
        n_studies += len(vols)
        annotated_tracks = {i["track_id"] for i in insts if i.get("annotated")}
        truth: dict[tuple[str, str], dict] = {}
        for i in insts:
            if i.get("annotated"):
                continue
            withheld += 1
            truth[(i["track_id"], i["study_uid"])] = i
            if i["track_id"] in annotated_tracks:
                minable.append((i["track_id"], i["study_uid"]))
        with mining.blas_single_thread():
            recs = mining.mine_case(case, lambda s, v=vols: v.get(s.study_id), min_score=min_score,
                                    embedder=embedder, params=params, stats=stats, keep_below=True)
        for rec in recs:
            gt = truth.get((rec.tracking_uid, rec.study_id))
            if gt is None:
                found.append((rec.candidate.score / rec.evidence, False, None))
                continue
            err = M._dist(rec.position_mm, gt["center_mm"])
            found.append((rec.candidate.score / rec.evidence, err <= float(gt["long_diameter_mm"]) / 2.0, err))
        if progress:
            progress(1)

    def at(th: float) -> dict[str, Any]:
        props = [f for f in found if f[0] >= th]
        right = sum(1 for f in props if f[1])
        return {"threshold": th, "proposals": len(props), "correct": right,
                "recall": right / len(minable) if minable else None,
                "precision": right / len(props) if props else None}

    main = at(min_score)
    errs = [f[2] for f in found if f[0] >= min_score and f[2] is not None]
    errs_right = [f[2] for f in found if f[0] >= min_score and f[1]]
    return {
        "cohort": str(root), "seed": meta.get("seed"), "patients": stats.patients, "studies": n_studies,
        "withheld": withheld, "withheldMinable": len(minable), "candidateStudies": stats.candidate_studies,
        "minScore": min_score, "proposals": main["proposals"], "correct": main["correct"],
        "recall": main["recall"], "precision": main["precision"],
        "median_error_mm": float(np.median(errs)) if errs else None,
        "median_error_mm_correct": float(np.median(errs_right)) if errs_right else None,
        "seconds_per_candidate_study": stats.seconds_mining / stats.candidate_studies if stats.candidate_studies else None,
        "seconds_loading_per_study": load_s / n_studies if n_studies else None,
        "curve": [at(t) for t in THRESHOLDS],
        "tracks": "ground truth (annotated instances)",
        "errors": (errors + stats.skipped)[:50],
    }
