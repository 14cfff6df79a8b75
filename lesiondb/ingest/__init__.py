"""Ingest: lesion annotations (and their images) into the graph, from each source.

- :func:`ingest_deeplesion` — a DeepLesion ``DL_info.csv`` (and its ``Images_png`` folder);
- :func:`ingest_dicom` — a folder of CT DICOM series with an ``annotations.csv``.

Both write idempotently, report bad input by file and line without stopping, and embed the
lesions that have images (as ``lesiondb embed`` would) unless told not to.
"""
from .deeplesion import ingest_deeplesion
from .dicom import ingest_dicom
from .records import IngestReport, write_annotated

__all__ = ["IngestReport", "ingest_deeplesion", "ingest_dicom", "write_annotated"]
