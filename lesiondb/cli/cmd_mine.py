"""``lesiondb mine``: propose the lesions radiologists did not annotate (missing-annotation mining)."""
from __future__ import annotations

import click

from ..datasets.deeplesion import file_names
from ..mining import DEFAULT_MIN_SCORE, MiningConfig, StudyVolumes, load_embedder, mine
from .common import emit, handle_errors, pass_app, pseudonym_key_option


@click.command("mine")
@click.option("--patient", help="Mine one patient (its patientId) instead of every tracked patient.")
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), default=None,
              help="Propose only candidates scoring at least this (0..1) [default: 0.04].")
@click.option("--images", "images", type=click.Path(exists=True, file_okay=False),
              help="Where the studies' images live: the cohort folder given to `lesiondb ingest dicom`, or "
                   "DeepLesion's Images_png folder (PPPPPP_SS_RR/KKK.png) for `lesiondb ingest deeplesion` graphs.")
@click.option("--dl-info", "dl_info", type=click.Path(exists=True, dir_okay=False),
              help="DeepLesion: the DL_info.csv that was ingested, only for graphs whose lesions carry no "
                   "seriesId (ingested before lesiondb 0.2); finds each study's series folder.")
@pseudonym_key_option("the key the ingest used")
@click.option("--image-format", type=click.Choice(["auto", "dicom", "deeplesion"]), default="auto",
              show_default=True,
              help="auto: DeepLesion PNG slices for studies ingested from DL_info, DICOM series otherwise.")
@click.option("--embed/--no-embed", default=True, show_default=True,
              help="Score candidates by embedding distance too, when an encoder is available.")
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="With --embed: the encoder [default: the shipped model].")
@click.option("--rank-calibration/--no-rank-calibration", default=True, show_default=True,
              help="Learn how to rank each study's candidates from the graph's own tracks first (withhold "
                   "each annotated instance of a track seen twice or more, mine it back); off: rank by score.")
@click.option("--batch-size", default=50, show_default=True, help="Patients read from the graph per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, patient, min_score, images, dl_info, pseudonym_key, image_format, embed, model_path,
            rank_calibration, batch_size, as_json) -> None:
    """Mine every track for the studies where its lesion should be visible but is not annotated.

    For each track (run `lesiondb match` first), every study of the patient where the lesion
    should be visible is searched around the position predicted from the track's other studies;
    the best blob candidate that looks like the track's lesions becomes a pending (:Proposal).
    Candidates are ranked by weights learned from the graph's own tracks first (each annotated
    instance of a track seen twice or more withheld and mined back: `ranking` in --json).
    Re-running refreshes pending proposals and never touches accepted or rejected ones. Review them
    with `lesiondb review list|accept|reject`.

    \b
    Images: DICOM studies are found by their headers under --images (the folder that was ingested);
    DeepLesion studies from Images_png/PPPPPP_SS_RR/KKK.png (--images PATH/Images_png), only on the
    slices present there. A study whose images cannot be read is reported and skipped.

    \b
    Examples:
      lesiondb mine --images COHORT_DIR --json
      lesiondb mine --images Images_png --dl-info DL_info.csv   # DeepLesion, pseudonymised ingest
    """
    ids = app.ids(pseudonym_key)
    loader = StudyVolumes(images, ids, file_names(dl_info, ids) if dl_info else None, image_format)
    embedder, model_id, note = load_embedder(model_path) if embed else (None, None, None)
    config = MiningConfig(min_score=DEFAULT_MIN_SCORE if min_score is None else min_score)
    out = mine(app.engine(), loader, patient=patient, config=config, embedder=embedder, model_id=model_id,
               rank_calibration=rank_calibration, batch_size=batch_size, progress=app.progress)
    out.embed_note = note
    emit(out, as_json, _text)


def _text(o) -> str:
    lines = [f"patients mined:     {o['patients']}",
             f"tracks:             {o['tracks']}",
             f"candidate studies:  {o['candidateStudies']}",
             f"proposals ≥ {o['minScore']:.2f}:   {o['proposals']} "
             f"(new {o['created']}, refreshed {o['refreshed']}, already reviewed {o['kept']})",
             f"below threshold:    {o['belowThreshold']}"]
    rk = o.get("ranking") or {}
    if rk.get("rankWeights"):
        w = ", ".join(f"{k} {v:.2f}" for k, v in rk["rankWeights"].items())
        lines.append(f"ranking weights:    {w} ({rk['choiceSets']} leave-one-out studies, {rk['seconds']:.0f} s)")
    elif rk.get("studies") is not None and "rankWeights" in rk:
        lines.append(f"ranking weights:    none (by score: {rk.get('choiceSets', 0)} leave-one-out studies are too few)")
    if o.get("secondsPerCandidateStudy") is not None:
        lines.append(f"time per study:     {o['secondsPerCandidateStudy'] * 1000:.0f} ms")
    if o.get("embedNote"):
        lines.append(f"note: {o['embedNote']}")
    if o["skipped"]:
        lines.append(f"skipped: {o['skipped']}")
        lines += [f"  {e['item']}: {e['reason']}" for e in o["errors"][:20]]
    lines.append("next: lesiondb review list")
    return "\n".join(lines)
