"""Cohort folder reader: annotations.csv rows and errors, study order, ground truth, cohort.json."""
from __future__ import annotations

import json

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.core.records import Annotated
from lesiondb.datasets import cohort as C
from lesiondb.datasets.deeplesion import RowError
from lesiondb.errors import InputError
from tests.ct_factory import ANN_COLUMNS, ann_row, write_annotations

IDS = Pseudonymizer(b"k" * 32)
UID_A, UID_B, SER_A, SER_B = "1.2.3.10", "1.2.3.20", "1.2.3.11", "1.2.3.21"


def _rows():
    return [
        ann_row("A1", "SYN0001", UID_B, SER_B, "2020-05-01", 7, 30, 40, 5, type_code=5),
        ann_row("A2", "SYN0001", UID_A, SER_A, "2020-01-02", 3, 10, 12, 3, type_code=4),
        ann_row("A3", "SYN0001", UID_A, SER_A, "20200102", 4, 20, 22, 4, type_code=-1, sex="", age=""),
    ]


def test_valid_rows_become_records_with_contract_ids(tmp_path):
    path = write_annotations(tmp_path / "annotations.csv", _rows())
    items = C.read_annotations(path, IDS)
    assert all(isinstance(i, Annotated) for i in items) and len(items) == 3
    a1, a2, a3 = items
    assert a1.patient.patient_id == IDS.patient("dicom", "SYN0001") and a1.patient.source == "dicom"
    assert a1.patient.source_id is None  # pseudonymous unless asked
    assert a2.study.study_id == IDS.study("dicom", "SYN0001", UID_A)
    key = f"{SER_A}@3@" + ",".join(f"{c:.2f}" for c in (7, 12, 13, 12, 10, 9.6, 10, 14.4))
    assert a2.lesion.lesion_id == IDS.lesion("dicom", key)
    # Studies ordered by date within the patient; DICOM-style dates normalised.
    assert (a2.study.study_index, a1.study.study_index) == (1, 2)
    assert a3.study == a2.study  # one record per study
    # by default no UID, date, folder or annotation id: days since the patient's first study
    assert (a2.study.study_day, a1.study.study_day) == (0, 120)
    assert a2.study.study_date is None and a2.study.study_uid is None
    les = a1.lesion
    assert les.series_id == IDS.series("dicom", "SYN0001", SER_B) and les.type_code == 5
    assert les.annotation_id is None and les.series_uid is None and les.image_ref is None
    assert les.bbox_px == (25.0, 35.0, 35.0, 45.0) and les.key_slice_index == 7
    row = a1.to_row()
    assert not {"annotationId", "seriesUid", "imageRef"} & set(row["lesion"])
    assert not {"studyDate", "studyUid"} & set(row["study"]) and row["study"]["studyDay"] == 120
    assert a3.patient.sex == "F" and a3.study.patient_age_years == 61  # from the study's other row
    kept = C.read_annotations(path, IDS, keep_source_ids=True)
    assert kept[0].patient.source_id == "SYN0001"
    k1, k2, k3 = kept
    assert k3.study.study_date == "2020-01-02" and k3.study.study_uid == UID_A and k3.study.study_day == 0
    assert k1.lesion.annotation_id == "A1" and k1.lesion.series_uid == SER_B
    assert k1.lesion.image_ref == f"dicom/SYN0001/{UID_B}/{SER_B}"
    assert k1.lesion.lesion_id == a1.lesion.lesion_id  # the same ids either way


def test_bad_rows_are_reported_by_line_and_the_rest_kept(tmp_path):
    rows = _rows()
    bad_type = dict(rows[0], annotation_id="B1", type_code=9)
    bad_box = dict(rows[0], annotation_id="B2", bbox_x2=1)
    bad_date = dict(rows[0], annotation_id="B3", study_date="2020-13-45")
    dup = dict(rows[1])
    other_patient = dict(rows[1], annotation_id="B4", patient_id="SYN0002")
    bad_loc = dict(rows[0], annotation_id="B5", location_z=1.7)
    path = write_annotations(tmp_path / "a.csv", rows + [bad_type, bad_box, bad_date, dup, other_patient, bad_loc],
                             extra_lines=['X9,SYN0003,"unclosed', "only,three,cells"])
    items = list(C.read_rows(path))
    good = [i for i in items if isinstance(i, C.CohortRow)]
    errs = {e.line: e.reason for e in items if isinstance(e, RowError)}
    assert [g.annotation_id for g in good] == ["A1", "A2", "A3"]
    assert "type_code" in errs[5] and "bbox" in errs[6] and "study_date" in errs[7]
    assert "repeats line 3" in errs[8]
    assert "study_uid" in errs[9] and "line 3" in errs[9] and "patient_id differs" in errs[9]
    assert "SYN0002" not in errs[9] and "SYN0001" not in errs[9]  # no patient id in error messages
    assert "location" in errs[10]
    # the unclosed quote costs its own line only: the next line is read (and rejected) on its own
    assert "unterminated quote" in errs[11] and "expected 29 cells, got 3" in errs[12]
    assert len(errs) == 8
    assert all(isinstance(e, RowError) and e.source == str(path) for e in items if not isinstance(e, C.CohortRow))


