"""``export_sr``: one valid TID 1500 report per study, with each lesion's axes on its key slice,
its track, type and response, the images' identity, and nothing but the reports in OUT."""
from __future__ import annotations

import functools
import json
import os

import highdicom as hd
import numpy as np
import pydicom
import pytest

from lesiondb.datasets.dicom_tree import DicomTree
from lesiondb.errors import InputError
from lesiondb.imaging.dicom import read_series_lazy
from lesiondb.interop import export_sr
from lesiondb.interop.content import NOT_REVIEWED, RESPONSES, TYPE_SITES
from lesiondb.mining.review import list_proposals
from tests.dicom_tools import dciodvfy_errors, dsrdump
from tests.interop.helpers import images_without_first_patient

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _graph_lesions(sr_source):
    return sr_source.engine.run("sr_export_lesions", patientId=None)


def _reports(out):
    return {f.name[:-4]: pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))}


def _groups(ds):
    """The measurement groups of a report, as highdicom reads them."""
    return hd.sr.srread(ds.filename).content.get_image_measurement_groups()


@functools.cache
def _volume(root, ids, series_id):
    info = DicomTree(root).by_series_id(ids)[series_id]
    return read_series_lazy(info.folder, info.series_uid).volume


def _key_slice(sr_source, series_id, index):
    return pydicom.dcmread(_volume(sr_source.root, sr_source.ids, series_id).files[index], stop_before_pixels=True)


def test_every_exported_report_passes_dciodvfy(sr_source):
    files = sorted(sr_source.out.glob("*.dcm"))
    assert len(files) == sr_source.result.reports >= 4
    assert dciodvfy_errors(files) == {}


def test_one_report_per_study_named_by_its_pseudonym_and_nothing_else(sr_source):
    studies = {r["studyId"] for r in _graph_lesions(sr_source)}
    assert sorted(os.listdir(sr_source.out)) == sorted(f"{s}.dcm" for s in studies)
    res = sr_source.result
    assert res.files == sorted(f"{s}.dcm" for s in studies) and res.skipped == []
    assert res.lesions == len(_graph_lesions(sr_source)) and res.accepted_proposals == 1
    assert res.pending_proposals == 1 and res.unmatched_lesions == 0 and res.patients == 3


def test_reports_carry_the_images_identity_and_reference_their_series(sr_source):
    rows = _graph_lesions(sr_source)
    for study_id, ds in _reports(sr_source.out).items():
        mine = [r for r in rows if r["studyId"] == study_id]
        image = _key_slice(sr_source, mine[0]["seriesId"], mine[0]["keySliceIndex"])
        assert ds.SOPClassUID == COMPREHENSIVE_SR and ds.Modality == "SR"
        for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate"):
            assert ds[kw].value == image[kw].value, kw
        assert ds.SeriesInstanceUID != image.SeriesInstanceUID  # the report is a series of its own
        ev = ds.CurrentRequestedProcedureEvidenceSequence
        assert [e.StudyInstanceUID for e in ev] == [image.StudyInstanceUID]
        referenced = {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence}
                      for s in ev[0].ReferencedSeriesSequence}
        assert image.SeriesInstanceUID in referenced and image.SOPInstanceUID in referenced[image.SeriesInstanceUID]
        text = open(ds.filename, "rb").read()
        assert mine[0]["patientId"].encode() not in text and study_id.encode() not in text  # no pseudonym


def test_each_lesion_is_a_group_with_its_axes_track_type_and_response(sr_source):
    rows = _graph_lesions(sr_source)
    seen = 0
    for study_id, ds in _reports(sr_source.out).items():
        groups = {g.tracking_uid: g for g in _groups(ds)}
        for r in (r for r in rows if r["studyId"] == study_id):
            seen += 1
            g = groups[r["trackingUid"]]  # the track's UID, the same in each study it is seen in
            image = _key_slice(sr_source, r["seriesId"], r["keySliceIndex"])
            by_name = {m.name.value: m for m in g.get_measurements()}
            for code, axis, mm in (("103339001", r["recistLongAxisPx"], r["longDiameterMm"]),
                                   ("103340004", r["recistShortAxisPx"], r["shortDiameterMm"])):
                m = by_name[code]
                assert m.unit.value == "mm" and m.value == pytest.approx(mm, abs=0.006)
                (line,) = m.referenced_coordinates
                assert line.graphic_type.value == "POLYLINE"
                np.testing.assert_allclose(line.value, np.reshape(axis, (2, 2)) + 0.5, atol=1e-3)
                ref = line.ContentSequence[0].ReferencedSOPSequence[0]
                assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID  # the key slice
            assert g.finding_type.value == "52988006"
            site = TYPE_SITES[r["typeCode"]]
            assert [(s.value.value, s.value.scheme_designator) for s in g.finding_sites] == [(site.value, "SCT")]
            evals = {q.name.value: q.value for q in g.get_qualitative_evaluations()}
            assert evals["112048"].value == RESPONSES[r["response"]].value
            assert g.method.value == "126081"  # RECIST 1.1
        assert len(groups) == sum(1 for r in rows if r["studyId"] == study_id) + (
            1 if study_id == _pending(sr_source)["studyId"] else 0)
    assert seen == len(rows)
    # the same track, the same identifier in every report
    names = {}
    for ds in _reports(sr_source.out).values():
        for g in _groups(ds):
            names.setdefault(g.tracking_uid, set()).add(str(g.tracking_identifier).split(" (")[0])
    assert all(len(v) == 1 for v in names.values())


