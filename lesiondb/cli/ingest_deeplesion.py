"""``lesiondb ingest deeplesion DL_info.csv``."""
from __future__ import annotations

import click

from .common import emit, handle_errors, pass_app, progress_bar, reader_workers_option
from .summary import ingest_summary_text


@click.command("deeplesion")
@click.argument("dl_info", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="DeepLesion Images_png folder; lesions with images are embedded when a model is available.")
@click.option("--keep-source-ids", is_flag=True,
              help="Also store DeepLesion's patient index and file names (off by default: ids are pseudonyms).")
@click.option("--pseudonym-key", envvar="LESIONDB_PSEUDONYM_KEY",
              help="Key for the patient pseudonyms [default: the data dir's pseudonym.key, created on first use].")
@click.option("--batch-size", default=2000, show_default=True, help="Rows per write transaction.")
@reader_workers_option("With --images: ")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, dl_info, images, keep_source_ids, pseudonym_key, batch_size, workers, as_json) -> None:
    """Ingest a DeepLesion DL_info.csv: every cell validated, bad rows reported by line and skipped."""
    from ..core.pseudonym import Pseudonymizer
    from ..ingest.records import ingest_deeplesion

    ids = Pseudonymizer.from_data_dir(app.data_dir, pseudonym_key)
    eng = app.engine()
    names: dict[str, str] | None = {} if images else None  # lesionId → File_name, for the reader
    with progress_bar(app, None, "ingest deeplesion", "row") as bar:
        report = ingest_deeplesion(eng, dl_info, ids, keep_source_ids=keep_source_ids,
                                   batch_size=batch_size, progress=bar.update, file_names=names)
    if images:
        report.extra["images"] = str(images)
        _embed_if_possible(app, report, images, workers, names)
    emit(report.to_dict(), as_json, ingest_summary_text)


def _embed_if_possible(app, report, images, workers=None, file_names=None) -> None:
    """Embedding on ingest arrives with the encoder (lesiondb.embedding.stage); record that it was skipped."""
    try:
        from ..embedding.stage import embed_deeplesion  # type: ignore[attr-defined]
    except ImportError:
        report.extra["embedded"] = 0
        report.extra["embedNote"] = "no encoder available in this build; lesions stored without embeddings"
        return
    report.extra.update(embed_deeplesion(app, images, workers=workers, file_names=file_names))