def test_header_problems_raise_input_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="missing column"):
        list(C.read_rows(p))
    p.write_text("")
    with pytest.raises(InputError, match="empty"):
        list(C.read_rows(p))
    with pytest.raises(InputError, match="cannot open"):
        list(C.read_rows(tmp_path / "none.csv"))
    assert ANN_COLUMNS == C.COLUMNS


def test_empty_location_cells_mean_unknown(tmp_path):
    row = dict(_rows()[0], location_x="", location_y="", location_z="")
    path = write_annotations(tmp_path / "a.csv", [row])
    (r,) = C.read_rows(path)
    assert r.location is None


def test_study_indices_order_by_date_then_uid():
    idx = C.study_indices([("P", "2021-01-01", "9"), ("P", "2020-01-01", "5"), ("P", None, "1"),
                           ("Q", "2020-01-01", "b"), ("Q", "2020-01-01", "a"), ("P", "2020-01-01", "5")])
    assert idx == {("P", "5"): 1, ("P", "9"): 2, ("P", "1"): 3, ("Q", "a"): 1, ("Q", "b"): 2}


def test_ground_truth_and_cohort_meta(tmp_path):
    gt = {"seed": 3, "patients": [{"patient_id": "SYN0001", "studies": [{"study_uid": "1"}, {"study_uid": "2"}]}],
          "instances": [{"annotation_id": "A1", "track_id": "T1", "patient_id": "SYN0001", "study_uid": "1",
                         "annotated": True},
                        {"annotation_id": "A2", "track_id": "T1", "patient_id": "SYN0001", "study_uid": "2",
                         "annotated": False}]}
    (tmp_path / "ground_truth.json").write_text(json.dumps(gt))
    g = C.read_ground_truth(tmp_path)
    assert g.seed == 3 and len(g.studies) == 2 and [i["annotation_id"] for i in g.annotated()] == ["A1"]
    assert [i["annotation_id"] for i in g.withheld()] == ["A2"] and len(g.tracks()["T1"]) == 2
    (tmp_path / "ground_truth.json").write_text(json.dumps({"patients": []}))
    with pytest.raises(InputError, match="instances"):
        C.read_ground_truth(tmp_path)
    (tmp_path / "ground_truth.json").write_text("{oops")
    with pytest.raises(InputError, match="not valid JSON"):
        C.read_ground_truth(tmp_path / "ground_truth.json")
    assert C.read_cohort_meta(tmp_path) == {}
    (tmp_path / "cohort.json").write_text(json.dumps({"images": True, "series": [
        {"series_uid": "1.1", "body_z_mm": [-400.0, 150.0]}, {"series_uid": "1.2", "body_z_mm": None},
        {"series_uid": "1.3", "body_z_mm": [5, 5]}]}))
    assert C.body_z_ranges(C.read_cohort_meta(tmp_path)) == {"1.1": (150.0, -400.0)}


def test_row_errors_name_lines_not_identifiers(tmp_path):
    """Row errors end up in logs and --json reports: they name the line and the column, never the
    patient id, UID or date in it."""
    rows = _rows()
    bad = [dict(rows[0], annotation_id="B1", study_uid="1.2.3 45"),          # not a UID
           dict(rows[0], annotation_id="B2", series_uid="9" * 70),            # too long
           dict(rows[0], annotation_id="B3", study_date="2020-13-07"),        # no month 13
           dict(rows[0], annotation_id="B4", study_date="07/03/2020"),        # not a date format
           dict(rows[1], annotation_id="B5", patient_id="SYN7777", key_slice_index=9),  # study of another patient
           dict(rows[1], annotation_id="B6", study_date="2020-01-03", key_slice_index=8)]  # study on another day
    path = write_annotations(tmp_path / "a.csv", rows + bad)
    errs = [e for e in C.read_rows(path) if isinstance(e, RowError)]
    assert [e.line for e in errs] == [5, 6, 7, 8, 9, 10]
    text = " ".join(str(e) for e in errs)
    for secret in ("1.2.3 45", "9" * 70, "2020-13-07", "07/03/2020", "SYN7777", "SYN0001", UID_A, "2020-01-03",
                   "2020-01-02"):
        assert secret not in text, secret
    assert "study_uid is not a UID" in str(errs[0]) and "study_date is not a valid date" in str(errs[2])
