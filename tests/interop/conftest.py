"""A synthetic cohort ingested, matched, with one accepted and one pending mining proposal, and
exported as DICOM SR reports once per session (the interop tests read it; none writes to it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.ingest import ingest_dicom
from lesiondb.mining.review import accept
from lesiondb.tracking.match import match_graph
from tests.interop.helpers import falkor_engine, propose

KEY = b"interop-tests-key-0123456789abcdef"


@dataclass
class Source:
    root: Path  # the cohort (images)
    engine: object  # the graph the reports were exported from
    ids: Pseudonymizer
    out: Path  # the export (with the pending proposal)
    result: object  # its SRExportResult
    accepted: str  # proposalId
    pending: str  # proposalId


@pytest.fixture(scope="session")
def source(tmp_path_factory, falkor_server) -> Source:
    synth = pytest.importorskip("lesiondb.synth")
    from lesiondb.interop import export_sr

    base = tmp_path_factory.mktemp("interop")
    root = base / "cohort"
    synth.generate_cohort(root, 3, seed=11, workers=1)
    eng = falkor_engine(falkor_server)
    ids = Pseudonymizer(KEY)
    ingest_dicom(eng, root, ids, embed=False)
    match_graph(eng, workers=1)
    accepted, pending = propose(eng, ids, root)
    accept(eng, accepted, by="tester")
    match_graph(eng, workers=1)  # the accepted lesion's visit gets its response
    res = export_sr(eng, base / "sr", root, ids, include_proposals=True)
    return Source(root, eng, ids, base / "sr", res, accepted, pending)
