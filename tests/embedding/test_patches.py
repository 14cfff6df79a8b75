"""lesiondb.embedding.patches: patch sources (DICOM series, DeepLesion PNGs), in this process and in
worker processes; bad images fail their lesions only."""
from __future__ import annotations

from lesiondb.core.pseudonym import Pseudonymizer
from lesiondb.ingest import ingest_dicom

KEY = b"pipeline-test-key-0123456789"
IDS = Pseudonymizer(KEY)


def _ingest(engine, root):
    rep = ingest_dicom(engine, root, IDS, embed=False)
    assert rep.rejected == [] and rep.written > 0
    return rep.written



