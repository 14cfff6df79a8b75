"""``lesiondb ingest dicom DIR [--annotations FILE]``."""
from __future__ import annotations

import click

from .common import emit, handle_errors, pass_app, progress_bar
from .summary import ingest_summary_text


@click.command("dicom")
@click.argument("cohort_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False),
              help="Annotations CSV (cohort contract columns) [default: DIR/annotations.csv].")
@click.option("--keep-source-ids", is_flag=True,
              help="Also store the DICOM PatientID on Patient nodes (off by default: ids are pseudonyms).")
@click.option("--pseudonym-key", envvar="LESIONDB_PSEUDONYM_KEY",
              help="Key for the pseudonyms [default: the data dir's pseudonym.key, created on first use].")
@click.option("--batch-size", default=2000, show_default=True, help="Lesions per write transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, cohort_dir, annotations, keep_source_ids, pseudonym_key, batch_size, as_json) -> None:
    """Ingest a DICOM cohort folder: DIR/annotations.csv and the CT series under DIR/dicom/.

    Each annotated series is read once (pydicom; slices sorted head first, HU, spacing from the
    headers); every lesion gets its normalised location and its centre in patient mm. Bad rows,
    bad images and annotations pointing at a missing series or slice are listed and skipped;
    everything else is written. Re-running changes nothing.

    \b
    Layout (see docs/architecture.md, cohort folder contract):
      DIR/annotations.csv
      DIR/cohort.json                 (optional; body z extents, images: false)
      DIR/dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm
    """
    from pathlib import Path

    from ..core.pseudonym import Pseudonymizer
    from ..datasets.cohort import ANNOTATIONS
    from ..ingest.dicom import ingest_cohort

    if not annotations and not (Path(cohort_dir) / ANNOTATIONS).is_file():  # before starting an engine
        raise click.UsageError(f"{Path(cohort_dir) / ANNOTATIONS} not found; pass --annotations FILE")
    ids = Pseudonymizer.from_data_dir(app.data_dir, pseudonym_key)
    eng = app.engine()
    with progress_bar(app, None, "ingest dicom", "lesion") as bar:
        def set_total(n: int) -> None:
            bar.total = n
            bar.refresh()

        report = ingest_cohort(eng, cohort_dir, ids, annotations, keep_source_ids=keep_source_ids,
                               batch_size=batch_size, progress=bar.update, set_total=set_total)
    emit(report.to_dict(), as_json, ingest_summary_text)
