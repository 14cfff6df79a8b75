"""Reading measurement groups: the pixel convention, the site table, and which lines are the
RECIST axes in reports lesiondb did not write (unnamed lengths, dcmjs' SRT axis codes)."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from lesiondb.core.records import LESION_TYPES
from lesiondb.interop.content import TYPE_SITES, from_scoord, to_scoord, type_of_site
from lesiondb.interop.sr_read import read_report

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_scoord_is_the_pixel_index_plus_a_half_and_reads_back_exactly():
    assert to_scoord(0) == 0.5 and to_scoord(255) == 255.5
    for px in (0.0, 12.345, 123.455, 511.999):
        assert from_scoord(float(np.float32(to_scoord(px)))) == px  # through the file's 32-bit float


def test_every_type_has_its_own_snomed_site_and_reads_back():
    assert set(TYPE_SITES) == set(LESION_TYPES) and len({c.value for c in TYPE_SITES.values()}) == 8
    for code, site in TYPE_SITES.items():
        assert site.scheme_designator == "SCT" and type_of_site("SCT", site.value, "") == code
    assert type_of_site("SCT", "12921003", "Pelvis") == 8  # the code before 816092008
    assert type_of_site("SCT", "3341006", "Right lung") == 5  # by its meaning
    assert type_of_site("SCT", "9846003", "Right kidney") == 6
    assert type_of_site("SCT", "71854001", "Colon") == -1
    assert type_of_site("SCT", "1", "Fibrous tissue") == -1  # 'rib' is a word, not any substring


def _image(sop: str) -> Dataset:
    ds = Dataset()
    for kw, v in dict(SOPClassUID=CT, SOPInstanceUID=sop, StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4",
                      PatientID="X", PatientName="X^Y", PatientBirthDate="", PatientSex="F", AccessionNumber="",
                      StudyID="1", StudyDate="20200101", StudyTime="000000", ReferringPhysicianName="",
                      Modality="CT", Manufacturer="m").items():
        setattr(ds, kw, v)
    return ds


def _length(name, pts, sop):
    line = hd.sr.CoordinatesForMeasurement(hd.sr.GraphicTypeValues.POLYLINE, np.array(pts, dtype=float) + 0.5,
                                           hd.sr.SourceImageForRegion(CT, sop))
    return hd.sr.Measurement(name=name, value=1.0, unit=codes.UCUM.Millimeter, referenced_coordinates=[line])


def _report(tmp_path, *groups_of_measurements, sops=("1.2.3.4.5",)):
    images = [_image(s) for s in sops]
    groups = [hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="m"),
                                                          measurements=ms) for ms in groups_of_measurements]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            codes.DCM.Device, hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID()))),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    sr = hd.sr.ComprehensiveSR(evidence=images, content=report, series_number=1, series_instance_uid=hd.UID(),
                               sop_instance_uid=hd.UID(), instance_number=1)
    path = tmp_path / "r.dcm"
    sr.save_as(path)
    return read_report(path)


def test_two_unnamed_lengths_are_the_long_and_short_axis_when_perpendicular(tmp_path):
    sop = "1.2.3.4.5"
    cross = [_length(codes.SCT.Length, [[10, 20], [40, 20]], sop), _length(codes.SCT.Length, [[25, 12], [25, 30]], sop)]
    slanted = [_length(codes.SCT.Length, [[10, 20], [40, 20]], sop), _length(codes.SCT.Length, [[10, 10], [30, 30]], sop)]
    doc = _report(tmp_path, cross, slanted)
    a, b = doc.marks
    assert a.long_axis_px == (10, 20, 40, 20) and a.short_axis_px == (25, 12, 25, 30)
    assert b.long_axis_px == (10, 20, 40, 20) and b.short_axis_px is None  # 45°: not a RECIST pair
    assert a.sop_instance_uid == sop and a.series_uid == "1.2.3.4" and doc.problems == []


def test_named_axes_win_whatever_their_length_and_dcmjs_codes_are_read(tmp_path):
    sop = "1.2.3.4.5"
    long_srt = hd.sr.CodedConcept("G-A185", "SRT", "Long Axis")
    short_srt = hd.sr.CodedConcept("G-A186", "SRT", "Short Axis")
    doc = _report(tmp_path, [_length(short_srt, [[0, 0], [0, 50]], sop), _length(long_srt, [[5, 5], [15, 5]], sop)])
    (m,) = doc.marks
    assert m.long_axis_px == (5, 5, 15, 5) and m.short_axis_px == (0, 0, 0, 50)


def test_axes_on_two_images_or_a_zero_line_are_problems_named_by_group(tmp_path):
    a, b = "1.2.3.4.5", "1.2.3.4.6"
    doc = _report(tmp_path, [_length(codes.SCT.LongAxis, [[1, 1], [9, 1]], a), _length(codes.SCT.ShortAxis, [[5, 0], [5, 3]], b)],
                  [_length(codes.SCT.Length, [[7, 7], [7, 7]], a)], sops=(a, b))
    assert doc.marks == [] and [g for g, _ in doc.problems] == [1, 2]
    assert "different images" in doc.problems[0][1] and "zero length" in doc.problems[1][1]


@pytest.mark.parametrize("name, unit", [("Area", "SquareMillimeter"), ("Volume", "CubicMillimeter")])
def test_a_group_without_a_length_gives_no_lesion(tmp_path, name, unit):
    m = hd.sr.Measurement(name=getattr(codes.SCT, name), value=3.0, unit=getattr(codes.UCUM, unit))
    doc = _report(tmp_path, [m])
    assert doc.marks == [] and doc.problems == [(1, "no length measurement with a 2-point polyline")]
