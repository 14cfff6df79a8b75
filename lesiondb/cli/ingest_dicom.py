"""``lesiondb ingest dicom DIR [--annotations FILE]``."""
from __future__ import annotations

from pathlib import Path

import click

from ..datasets.cohort import ANNOTATIONS
from ..embedding import EmbedOptions
from ..ingest import ingest_dicom
from .common import emit, handle_errors, pass_app
from .summary import ingest_options, ingest_summary_text


@click.command("dicom")
@click.argument("cohort_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False),
              help="Annotations CSV (cohort contract columns) [default: DIR/annotations.csv].")
@ingest_options("Also store the DICOM PatientID, UIDs, study dates and series folders (off by default: "
                "ids are pseudonyms, dates are days from the patient's first study).", "the pseudonyms", "Lesions")
@pass_app
@handle_errors
def command(app, cohort_dir, annotations, embed, model_path, k, keep_source_ids, pseudonym_key, batch_size,
            workers, as_json) -> None:
    """Ingest a folder of CT DICOM series and its annotations.csv; embed every lesion.

    Series are found by their DICOM headers, whatever the folders are called (PACS exports,
    folders reached through symbolic links). Each annotated series is read once (pydicom; slices
    sorted head first, HU, spacing from the headers); every lesion gets its normalised location
    and its centre in patient mm. Then every lesion is embedded and linked to its k nearest
    lesions (SIMILAR_TO), as `lesiondb embed` would (--no-embed skips it). Bad rows, bad images
    and annotations pointing at a missing series or slice are listed and skipped; everything
    else is written. Re-running changes nothing.

    \b
    Layout (see docs/architecture.md):
      DIR/annotations.csv             (or --annotations FILE)
      DIR/cohort.json                 (optional; body z extents, images: false)
      DIR/**/*.dcm                    (any folders; lesiondb synth writes dicom/<patient>/<study>/<series>/)
    """
    if not annotations and not (Path(cohort_dir) / ANNOTATIONS).is_file():  # before starting an engine
        raise click.UsageError(f"{Path(cohort_dir) / ANNOTATIONS} not found; pass --annotations FILE")
    report = ingest_dicom(app.engine(), cohort_dir, app.ids(pseudonym_key), annotations=annotations, embed=embed,
                          model=model_path, keep_source_ids=keep_source_ids, batch_size=batch_size,
                          embed_options=EmbedOptions(k=k, workers=workers, cache_dir=app.embedding_cache),
                          progress=app.progress)
    emit(report, as_json, ingest_summary_text)