def _pending(sr_source):
    (p,) = list_proposals(sr_source.engine, proposal=sr_source.pending)
    return p


def test_pending_proposals_only_on_request_and_marked_not_reviewed(sr_source, tmp_path):
    pending = _pending(sr_source)
    marked = []
    for study_id, ds in _reports(sr_source.out).items():
        for g in _groups(ds):
            evals = {q.name.value: q.value.value for q in g.get_qualitative_evaluations()}
            if evals.get("REVIEW-STATUS") == NOT_REVIEWED.value:
                marked.append((study_id, g.tracking_uid, str(g.tracking_identifier)))
    assert marked == [(pending["studyId"], pending["trackingUid"], marked[0][2])]
    assert marked[0][2].endswith("(proposal, not yet reviewed)")
    accepted_lesion = next(r for r in _graph_lesions(sr_source) if r["source"] == "proposal")

    res = export_sr(sr_source.engine, tmp_path / "plain", sr_source.root, sr_source.ids)
    assert res.pending_proposals == 0 and res.accepted_proposals == 1
    uids = {(sid, g.tracking_uid) for sid, ds in _reports(tmp_path / "plain").items() for g in _groups(ds)}
    assert (accepted_lesion["studyId"], accepted_lesion["trackingUid"]) in uids  # exported like an annotation
    assert (pending["studyId"], pending["trackingUid"]) not in uids
    assert b"NOT-REVIEWED" not in b"".join(f.read_bytes() for f in (tmp_path / "plain").iterdir())

    def names(out):
        return {g.tracking_uid: str(g.tracking_identifier).split(" (")[0]
                for ds in _reports(out).values() for g in _groups(ds)}

    plain, full = names(tmp_path / "plain"), names(sr_source.out)
    assert plain == {u: n for u, n in full.items() if u in plain}  # proposals renumber no track


def test_out_must_be_empty_unless_replacing_a_previous_export(sr_source, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_sr(sr_source.engine, busy, sr_source.root, sr_source.ids)
    assert sorted(os.listdir(busy)) == ["notes.txt"]
    with pytest.raises(InputError, match="not a folder|must be a folder"):
        export_sr(sr_source.engine, busy / "notes.txt", sr_source.root, sr_source.ids)

    out = tmp_path / "out"
    pid = _graph_lesions(sr_source)[0]["patientId"]
    first = export_sr(sr_source.engine, out, sr_source.root, sr_source.ids, patient=pid)
    (out / "S-0000000000000000.dcm").write_bytes(b"stale report of a study gone since")
    with pytest.raises(InputError, match="--overwrite"):
        export_sr(sr_source.engine, out, sr_source.root, sr_source.ids, patient=pid)
    again = export_sr(sr_source.engine, out, sr_source.root, sr_source.ids, patient=pid, overwrite=True)
    assert sorted(os.listdir(out)) == again.files == first.files  # the stale one is gone


def test_one_patient_and_an_unknown_patient(sr_source, tmp_path):
    rows = _graph_lesions(sr_source)
    pid = rows[0]["patientId"]
    res = export_sr(sr_source.engine, tmp_path / "one", sr_source.root, sr_source.ids, patient=pid)
    assert res.files == sorted({f"{r['studyId']}.dcm" for r in rows if r["patientId"] == pid})
    with pytest.raises(InputError, match="no patient"):
        export_sr(sr_source.engine, tmp_path / "none", sr_source.root, sr_source.ids, patient="P-nobody")
    assert not (tmp_path / "none").exists()


def test_lesions_whose_images_are_missing_are_skipped_by_pseudonym(sr_source, tmp_path):
    """A folder without one patient's series: that patient's lesions are listed by lesionId and
    series pseudonym (no UID, no path); no report is written for them."""
    images, first = images_without_first_patient(sr_source, tmp_path)
    gone = sr_source.ids.patient("dicom", first)
    res = export_sr(sr_source.engine, tmp_path / "out", images, sr_source.ids, patient=gone)
    rows = _graph_lesions(sr_source)
    assert {s["lesionId"] for s in res.skipped} == {r["lesionId"] for r in rows if r["patientId"] == gone} != set()
    assert all("not found under the image folder" in s["reason"] and "R-" in s["reason"] for s in res.skipped)
    assert res.reports == 0 and os.listdir(tmp_path / "out") == []
    text = json.dumps(res.to_json())
    assert first not in text and str(sr_source.root) not in text and "1.2.826" not in text


def test_dsrdump_reads_the_content_tree(sr_source):
    text = dsrdump(sorted(sr_source.out.glob("*.dcm"))[0])
    for part in ('(126000,DCM,"Imaging Measurement Report")', '(125007,DCM,"Measurement Group")',
                 '(112040,DCM,"Tracking Unique Identifier")', '(103339001,SCT,"Long axis")', "POLYLINE",
                 '(126081,DCM,"RECIST 1.1")', '(363698007,SCT,"Finding Site")', '(112048,DCM,"Current Response")'):
        assert part in text, part
