"""Writing a TID 1500 Measurement Report (Comprehensive SR) of one study's lesions (highdicom).

Content tree (docs/interop.md shows a real one)::

    CONTAINER Imaging Measurement Report (TID 1500)
      language, observer = device "lesiondb", procedure reported: CT
      CONTAINER Image Library: the key slices
      CONTAINER Imaging Measurements
        CONTAINER Measurement Group (TID 1501), one per lesion
          TEXT    Tracking Identifier          "lesion 3"
          UIDREF  Tracking Unique Identifier   the track's trackingUid (the same in every study)
          CONTAINER Time Point Context         the study's place among the patient's studies
          CODE    Finding = Lesion             CODE Finding Site = the lesion type's site (SNOMED CT)
          CODE    Measurement Method = RECIST 1.1
          IMAGE   Source images for measurement group: the key slice
          NUM     Long axis (mm)   INFERRED FROM SCOORD POLYLINE (2 points) on the key slice
          NUM     Short axis (mm)  INFERRED FROM SCOORD POLYLINE (2 points) on the key slice
          CODE    Current Response = Target Lesion at Baseline / Progressive / Partial Response / Stable
          CODE    Review status = Not yet reviewed      (pending mining proposals only)

Why TID 1501 and not TID 1410 (Planar ROI): a planar ROI group holds exactly one Image Region,
and its measurements may not carry coordinates of their own, so it cannot hold the two RECIST
axes; TID 1501 measurements (TID 300) each carry their polyline (INFERRED FROM, TID 320), the way
OHIF/dcmjs write bidirectional measurements.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from .. import __version__
from .content import (
    DEVICE_NAME,
    DEVICE_UID,
    FINDING,
    LOCAL_SCHEME,
    LOCAL_SCHEME_NAME,
    LONG_AXIS,
    METHOD,
    MINING_ALGORITHM,
    MM,
    NOT_REVIEWED,
    PROCEDURE,
    RESPONSE_NAME,
    RESPONSES,
    REVIEW_STATUS,
    SERIES_DESCRIPTION,
    SHORT_AXIS,
    TYPE_SITES,
    SRMark,
    to_scoord,
)

#: Series number of the reports (their own series in the study of the images).
SERIES_NUMBER = 9901


def build_report(marks: Sequence[SRMark], images: dict[str, Dataset], *, series_uid: str | None = None,
                 sop_uid: str | None = None, when: _dt.datetime | None = None) -> Dataset:
    """The Comprehensive SR of one study: one measurement group per mark, in the given order.

    ``images`` maps each mark's ``sop_instance_uid`` to that image's header (pydicom, pixels not
    needed): the report takes the patient and study identity from them, lists them as evidence
    and in its image library. Every image must belong to one study.
    """
    if not marks:
        raise ValueError("a measurement report needs at least one lesion")
    used = list(dict.fromkeys(m.sop_instance_uid for m in marks))
    evidence = [images[u] for u in used]
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise ValueError(f"the images of one report belong to {len(studies)} studies")
    groups = [_group(m, images[m.sop_instance_uid]) for m in marks]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name=DEVICE_NAME, manufacturer_name="lesiondb", model_name=f"lesiondb {__version__}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
        referenced_images=evidence,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_uid or hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid or hd.UID(),
        instance_number=1,
        manufacturer="lesiondb",
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
    )
    when = when or _dt.datetime.now()
    sr.ContentDate = when.strftime("%Y%m%d")
    sr.ContentTime = when.strftime("%H%M%S")
    if any(not m.reviewed for m in marks):  # local codes are used: say whose they are
        item = Dataset()
        item.CodingSchemeDesignator = LOCAL_SCHEME
        item.CodingSchemeName = LOCAL_SCHEME_NAME
        item.CodingSchemeResponsibleOrganization = "lesiondb"
        sr.CodingSchemeIdentificationSequence = [item]
    return sr


def _group(m: SRMark, image: Dataset) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    src = hd.sr.SourceImageForRegion(str(image.SOPClassUID), str(image.SOPInstanceUID))
    measurements = [_axis(LONG_AXIS, m.long_axis_px, m.long_mm, src)]
    if m.short_axis_px is not None and (m.short_mm or 0) > 0:
        measurements.append(_axis(SHORT_AXIS, m.short_axis_px, m.short_mm, src))
    evaluations = []
    if m.response in RESPONSES:
        evaluations.append(hd.sr.QualitativeEvaluation(RESPONSE_NAME, RESPONSES[m.response]))
    if not m.reviewed:
        evaluations.append(hd.sr.QualitativeEvaluation(REVIEW_STATUS, NOT_REVIEWED))
    site = TYPE_SITES.get(m.type_code)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=m.tracking_uid, identifier=m.tracking_id),
        time_point_context=(hd.sr.TimePointContext(time_point=str(m.time_point), time_point_order=m.time_point)
                            if m.time_point is not None else None),
        finding_type=FINDING,
        method=METHOD,
        algorithm_id=None if m.reviewed else hd.sr.AlgorithmIdentification(MINING_ALGORITHM, __version__),
        finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup(str(image.SOPClassUID), str(image.SOPInstanceUID))],
    )


def _axis(name, px: Sequence[float], mm: float | None, src: hd.sr.SourceImageForRegion) -> hd.sr.Measurement:
    x1, y1, x2, y2 = (to_scoord(v) for v in px)
    line = hd.sr.CoordinatesForMeasurement(hd.sr.GraphicTypeValues.POLYLINE, np.array([[x1, y1], [x2, y2]]), src)
    return hd.sr.Measurement(name=name, value=round(float(mm or 0.0), 2), unit=MM, referenced_coordinates=[line])


__all__ = ["SERIES_NUMBER", "build_report"]
