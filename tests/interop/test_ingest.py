"""``ingest_sr``: lesiondb's reports give back the lesions, tracks and responses they were made
from; another tool's report (built with highdicom's documented API) ingests; bad files and
missing images are named and skipped; the graph keeps pseudonyms only."""
from __future__ import annotations

import json
import math
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from lesiondb.client import Client
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.datasets import cohort as C
from lesiondb.ingest import ingest_dicom
from lesiondb.interop import ingest_sr
from lesiondb.tracking.match import match_graph
from tests.interop.helpers import falkor_engine, graph_text, images_without_first_patient, lesion_table

OTHER_KEY = Pseudonymizer(b"a-fresh-data-dir-key-0123456789ab")


def _partition(table):
    tracks = {}
    for key, les in table.items():
        tracks.setdefault(les["track"], set()).add(key)
    return {frozenset(v) for v in tracks.values()}


def test_round_trip_gives_the_same_lesions_tracks_and_responses(sr_source, engine):
    rep = ingest_sr(engine, sr_source.out, sr_source.root, OTHER_KEY, embed=False)
    assert rep.rejected == [] and rep.extra["unreviewedSkipped"] == 1  # the pending proposal
    assert rep.written == sr_source.result.lesions and rep.extra["reports"] == sr_source.result.reports
    assert rep.extra["trackingUidEdges"] > 0
    match_graph(engine, workers=1)

    before = lesion_table(sr_source.engine, sr_source.ids, sr_source.root)
    after = lesion_table(engine, OTHER_KEY, sr_source.root)
    assert set(after) == set(before)
    for key, a in after.items():
        b = before[key]
        sx = b["spacingXMm"]
        for axis in ("recistLongAxisPx", "recistShortAxisPx"):
            assert max(abs(x - y) for x, y in zip(a[axis], b[axis], strict=True)) * sx < 0.1, axis
        assert a["longDiameterMm"] == pytest.approx(b["longDiameterMm"], abs=0.1)
        assert a["shortDiameterMm"] == pytest.approx(b["shortDiameterMm"], abs=0.1)
        assert (a["typeCode"], a["studyIndex"], a["keySliceIndex"]) == (b["typeCode"], b["studyIndex"],
                                                                         b["keySliceIndex"])
        if b["source"] == "dicom":  # a lesion ingest dicom made: the same record, down to its position
            for k in ("positionXMm", "positionYMm", "positionZMm", "locationX", "locationY", "locationZ", "bboxPx"):
                assert a[k] == pytest.approx(b[k], abs=1e-3), k
        assert (a["response"], a["status"]) == (b["response"], b["status"])
    assert _partition(after) == _partition(before)
    # tracks take the (pseudonymised) Tracking UID of their lesions; match kept the SR's edges
    assert all(les["track"] == les["sourceTrackingUid"] for les in after.values())
    assert not {les["track"] for les in after.values()} & {les["track"] for les in before.values()}
    methods = engine._read("MATCH ()-[r:SAME_LESION]->() RETURN DISTINCT r.method AS m", {})
    assert [r["m"] for r in methods] == ["tracking-uid"]
    n_edges = engine._read("MATCH ()-[r:SAME_LESION]->() RETURN count(r) AS n", {})[0]["n"]
    assert n_edges == sr_source.engine._read("MATCH ()-[r:SAME_LESION]->() RETURN count(r) AS n", {})[0]["n"]

    again = ingest_sr(engine, sr_source.out, sr_source.root, OTHER_KEY, embed=False)
    assert again.written == 0 and again.unchanged == rep.written
    assert match_graph(engine, workers=1).tracks_written == 0


def _track_instances(root):
    """Two instances (in two studies of one patient) of one ground-truth track."""
    gt = C.read_ground_truth(root)
    for track in gt.tracks().values():
        by_study = {i["study_uid"]: i for i in track}
        if len(by_study) >= 2:
            return sorted(by_study.values(), key=lambda i: i["study_index"])[:2], gt
    raise AssertionError("no track seen twice")


def _slice(root, gt, inst):
    study = next(s for s in gt.studies if s["study_uid"] == inst["study_uid"])
    return pydicom.dcmread(root / study["series_dir"] / f"{inst['key_slice_index']:04d}.dcm"), study


