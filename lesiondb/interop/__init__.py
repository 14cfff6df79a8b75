"""Interoperability with radiology systems: DICOM SR measurement reports (TID 1500), written and
read with highdicom / pydicom.

- :func:`export_sr` — one Measurement Report per study: each lesion's RECIST axes on its key
  slice, its type as a SNOMED CT finding site, its track's Tracking Unique Identifier and its
  RECIST response (``lesiondb export sr``);
- :func:`ingest_sr` — lesions from such reports, lesiondb's own or other tools' (``lesiondb
  ingest sr``), linked across studies by their Tracking Unique Identifiers.

The codes and the pixel convention are in :mod:`lesiondb.interop.content`; docs/interop.md shows
a report.
"""
from .export import SRExportResult, export_sr
from .ingest import ingest_sr

__all__ = ["SRExportResult", "export_sr", "ingest_sr"]
