"""What a lesiondb measurement report says, apart from how it is encoded: the code tables (lesion
types → SNOMED CT finding sites, RECIST responses, axis names), the pixel-coordinate convention,
and :class:`SRMark`, one lesion as a report shows it (what the writer takes and the reader gives).

Coordinates. lesiondb's pixel coordinates are 0-based column/row *indices*: ``(0, 0)`` is the
centre of the top-left pixel (the cohort contract; DeepLesion). DICOM SR SCOORD values are
image coordinates with the top-left *corner* of the top-left pixel at ``(0.0, 0.0)`` (PS3.3
C.18.6.1.1), so the centre of that pixel is ``(0.5, 0.5)``: ``scoord = px + 0.5``. SCOORD values
are 32-bit floats; reading back rounds to :data:`PX_DECIMALS` decimals, which gives lesiondb's own
coordinates (three decimals) back exactly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

#: SCOORD = lesiondb pixel index + this (PS3.3 C.18.6.1.1: the top-left pixel spans 0.0–1.0).
SCOORD_OFFSET = 0.5
#: Decimals kept of a coordinate read from a report (float32 in the file).
PX_DECIMALS = 3
#: Margin of a lesion's box around its RECIST end points, as DeepLesion's boxes and ``lesiondb synth``.
BBOX_PAD_PX = 5.0

#: Local codes (the DICOM convention: a private coding scheme designator starts with ``99``).
LOCAL_SCHEME = "99LESIONDB"
LOCAL_SCHEME_NAME = "lesiondb local codes"

# -- the finding, its site, the axes ----------------------------------------------------------------
FINDING = codes.SCT.Lesion  # (52988006, SCT, "Lesion")
#: DeepLesion's eight coarse lesion types (``lesiondb.core.records.LESION_TYPES``) as finding sites.
TYPE_SITES: dict[int, Code] = {
    1: codes.SCT.Bone,         # 272673000 Bone
    2: codes.SCT.Abdomen,      # 818981001 Abdomen
    3: codes.SCT.Mediastinum,  # 72410000 Mediastinum
    4: codes.SCT.Liver,        # 10200004 Liver
    5: codes.SCT.Lung,         # 39607008 Lung
    6: codes.SCT.Kidney,       # 64033007 Kidney
    7: codes.SCT.SoftTissue,   # 87784001 Soft tissue
    8: codes.SCT.Pelvis,       # 816092008 Pelvis
}
#: Older or broader codes other tools use for the same sites (read only).
_SITE_ALIASES: dict[tuple[str, str], int] = {
    ("SCT", "3138006"): 1,     # Bone (tissue)
    ("SCT", "113345001"): 2,   # Abdominal structure (before 818981001)
    ("SCT", "12921003"): 8,    # Pelvis (before 816092008)
    ("SCT", "62683002"): 3,    # Mediastinal lymph node
    ("DCM", "112144"): 7,      # Soft tissue
}
#: Words of a site's code meaning, tried in this order when its code is none of the above.
_SITE_WORDS: tuple[tuple[str, int], ...] = (
    ("mediastin", 3), ("lung", 5), ("pulmonar", 5), ("liver", 4), ("hepat", 4), ("kidney", 6), ("renal", 6),
    ("pelvi", 8), ("bone", 1), ("vertebr", 1), ("rib", 1), ("soft tissue", 7), ("abdom", 2),
)
LONG_AXIS = codes.SCT.LongAxis    # 103339001 Long axis
SHORT_AXIS = codes.SCT.ShortAxis  # 103340004 Short axis
MM = codes.UCUM.Millimeter
#: Measurement names read as a long axis / as a length (the long axis when alone) / as a short axis.
LONG_NAMES = {("SCT", "103339001"), ("SRT", "G-A185")}
LENGTH_NAMES = {("SCT", "410668003"), ("SRT", "G-A22A"), ("DCM", "121227"), ("DCM", "121211")}
SHORT_NAMES = {("SCT", "103340004"), ("SRT", "G-A186")}
#: Units of a length, in mm.
UNIT_MM = {"mm": 1.0, "cm": 10.0, "um": 0.001, "m": 1000.0}

# -- RECIST --------------------------------------------------------------------------------------
METHOD = codes.DCM.RECIST1Point1  # (126081, DCM, "RECIST 1.1"): the group's measurement method
RESPONSE_NAME = codes.DCM.CurrentResponse  # (112048, DCM, "Current Response")
#: lesiondb's per-visit response (``IN_TRACK.response``, :mod:`lesiondb.core.recist`) → code.
RESPONSES: dict[str, Code] = {
    "baseline": codes.DCM.TargetLesionAtBaseline,          # 112074
    "progressing": codes.DCM.TargetLesionProgressiveDisease,  # 112043
    "responding": codes.DCM.TargetLesionPartialResponse,   # 112042
    "stable": codes.DCM.TargetLesionStableDisease,         # 112044
}
_RESPONSE_OF = {(c.scheme_designator, c.value): k for k, c in RESPONSES.items()}

# -- review status of mining proposals -------------------------------------------------------------
REVIEW_STATUS = Code("REVIEW-STATUS", LOCAL_SCHEME, "Review status")
NOT_REVIEWED = Code("NOT-REVIEWED", LOCAL_SCHEME, "Not yet reviewed")
MINING_ALGORITHM = "lesiondb missing-annotation mining"

# -- the report ----------------------------------------------------------------------------------
PROCEDURE = codes.LN.CTUnspecifiedBodyRegion  # (25045-6, LN, "CT unspecified body region")
DEVICE_NAME = "lesiondb"
#: The observer device's UID, the same for every lesiondb: 2.25 + uuid5(NAMESPACE_URL, "https://lesiondb/device").
DEVICE_UID = "2.25.149847931925608631667477075560494021032"
SERIES_DESCRIPTION = "lesiondb measurements"
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def type_of_site(scheme: str, value: str, meaning: str = "") -> int:
    """The lesion type code of a finding site code (-1 when it names none of the eight)."""
    for code, c in TYPE_SITES.items():
        if (c.scheme_designator, c.value) == (scheme, value):
            return code
    if (scheme, value) in _SITE_ALIASES:
        return _SITE_ALIASES[(scheme, value)]
    words = (meaning or "").lower()
    for word, code in _SITE_WORDS:
        if re.search(r"\b" + re.escape(word), words):
            return code
    return -1


def response_of(scheme: str, value: str) -> str | None:
    """lesiondb's response name of a response code, None for another code."""
    return _RESPONSE_OF.get((scheme, value))


