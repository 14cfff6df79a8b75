"""Reading the mining cases from the graph (lesiondb.mining.case.read_cases), on every engine."""
from __future__ import annotations

from lesiondb.core.records import Annotated, Lesion, Patient, Study
from lesiondb.ingest.records import IngestReport, write_annotated
from lesiondb.mining.case import read_cases
from lesiondb.tracking import match_graph


def _lesion(study: int, key: str, x: float) -> Annotated:
    sid = f"S-X-{study}"
    return Annotated(
        patient=Patient("P-X", sex="F"), study=Study(sid, "P-X", study),
        lesion=Lesion(lesion_id=f"L-X-{study}-{key}", study_id=sid, patient_id="P-X", series_index=1,
                      key_slice_index=10, recist_long_px=(0.0, 0.0, 12.0, 0.0), recist_short_px=(0.0, 0.0, 0.0, 8.0),
                      bbox_px=(x * 460.0, 100.0, x * 460.0 + 12.0, 108.0), long_diameter_px=12.0, short_diameter_px=8.0,
                      spacing_mm=(0.8, 0.8), slice_interval_mm=5.0, location=(x, 0.5, 0.5), type_code=4))


def test_cases_come_in_one_order_whatever_the_engine_stores(engine):
    """A study's lesions and a track's observations follow the study and lesion ids, not the order
    the engine happens to hold the rows in (here: written in reverse)."""
    items = [_lesion(study, key, x) for study in (2, 1) for key, x in (("c", 0.7), ("b", 0.5), ("a", 0.3))]
    write_annotated(engine, items, IngestReport(source="test"))
    match_graph(engine, calibrate=False, workers=1)
    (case,) = read_cases(engine)
    assert [s.study_id for s in case.studies] == ["S-X-1", "S-X-2"]
    for sid, obs in case.lesions.items():
        assert [o.lesion_id for o in obs] == sorted(o.lesion_id for o in obs), sid
    assert len(case.tracks) == 3
    for uid, obs in case.tracks.items():
        assert [o.study_id for o in obs] == ["S-X-1", "S-X-2"], uid
