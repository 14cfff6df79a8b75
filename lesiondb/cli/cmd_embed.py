"""``lesiondb embed``: (re-)embed lesions that have images, and keep the SIMILAR_TO edges exact."""
from __future__ import annotations

import click

from ..datasets.deeplesion import file_names
from ..embedding import EmbedOptions, embed_cohort, embed_deeplesion, load_encoder, rebuild_edges
from .common import emit, handle_errors, pass_app, pseudonym_key_option, reader_workers_option


@click.command("embed")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="DeepLesion Images_png folder (PPPPPP_SS_RR/KKK.png) for the graph's DeepLesion lesions.")
@click.option("--dl-info", type=click.Path(exists=True, dir_okay=False),
              help="The DL_info.csv those lesions were ingested from: only for graphs ingested before lesions "
                   "carried a seriesId (it finds each lesion's key slice).")
@click.option("--cohort", type=click.Path(exists=True, file_okay=False),
              help="Folder of DICOM series ingested with `lesiondb ingest dicom` (found by their headers).")
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="Encoder (model folder or model.pt) [default: the model shipped with lesiondb]. A model "
                   "other than the graph's re-embeds every lesion and replaces every SIMILAR_TO edge.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="SIMILAR_TO edges per lesion (its k nearest lesions).")
@click.option("--force", is_flag=True, help="Re-embed lesions already embedded by this model.")
@pseudonym_key_option("the key the lesions were pseudonymised with")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1, 65536),
              help="Patches per encoder call.")
@reader_workers_option()
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, images, dl_info, cohort, model_path, k, force, pseudonym_key, batch_size, workers, as_json) -> None:
    """Embed every lesion that has images (batched, with a progress bar) and rebuild its edges.

    Only lesions not yet embedded by the model, or changed since, are embedded; only lesions whose
    k nearest neighbours change get new SIMILAR_TO edges, so re-running writes nothing. Lesions
    whose image is missing or unreadable stay in the graph with `embedded: false` and the reason.
    Without --images or --cohort, rebuilds the edges from the stored embeddings (e.g. with a new -k).
    Ingest embeds already; this command re-embeds (another --model, --force) or catches up.

    \b
    Examples:
      lesiondb embed --images Images_png
      lesiondb embed --cohort ./cohort --model ./models/run7
      lesiondb embed -k 20            # same embeddings, 20 edges per lesion
    """
    if dl_info and not images:
        raise click.UsageError("--dl-info goes with --images (the DeepLesion PNG folder)")
    eng = app.engine()
    opts = EmbedOptions(k=k, force=force, batch_size=batch_size, workers=workers, cache_dir=app.embedding_cache)
    out: dict = {}
    if not images and not cohort:
        out["edges"] = rebuild_edges(eng, k=k, cache_dir=app.embedding_cache)
        emit(out, as_json, _text)
        return
    encoder = load_encoder(model_path)
    ids = app.ids(pseudonym_key)
    if images:
        out["deeplesion"] = embed_deeplesion(eng, images, encoder, ids, options=opts, progress=app.progress,
                                             file_names=file_names(dl_info, ids) if dl_info else None)
    if cohort:
        out["cohort"] = embed_cohort(eng, cohort, encoder, ids, options=opts, progress=app.progress)
    emit(out, as_json, _text)


def _text(o: dict) -> str:
    lines = []
    for part, r in o.items():
        if part == "edges":
            lines.append(f"edges: model {r['modelId']}, k={r['k']}, {r['totalEmbedded']} embedded lesions, "
                         f"{r['lesionsRewired']} rewired ({r['edgesWritten']} edges written, {r['knn']})")
            continue
        lines.append(f"{part}: model {r['modelId']}: {r['embedded']} embedded, {r['notEmbedded']} without image, "
                     f"{r['upToDate']} up to date; {r['totalEmbedded']} lesions embedded in all")
        lines.append(f"  SIMILAR_TO (k={r['k']}): {r['lesionsRewired']} lesions rewired, "
                     f"{r['similarEdgesWritten']} edges written ({r['knn']}); vector index {r['vectorIndex']}")
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()))
        for p in r["embedProblems"][:10]:
            lines.append(f"  not embedded {p['lesionId']}: {p['reason']}")
        if r["notEmbedded"] > 10:
            lines.append(f"  … {r['notEmbedded'] - 10} more (use --json)")
        if r.get("lesionsOfOtherModels"):
            lines.append(f"  note: {r['lesionsOfOtherModels']} lesions still carry embeddings of another model")
    return "\n".join(lines)
