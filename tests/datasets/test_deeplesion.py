"""DL_info.csv reader: validation of every cell, line-numbered errors, stable ids."""
from __future__ import annotations

import csv
import io

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.datasets.deeplesion import (
    COLUMNS,
    RowError,
    file_names,
    key_slice_path,
    lesion_key,
    parse_file_name,
    read_dl_info,
    series_folder,
    series_id,
    series_ids,
    series_ref,
    series_ref_of,
    slice_file,
    split_file_name,
)
from lesiondb.errors import ImageError, InputError

GOOD = ["000001_01_01_109.png", "1", "1", "1", "109",
        "233.537, 95.0204, 234.057, 106.977, 231.169, 101.605, 236.252, 101.143",
        "226.169, 90.0204, 241.252, 111.977", "11.9677, 5.10387", "0.44666, 0.283794, 0.434454",
        "3", "0", "103, 115", "0.488281, 0.488281, 5", "512, 512", "-175, 275", "F", "62", "3"]


def write_csv(tmp_path, rows, header=COLUMNS):
    p = tmp_path / "DL_info.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    p.write_text(buf.getvalue())
    return p


@pytest.fixture
def ids():
    return Pseudonymizer(b"k" * 32)


def test_good_row_maps_every_field_with_units(tmp_path, ids):
    [a] = list(read_dl_info(write_csv(tmp_path, [GOOD]), ids))
    props = a.lesion.to_props()
    assert props["typeName"] == "mediastinum" and props["typeCode"] == 3
    assert props["longDiameterMm"] == pytest.approx(11.9677 * 0.488281, rel=1e-4)
    assert props["shortDiameterMm"] == pytest.approx(5.10387 * 0.488281, rel=1e-4)
    assert props["recistLongAxisPx"] == [233.537, 95.0204, 234.057, 106.977]
    assert props["recistShortAxisPx"] == [231.169, 101.605, 236.252, 101.143]
    assert props["bboxPx"] == [226.169, 90.0204, 241.252, 111.977]
    assert (props["locationX"], props["locationY"], props["locationZ"]) == (0.44666, 0.283794, 0.434454)
    assert (props["sliceRangeFirst"], props["sliceRangeLast"]) == (103, 115)
    assert props["sliceIntervalMm"] == 5 and props["spacingXMm"] == 0.488281
    assert (props["windowLowHu"], props["windowHighHu"]) == (-175, 275)
    assert (props["imageRows"], props["imageCols"]) == (512, 512)
    assert props["split"] == "test" and props["possiblyNoisy"] is False
    assert props["keySliceIndex"] == 109 and props["seriesIndex"] == 1
    assert a.patient.sex == "F" and a.study.patient_age_years == 62 and a.study.study_index == 1


def test_no_raw_identifiers_by_default(tmp_path, ids):
    [a] = list(read_dl_info(write_csv(tmp_path, [GOOD]), ids))
    row = a.to_row()
    blob = repr(row)
    assert "000001" not in blob and "sourceId" not in row["patient"]
    assert row["patient"]["patientId"].startswith("P-") and row["patient"]["patientId"] != "P-1"
    [b] = list(read_dl_info(write_csv(tmp_path, [GOOD]), ids, keep_source_ids=True))
    assert b.patient.source_id == "1" and b.lesion.source_id == "000001_01_01_109.png"


@pytest.mark.parametrize("col,value,reason", [
    ("Patient_index", "x", "not a number"),
    ("Measurement_coordinates", "1, 2, 3", "expected 8 numbers"),
    ("Coarse_lesion_type", "9", "unknown code 9"),
    ("Lesion_diameters_Pixel_", "-3, 2", "must be positive"),
    ("Normalized_lesion_location", "0.5, 1.7, 0.2", "outside [0, 1]"),
    ("Spacing_mm_px_", "0, 0.5, 5", "must be positive"),
    ("Patient_gender", "X", "not M or F"),
    ("Train_Val_Test", "7", "not 1, 2 or 3"),
    ("File_name", "000001_01_01_110.png", "disagrees"),
    ("Bounding_boxes", "10, 10, 5, 20", "x2 ≤ x1"),
    ("Slice_range", "120, 100", "first 120 > last 100"),
])
def test_bad_cells_are_reported_with_line_and_reason(tmp_path, ids, col, value, reason):
    bad = list(GOOD)
    bad[COLUMNS.index(col)] = value
    out = list(read_dl_info(write_csv(tmp_path, [GOOD, bad, GOOD[:]]), ids))
    errors = [o for o in out if isinstance(o, RowError)]
    assert len(errors) == 1 and errors[0].line == 3
    assert col in errors[0].reason or reason in errors[0].reason
    assert reason in errors[0].reason
    assert sum(not isinstance(o, RowError) for o in out) == 2


def test_wrong_arity_row(tmp_path, ids):
    out = list(read_dl_info(write_csv(tmp_path, [GOOD[:-2], GOOD]), ids))
    assert isinstance(out[0], RowError) and out[0].line == 2 and "expected 18 cells" in out[0].reason
    assert not isinstance(out[1], RowError)


