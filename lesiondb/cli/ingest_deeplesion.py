"""``lesiondb ingest deeplesion DL_info.csv [--images Images_png]``."""
from __future__ import annotations

import click

from ..embedding import EmbedOptions
from ..ingest import ingest_deeplesion
from .common import emit, handle_errors, pass_app
from .summary import ingest_options, ingest_summary_text


@click.command("deeplesion")
@click.argument("dl_info", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="DeepLesion Images_png folder: the lesions whose slices are there are embedded and linked to "
                   "their nearest lesions (SIMILAR_TO), as `lesiondb embed` would.")
@ingest_options("Also store DeepLesion's patient index and file names (off by default: ids are pseudonyms).",
                "the patient pseudonyms", "Rows", "With --images: ")
@pass_app
@handle_errors
def command(app, dl_info, images, embed, model_path, k, keep_source_ids, pseudonym_key, batch_size, workers,
            as_json) -> None:
    """Ingest a DeepLesion DL_info.csv: every cell validated, bad rows reported by line and skipped.

    With --images the lesions whose key slices are there are embedded (--no-embed skips it).
    Re-running changes nothing.
    """
    report = ingest_deeplesion(app.engine(), dl_info, app.ids(pseudonym_key), images=images, embed=embed,
                               model=model_path, keep_source_ids=keep_source_ids, batch_size=batch_size,
                               embed_options=EmbedOptions(k=k, workers=workers, cache_dir=app.embedding_cache),
                               progress=app.progress)
    emit(report, as_json, ingest_summary_text)
