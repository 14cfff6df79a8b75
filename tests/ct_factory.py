"""Small CT series and cohort folders written with pydicom, for reader and ingest tests.

Not a test module: tests import it as ``tests.ct_factory`` (pytest puts the repo root on ``sys.path``).
Geometry is explicit so tests can compute the expected patient coordinates independently.
"""
from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import numpy as np

from lesiondb.datasets.cohort import COLUMNS

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def phantom(n_slices: int = 12, rows: int = 64, cols: int = 64, body=(0.8, 0.6), centre_shift=(0, 0),
            lesions=()) -> np.ndarray:
    """HU volume: air (-1000), an elliptic body of soft tissue (40 HU) with a fat rim (-100), and
    bright spheres ``lesions = [(col, row, slice, radius_px, hu)]``."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2 + centre_shift[1], cols / 2 + centre_shift[0]
    ry, rx = rows * body[1] / 2, cols * body[0] / 2
    r = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    sl = np.full((rows, cols), -1000.0)
    sl[r <= 1.0] = -100.0
    sl[r <= 0.8] = 40.0
    vol = np.repeat(sl[None], n_slices, axis=0)
    zz = np.arange(n_slices)[:, None, None]
    for c, rw, s, rad, hu in lesions:
        m = (xx[None] - c) ** 2 + (yy[None] - rw) ** 2 + ((zz - s) * 2.0) ** 2 <= rad ** 2
        vol[m] = hu
    return vol


def write_series(folder, hu: np.ndarray, *, spacing_xy_mm=(0.8, 0.7), interval_mm=5.0,
                 top_position=(-25.0, -22.0, 100.0), orientation=(1, 0, 0, 0, 1, 0),
                 patient_id="PAT1", study_uid="1.2.826.0.1.3680043.10.1.1", series_uid=None,
                 study_date="20200102", modality="CT", slope=1.0, intercept=-1024.0,
                 names=None, sex="F", age="061Y") -> list[Path]:
    """Write ``hu`` [slices, rows, cols] (index 0 = head) as one CT series; returns the files.

    Slice ``k`` sits at ``top_position - k * interval_mm * n`` (``n``: the slice normal turned to the head). File names default to a
    shuffled order so that readers must sort by position.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    iop = np.asarray(orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    head = normal if normal[2] >= -1e-6 else -normal  # the normal, oriented towards the head
    n = hu.shape[0]
    rng = np.random.default_rng(n)
    order = rng.permutation(n)
    names = names or [f"IM{int(order[k]):04d}" for k in range(n)]
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / names[k]
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientSex = sex
        ds.PatientAge = age
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyDate = study_date
        ds.InstanceNumber = k + 1
        pos = np.asarray(top_position, dtype=float) - k * interval_mm * head
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.PixelSpacing = [f"{spacing_xy_mm[1]:.6f}", f"{spacing_xy_mm[0]:.6f}"]  # rows, cols
        ds.SliceThickness = f"{interval_mm:.3f}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        stored = np.rint((hu[k] - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        ds.save_as(str(path), enforce_file_format=True) if _pydicom3(pydicom) else \
            ds.save_as(str(path), write_like_original=False)
        paths.append(path)
    return paths


def _pydicom3(pydicom) -> bool:
    return int(pydicom.__version__.split(".")[0]) >= 3


ANN_COLUMNS = COLUMNS


def ann_row(annotation_id, patient_id, study_uid, series_uid, date, key, col, row, radius, type_code=4,
            spacing=(0.8, 0.7), interval=5.0, location=(0.5, 0.5, 0.5), sex="F", age=61) -> dict:
    """One annotations.csv row for a round lesion at (col, row) on slice ``key``."""
    r = float(radius)
    return dict(zip(ANN_COLUMNS, [
        annotation_id, patient_id, study_uid, series_uid, date, key,
        col - r, row, col + r, row, col, row - 0.8 * r, col, row + 0.8 * r,
        col - r, row - r, col + r, row + r, 2 * r, 1.6 * r, type_code,
        spacing[0], spacing[1], interval, *location, sex, age,
    ], strict=True))


def write_annotations(path, rows: list[dict], extra_lines: list[str] = ()) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ANN_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(r)
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def mini_cohort(root, n_patients: int = 2, studies_per_patient: int = 2, n_slices: int = 10,
                annotate_every_study: bool = True) -> dict:
    """A cohort folder by the contract: 2 lesions per study, series 64×64, body z extents in
    cohort.json. Returns what was written (for expected values)."""
    from pydicom.uid import generate_uid

    root = Path(root)
    rows, series_meta, truth = [], [], []
    interval, spacing = 5.0, (0.8, 0.7)
    for p in range(n_patients):
        pid = f"SYN{p + 1:04d}"
        for s in range(studies_per_patient):
            study_uid, series_uid = generate_uid(), generate_uid()
            top = (-25.0 + 2 * s, -22.0 - s, 100.0 + 7.5 * s)  # table shift between studies
            lesions = [(20.0 + 3 * p, 30.0, 3 + s, 4.0, 120.0), (44.0, 36.0 - 2 * s, 6, 3.0, 150.0)]
            hu = phantom(n_slices, lesions=lesions)
            folder = root / "dicom" / pid / study_uid / series_uid
            date = (datetime.date(2020, 1, 2) + datetime.timedelta(days=120 * s)).strftime("%Y%m%d")
            write_series(folder, hu, spacing_xy_mm=spacing, interval_mm=interval, top_position=top,
                         patient_id=pid, study_uid=study_uid, series_uid=series_uid, study_date=date)
            body = (top[2] + 150.0, top[2] - 450.0)
            series_meta.append({"patient_id": pid, "study_uid": study_uid, "series_uid": series_uid,
                                "series_dir": f"dicom/{pid}/{study_uid}/{series_uid}", "n_slices": n_slices,
                                "body_z_mm": list(body)})
            iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
            for k, (c, r, sl, rad, _hu) in enumerate(lesions):
                aid = f"A{p}{s}{k}"
                centre = (top[0] + c * spacing[0], top[1] + r * spacing[1], top[2] - sl * interval)
                annotated = annotate_every_study or k == 0
                truth.append({"annotation_id": aid, "patient_id": pid, "study_uid": study_uid,
                              "series_uid": series_uid, "center_mm": centre, "key_slice_index": sl,
                              "annotated": annotated, "body_z_mm": body})
                if annotated:
                    rows.append(ann_row(aid, pid, study_uid, series_uid, iso, sl, c, r, rad,
                                        spacing=spacing, interval=interval))
    write_annotations(root / "annotations.csv", rows)
    (root / "cohort.json").write_text(json.dumps({"generator": "tests", "patients": n_patients, "images": True,
                                                  "series": series_meta}))
    return {"rows": rows, "series": series_meta, "truth": truth}