def test_not_a_dl_info_file(tmp_path, ids):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        list(read_dl_info(p, ids))
    with pytest.raises(InputError, match="cannot open"):
        list(read_dl_info(tmp_path / "nope.csv", ids))


def test_ids_stable_and_independent_of_row_order(tmp_path, ids):
    other = list(GOOD)
    other[COLUMNS.index("Measurement_coordinates")] = "200, 95, 210, 106, 203, 102, 207, 99"
    other[COLUMNS.index("Bounding_boxes")] = "195, 90, 215, 111"
    other[COLUMNS.index("Lesion_diameters_Pixel_")] = "14.8661, 5"
    a = [x.lesion.lesion_id for x in read_dl_info(write_csv(tmp_path, [GOOD, other]), ids)]
    b = [x.lesion.lesion_id for x in read_dl_info(write_csv(tmp_path, [other, GOOD]), ids)]
    assert a[0] != a[1]  # two lesions on one key slice are two lesions
    assert a == b[::-1]
    # another key gives other pseudonyms
    c = [x.lesion.lesion_id for x in read_dl_info(write_csv(tmp_path, [GOOD]), Pseudonymizer(b"z" * 32))]
    assert c[0] != a[0]


def test_parse_file_name():
    assert parse_file_name("000001_02_01_014.png") == (1, 2, 1, 14)
    with pytest.raises(InputError):
        parse_file_name("foo.png")
    assert lesion_key("a.png", (1.0, 2.0)) == "a.png@1.00,2.00"


def test_real_file_reads_without_rejects(dl_info, ids):
    out = list(read_dl_info(dl_info, ids))
    assert len(out) == 10857
    assert not [o for o in out if isinstance(o, RowError)]
    assert len({o.lesion.lesion_id for o in out}) == 10857
    assert len({o.patient.patient_id for o in out}) == 1492
    assert len({o.study.study_id for o in out}) == 3589


def test_file_names_collected_for_valid_rows_without_keeping_source_ids(tmp_path, ids):
    other = list(GOOD)
    other[0], other[4] = "000001_01_01_110.png", "110"
    bad = list(GOOD)
    bad[0], bad[4] = "000001_01_01_111.png", "111"
    bad[6] = "1, 2, 3"  # wrong box arity: rejected
    p = write_csv(tmp_path, [GOOD, other, bad])
    names = file_names(p, ids)
    items = list(read_dl_info(p, ids))
    good = [a for a in items if not isinstance(a, RowError)]
    assert len(good) == 2 and sum(isinstance(a, RowError) for a in items) == 1
    assert all(a.lesion.source_id is None for a in good)  # the records still carry no raw ids
    assert names == {a.lesion.lesion_id: n for a, n in zip(good, ["000001_01_01_109.png", "000001_01_01_110.png"], strict=True)}
    kept = [a for a in read_dl_info(p, ids, keep_source_ids=True) if not isinstance(a, RowError)]
    assert names == {a.lesion.lesion_id: a.lesion.source_id for a in kept}


def test_the_naming_rule_is_written_once(tmp_path):
    ser = tmp_path / "Images_png" / "000062_01_01"
    ser.mkdir(parents=True)
    assert key_slice_path(tmp_path, "000062_01_01_078.png") == ser / "078.png"
    assert split_file_name("000062_01_01_078.png") == ("000062_01_01", 78)
    assert series_ref(62, 1, 1) == "000062_01_01" and slice_file(7) == "007.png"
    with pytest.raises(ImageError, match="not found"):
        series_folder(tmp_path, "000001_01_01")


def test_series_ref_of_reads_every_stored_form():
    assert series_ref_of("000062_01_01/078.png") == "000062_01_01"
    assert series_ref_of("000062_01_01") == "000062_01_01"
    assert series_ref_of("000062_01_01_078.png") == "000062_01_01"
    assert series_ref_of("/data/Images_png/000062_01_01/") == "000062_01_01"
    assert series_ref_of("dicom/SYN0001/1.2.3/1.2.4") is None and series_ref_of(None) is None


def test_series_ids_map_pseudonyms_to_the_folders_of_an_images_root(tmp_path):
    ids = Pseudonymizer(b"series-id-test-key-0123456789")
    for ref in ("000062_01_01", "000063_02_01"):
        (tmp_path / "Images_png" / ref).mkdir(parents=True)
    (tmp_path / "Images_png" / "notes").mkdir()
    found = series_ids(tmp_path, ids)
    assert found == {series_id(ids, "000062_01_01"): "000062_01_01", series_id(ids, "000063_02_01"): "000063_02_01"}
    # a lesion read from DL_info carries the same pseudonym
    assert series_id(ids, "000062_01_01") != series_id(Pseudonymizer(b"another-key-0123456789abcd"), "000062_01_01")