def _foreign_report(image, line_px, tracking_uid, *, with_area=False):
    """A TID 1500 report written the way highdicom's documentation shows (observation context,
    an Image Region with a Planar ROI group, a Comprehensive 3D SR), measuring a length."""
    observer_device_context = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID()))
    observation_context = hd.sr.ObservationContext(observer_device_context=observer_device_context)
    x1, y1, x2, y2 = (v + 0.5 for v in line_px)  # pixel centres in image coordinates
    referenced_region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=np.array([[x1, y1], [x2, y2]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(image))
    length_mm = math.dist((x1, y1), (x2, y2)) * float(image.PixelSpacing[1])
    groups = [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier="Planar ROI Measurements"),
        referenced_region=referenced_region,
        finding_type=codes.SCT.Lesion,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Liver)],
        measurements=[hd.sr.Measurement(name=codes.SCT.Length, value=length_mm, unit=codes.UCUM.Millimeter)])]
    if with_area:  # the documentation's own example: a closed polygon and its area, not a length
        polygon = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[165.0, 200.0], [170.0, 200.0], [170.0, 220.0], [165.0, 220.0], [165.0, 200.0]]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(image))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Planar ROI Measurements"),
            referenced_region=polygon, finding_type=codes.SCT.SpinalCord,
            measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=1.7, unit=codes.UCUM.SquareMillimeter)]))
    report = hd.sr.MeasurementReport(observation_context=observation_context,
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                     imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(evidence=[image], content=report, series_number=1,
                                   series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(), instance_number=1,
                                   manufacturer="Manufacturer")


def test_a_report_written_with_highdicoms_example_api_ingests(sr_source, engine, tmp_path):
    """Two studies' reports from another tool: one length each, one Tracking UID; the first also
    has the documentation's area ROI, which is no measurement lesiondb can use (named, skipped)."""
    (first, second), gt = _track_instances(sr_source.root)
    folder = tmp_path / "foreign"
    folder.mkdir()
    uid = hd.UID()
    for k, inst in enumerate((first, second)):
        image, _ = _slice(sr_source.root, gt, inst)
        _foreign_report(image, inst["recist_px"][:4], uid, with_area=k == 0).save_as(folder / f"r{k}.dcm")
    rep = ingest_sr(engine, folder, sr_source.root, OTHER_KEY, embed=False)
    assert rep.written == 2 and rep.extra["trackingUidEdges"] == 1
    assert [(e["source"], e["line"]) for e in rep.rejected] == [(str(folder / "r0.dcm"), 2)]
    assert "closed polygon" in rep.rejected[0]["reason"]
    match_graph(engine, workers=1)
    table = lesion_table(engine, OTHER_KEY, sr_source.root)
    assert len(table) == 2 and len({les["track"] for les in table.values()}) == 1
    for inst in (first, second):
        image, study = _slice(sr_source.root, gt, inst)
        key = (inst["series_uid"], inst["key_slice_index"], tuple(round(v, 1) for v in inst["recist_px"][:4]))
        les = table[key]
        long_px = math.dist(inst["recist_px"][:2], inst["recist_px"][2:4])
        assert les["typeCode"] == 4 and les["typeName"] == "liver"  # the finding site
        assert les["longDiameterMm"] == pytest.approx(long_px * study["spacing_mm"][0], abs=0.01)
        assert les["shortDiameterMm"] == 0.0  # only a length was drawn
        assert les["track"] == les["sourceTrackingUid"] == OTHER_KEY.uid("dicom", f"{inst['patient_id']}:{uid}")
    edges = engine._read("MATCH (a)-[r:SAME_LESION]->(b) RETURN r.method AS m", {})
    assert [e["m"] for e in edges] == ["tracking-uid"]


def test_bad_files_are_named_and_the_rest_ingests(sr_source, engine, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(sr_source.out.glob("*.dcm"))[0]
    shutil.copy(good, folder / "good.dcm")
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not a DICOM file at all")
    ct = next((sr_source.root / "dicom").rglob("0000.dcm"))
    shutil.copy(ct, folder / "ct.dcm")
    empty = pydicom.dcmread(good)  # the report with its measurement groups taken out
    for item in empty.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "126010":  # Imaging Measurements
            item.ContentSequence = []
    empty.save_as(folder / "empty.dcm")

    rep = ingest_sr(engine, folder, sr_source.root, OTHER_KEY, embed=False)
    why = {e["source"].rsplit("/", 1)[-1]: e["reason"] for e in rep.rejected}
    assert set(why) == {"truncated.dcm", "notes.txt", "ct.dcm", "empty.dcm"}
    assert "truncated" in why["truncated.dcm"]
    assert "not a DICOM file" in why["notes.txt"]
    assert "not a DICOM SR" in why["ct.dcm"]
    assert "no measurement group" in why["empty.dcm"]
    groups = len(hd.sr.srread(good).content.get_image_measurement_groups())
    assert rep.written == groups - rep.extra["unreviewedSkipped"] > 0 and rep.extra["reports"] == 1


def test_reports_on_images_not_in_the_folder_are_skipped(sr_source, engine, tmp_path):
    images, first = images_without_first_patient(sr_source, tmp_path)
    rep = ingest_sr(engine, sr_source.out, images, OTHER_KEY, embed=False)
    gone = {r for r in (f for f in sr_source.out.glob("*.dcm"))
            if pydicom.dcmread(r, stop_before_pixels=True).PatientID == first}
    assert gone and {e["source"] for e in rep.rejected} == {str(f) for f in gone}
    assert all("not among the DICOM series under the image folder" in e["reason"] and e["line"] >= 1
               for e in rep.rejected)
    assert rep.written == sr_source.result.lesions - len(rep.rejected) > 0
    assert "1.2.826" not in json.dumps(rep.to_json())  # no image UID named


def test_a_report_without_evidence_finds_its_images_by_sop_uid(sr_source, engine, tmp_path):
    """Evidence names each image's series; without it every series under the folder is searched."""
    good = sorted(sr_source.out.glob("*.dcm"))[0]
    ds = pydicom.dcmread(good)
    del ds.CurrentRequestedProcedureEvidenceSequence
    (tmp_path / "r").mkdir()
    ds.save_as(tmp_path / "r" / "no-evidence.dcm")
    rep = ingest_sr(engine, tmp_path / "r", sr_source.root, OTHER_KEY, embed=False)
    groups = len(hd.sr.srread(good).content.get_image_measurement_groups())
    assert rep.rejected == [] and rep.written == groups - rep.extra["unreviewedSkipped"] > 0


def _identifiers(sr_source) -> tuple[set[str], set[str]]:
    """The cohort's patient ids, UIDs and dates, the key slices' and the reports' SOP UIDs, the
    reports' Tracking UIDs; and the Tracking UIDs alone."""
    gt = C.read_ground_truth(sr_source.root)
    out, tracking = set(), set()
    for p in gt.patients:
        out.add(p["patient_id"])
        for s in p["studies"]:
            out |= {s["study_uid"], s["series_uid"], s["study_date"], s["study_date"].replace("-", "")}

    def visit(ds, elem):
        if elem.keyword in ("UID", "ReferencedSOPInstanceUID", "SOPInstanceUID"):
            out.add(str(elem.value))
        if elem.keyword == "UID" and ds.ConceptNameCodeSequence[0].CodeValue == "112040":  # Tracking UID
            tracking.add(str(elem.value))

    for f in sr_source.out.glob("*.dcm"):
        pydicom.dcmread(f).walk(visit)
    return out - {"2.25.149847931925608631667477075560494021032"}, tracking  # lesiondb's device UID


def test_the_graph_holds_pseudonyms_only_unless_asked(sr_source, engine, falkor_server):
    ids, tracking = _identifiers(sr_source)
    report = next(iter(sr_source.out.glob("*.dcm")))
    assert pydicom.dcmread(report).PatientID in ids and tracking  # the report itself names the patient
    rep = ingest_sr(engine, sr_source.out, sr_source.root, OTHER_KEY, embed=False)
    text = graph_text(engine)
    assert rep.written > 0 and "sourceTrackingUid" in text
    assert {i for i in ids if i in text} == set()
    assert {i for i in ids if i in json.dumps(rep.to_json())} == set()

    # --keep-source-ids: the reports' Tracking UIDs are kept, and name the tracks as in the source
    kept = falkor_engine(falkor_server)
    ingest_sr(kept, sr_source.out, sr_source.root, OTHER_KEY, keep_source_ids=True, embed=False)
    assert tracking <= {i for i in ids if i in graph_text(kept)}
    match_graph(kept, workers=1)
    before = lesion_table(sr_source.engine, sr_source.ids, sr_source.root)
    after = lesion_table(kept, OTHER_KEY, sr_source.root)
    assert {k: v["track"] for k, v in after.items()} == {k: v["track"] for k, v in before.items()}


def test_reports_of_csv_annotations_give_the_same_lesion_ids(sr_source, engine):
    """Into a graph built from the cohort's annotations.csv (same key): every annotation's report
    is the same lesion (same id, now with its Tracking UID); the accepted proposal comes back as
    an annotation, the one new lesion."""
    first = ingest_dicom(engine, sr_source.root, sr_source.ids, embed=False)
    before = {r["lesionId"] for r in engine.run("sr_export_lesions", patientId=None)}
    rep = ingest_sr(engine, sr_source.out, sr_source.root, sr_source.ids, embed=False)
    after = {r["lesionId"] for r in engine.run("sr_export_lesions", patientId=None)}
    assert before < after and len(after - before) == 1 == sr_source.result.accepted_proposals
    assert rep.written == first.written + 1 and rep.rejected == []


def test_the_client_ingests_and_exports_reports(sr_source, engine, tmp_path):
    db = Client(engine, data_dir=tmp_path / "data", owns_engine=False)  # its own key, in its data dir
    rep = db.ingest_sr(sr_source.out, sr_source.root, embed=False)
    assert rep.written == sr_source.result.lesions and rep["unreviewedSkipped"] == 1
    db.match(workers=1)
    res = db.export_sr(tmp_path / "again", sr_source.root)
    assert res.lesions == rep.written and res.unmatched_lesions == 0
    assert len(res.files) == sr_source.result.reports


def test_report_files_named_by_their_uid_are_reported_by_pseudonym(sr_source, engine, tmp_path):
    """PACS exports name files by SOP Instance UID: a rejection names such a file by a keyed UID."""
    good = sorted(sr_source.out.glob("*.dcm"))[0]
    ds = pydicom.dcmread(good)
    ds.ContentSequence[-1].ContentSequence[0].ContentSequence = []  # a group without its items
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    rep = ingest_sr(engine, tmp_path / "r", sr_source.root, OTHER_KEY, embed=False)
    assert [e["line"] for e in rep.rejected] == [1]
    assert ds.SOPInstanceUID not in json.dumps(rep.to_json())
    assert OTHER_KEY.uid("dicom", ds.SOPInstanceUID) in rep.rejected[0]["source"]