def to_scoord(px: float) -> float:
    """A lesiondb pixel coordinate (0-based index) as an SCOORD value."""
    return float(px) + SCOORD_OFFSET


def from_scoord(v: float) -> float:
    """An SCOORD value as a lesiondb pixel coordinate (rounded to :data:`PX_DECIMALS`)."""
    return round(float(v) - SCOORD_OFFSET, PX_DECIMALS)


@dataclass(frozen=True)
class SRMark:
    """One lesion as a measurement report shows it. Pixel coordinates are lesiondb's (0-based
    column/row indices of the key slice); ``short_axis_px`` is None when only a length was drawn."""

    sop_instance_uid: str  # the key slice image
    long_axis_px: tuple[float, float, float, float]  # x1, y1, x2, y2
    short_axis_px: tuple[float, float, float, float] | None = None  # x3, y3, x4, y4
    sop_class_uid: str | None = None
    series_uid: str | None = None  # from the report's evidence (reader)
    long_mm: float | None = None  # the report's numbers (the graph recomputes them from the pixels)
    short_mm: float | None = None
    type_code: int = -1
    tracking_uid: str | None = None
    tracking_id: str | None = None
    response: str | None = None  # a key of RESPONSES
    reviewed: bool = True  # False: a mining proposal nobody has reviewed yet
    time_point: int | None = None  # the study's index among the patient's studies
    group: int = 0  # 1-based number of the measurement group in its report (reader)


__all__ = ["BBOX_PAD_PX", "FINDING", "LONG_AXIS", "METHOD", "RESPONSES", "SCOORD_OFFSET", "SHORT_AXIS", "SRMark",
           "TYPE_SITES", "from_scoord", "response_of", "to_scoord", "type_of_site"]
