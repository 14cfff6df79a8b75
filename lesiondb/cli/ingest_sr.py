"""``lesiondb ingest sr DIR --images COHORT``."""
from __future__ import annotations

import click

from ..embedding import EmbedOptions
from ..interop import ingest_sr
from .common import emit, handle_errors, pass_app
from .summary import ingest_options, ingest_summary_text


@click.command("sr")
@click.argument("sr_dir", metavar="DIR", type=click.Path(exists=True))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
              help="The folder of CT DICOM series the reports measure on (any layout).")
@ingest_options("Also store the DICOM PatientID, UIDs (the reports' Tracking Unique Identifiers too), "
                "study dates and series folders (off by default: pseudonyms only).", "the pseudonyms", "Lesions")
@pass_app
@handle_errors
def command(app, sr_dir, images, embed, model_path, k, keep_source_ids, pseudonym_key, batch_size, workers,
            as_json) -> None:
    """Ingest DICOM SR measurement reports (TID 1500) as annotated lesions; embed them.

    DIR is a folder of reports (searched recursively) or one report: lesiondb's own (`lesiondb
    export sr`) or another tool's with length measurements drawn as 2-point polylines (RECIST
    long/short axes, or a length). Each measurement's image is found among the series under
    --images by its SOP Instance UID; patient, study and geometry come from the images, as in
    `lesiondb ingest dicom`. Lesions of different studies with one Tracking Unique Identifier get
    a SAME_LESION edge (method tracking-uid) that `lesiondb match` keeps. Unreadable files,
    measurements without a usable line or whose image is missing are listed and skipped.
    """
    report = ingest_sr(app.engine(), sr_dir, images, app.ids(pseudonym_key), keep_source_ids=keep_source_ids,
                       embed=embed, model=model_path, batch_size=batch_size,
                       embed_options=EmbedOptions(k=k, workers=workers, cache_dir=app.embedding_cache),
                       progress=app.progress)
    emit(report, as_json, ingest_summary_text)
