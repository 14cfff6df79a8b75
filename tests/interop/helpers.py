"""Helpers of the interop tests: the exported cohort (``sr_source`` in tests/conftest.py), engines,
proposals, the graph's lesions in the images' terms."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from falkordb import FalkorDB

from lesiondb import synth
from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.datasets import cohort as C
from lesiondb.datasets.dicom_tree import SOURCE, DicomTree
from lesiondb.graph.falkor_engine import FalkorEngine
from lesiondb.ingest import ingest_dicom
from lesiondb.interop import export_sr
from lesiondb.mining.review import accept
from lesiondb.tracking.match import match_graph


def falkor_engine(server):
    """A fresh graph on the session's embedded FalkorDB."""
    return FalkorEngine(FalkorDB(unix_socket_path=str(server.socket_path)), graph="t_" + uuid.uuid4().hex[:12])


def images_without_first_patient(sr_source, tmp_path: Path) -> tuple[Path, str]:
    """An image folder holding every patient of the exported cohort but the first (symbolic
    links), and that patient's folder name."""
    dicom = sr_source.root / "dicom"
    patients = sorted(p.name for p in dicom.iterdir())
    images = tmp_path / "images"
    (images / "dicom").mkdir(parents=True)
    for p in patients[1:]:
        (images / "dicom" / p).symlink_to(dicom / p)
    return images, patients[0]


def propose(engine, ids: Pseudonymizer, root: Path, n: int = 2) -> list[str]:
    """Proposals for ``n`` annotations the cohort withheld (real lesions in the images), each for
    the graph track its annotated instances are in: what mining would propose, made directly."""
    gt = C.read_ground_truth(root)
    by_ann = {r.annotation_id: r for r in C.read_rows(root / C.ANNOTATIONS) if isinstance(r, C.CohortRow)}
    track_of = {r["lesionId"]: r["trackingUid"] for r in engine.run("sr_export_lesions", patientId=None)}
    graph_track = {}
    for inst in gt.annotated():
        lid = ids.lesion(SOURCE, by_ann[inst["annotation_id"]].lesion_key())
        graph_track.setdefault(inst["track_id"], track_of.get(lid))
    spacing = {s["study_uid"]: s["spacing_mm"] for s in gt.studies}
    rows = []
    for inst in sorted(gt.withheld(), key=lambda i: i["annotation_id"]):
        uid = graph_track.get(inst["track_id"])
        if uid is None or len(rows) == n:
            continue
        p = inst["patient_id"]
        sx, sy = spacing[inst["study_uid"]]
        pid = f"PR-{inst['annotation_id']}"
        rec = inst["recist_px"]
        rows.append({"proposalId": pid, "studyId": ids.study(SOURCE, p, inst["study_uid"]), "trackingUid": uid,
                     "createdAt": "2024-01-01T00:00:00Z", "props": {
                         "score": 0.9, "sliceIndex": inst["key_slice_index"], "bboxPx": inst["bbox_px"],
                         "recistLongAxisPx": rec[:4], "recistShortAxisPx": rec[4:],
                         "longDiameterPx": inst["long_diameter_px"], "shortDiameterPx": inst["short_diameter_px"],
                         "longDiameterMm": round(inst["long_diameter_px"] * sx, 3),
                         "shortDiameterMm": round(inst["short_diameter_px"] * sx, 3),
                         "spacingXMm": sx, "spacingYMm": sy, "typeCode": inst["type_code"],
                         "seriesId": ids.series(SOURCE, p, inst["series_uid"]), "trackingUid": uid}})
    assert len(rows) == n, "the cohort withheld too few annotations of matched tracks"
    engine.write("upsert_proposals", rows)
    return [r["proposalId"] for r in rows]



def lesion_table(engine, ids: Pseudonymizer, root: Path) -> dict[tuple, dict[str, Any]]:
    """Every lesion of a graph keyed by what does not depend on the pseudonym key (series UID, key
    slice, long axis to 0.1 px), with its study index, track, response and track status."""
    by_series = DicomTree(root).by_series_id(ids)
    rows = engine._read(
        "MATCH (s:Study)-[:HAS_LESION]->(l:Lesion) OPTIONAL MATCH (l)-[it:IN_TRACK]->(t:Track) "
        "RETURN s.studyIndex AS studyIndex, properties(l) AS l, t.trackingUid AS track, t.status AS status, "
        "it.response AS response", {})
    out = {}
    for r in rows:
        les = r["l"]
        key = (by_series[les["seriesId"]].series_uid, les["keySliceIndex"],
               tuple(round(float(v), 1) for v in les["recistLongAxisPx"]))
        assert key not in out
        out[key] = {**les, "studyIndex": r["studyIndex"], "track": r["track"], "status": r["status"],
                    "response": r["response"]}
    return out


def graph_text(engine) -> str:
    """Every property of every node and relationship, as text."""
    nodes = engine._read("MATCH (n) RETURN labels(n) AS l, properties(n) AS p", {})
    rels = engine._read("MATCH ()-[r]->() RETURN type(r) AS t, properties(r) AS p", {})
    return json.dumps([nodes, rels], default=str)


KEY = b"interop-tests-key-0123456789abcdef"


@dataclass
class Source:
    """A synthetic cohort ingested, matched, with one accepted and one pending mining proposal, and
    exported as DICOM SR reports (with the pending one)."""

    root: Path  # the cohort (images)
    engine: object  # the graph the reports were exported from
    ids: Pseudonymizer
    out: Path  # the export (with the pending proposal)
    result: object  # its SRExportResult
    accepted: str  # proposalId
    pending: str  # proposalId


def make_source(base: Path, server) -> Source:
    """The cohort, its graph and its export (see :class:`Source`)."""
    root = base / "cohort"
    synth.generate_cohort(root, 3, seed=11, workers=1)
    eng = falkor_engine(server)
    ids = Pseudonymizer(KEY)
    ingest_dicom(eng, root, ids, embed=False)
    match_graph(eng, workers=1)
    accepted, pending = propose(eng, ids, root)
    accept(eng, accepted, by="tester")
    match_graph(eng, workers=1)  # the accepted lesion's visit gets its response
    res = export_sr(eng, base / "sr", root, ids, include_proposals=True)
    return Source(root, eng, ids, base / "sr", res, accepted, pending)
