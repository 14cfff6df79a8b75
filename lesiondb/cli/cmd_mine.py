"""``lesiondb mine``: propose the lesions radiologists did not annotate (missing-annotation mining)."""
from __future__ import annotations

import click

from .common import emit, handle_errors, pass_app, progress_bar


@click.command("mine")
@click.option("--patient", help="Mine one patient (its patientId) instead of every tracked patient.")
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), default=None,
              help="Propose only candidates scoring at least this (0..1) [default: 0.04].")
@click.option("--images", "images", type=click.Path(exists=True, file_okay=False),
              help="Where the studies' images live: the cohort folder given to `lesiondb ingest dicom`, or "
                   "DeepLesion's Images_png folder (PPPPPP_SS_RR/KKK.png) for `lesiondb ingest deeplesion` graphs.")
@click.option("--dl-info", "dl_info", type=click.Path(exists=True, dir_okay=False),
              help="DeepLesion: the DL_info.csv that was ingested, to find each study's series folder when "
                   "the graph was ingested without --keep-source-ids (same pseudonym key).")
@click.option("--pseudonym-key", envvar="LESIONDB_PSEUDONYM_KEY",
              help="With --dl-info: the key the ingest used [default: the data dir's pseudonym.key].")
@click.option("--image-format", type=click.Choice(["auto", "dicom", "deeplesion"]), default="auto",
              show_default=True,
              help="auto: DeepLesion PNG slices for studies ingested from DL_info, DICOM series otherwise.")
@click.option("--embed/--no-embed", default=True, show_default=True,
              help="Score candidates by embedding distance too, when an encoder is available.")
@click.option("--rank-calibration/--no-rank-calibration", default=True, show_default=True,
              help="Learn how to rank each study's candidates from the graph's own tracks first (withhold "
                   "each annotated instance of a track seen twice or more, mine it back); off: rank by score.")
@click.option("--batch-size", default=50, show_default=True, help="Patients read from the graph per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, patient, min_score, images, dl_info, pseudonym_key, image_format, embed, rank_calibration,
            batch_size, as_json) -> None:
    """Mine every track for the studies where its lesion should be visible but is not annotated.

    For each track (run `lesiondb match` first), every study of the patient where the lesion
    should be visible is searched around the position predicted from the track's other studies;
    the best blob candidate that looks like the track's lesions becomes a pending (:Proposal).
    Candidates are ranked by weights learned from the graph's own tracks first (each annotated
    instance of a track seen twice or more withheld and mined back: `ranking` in --json).
    Re-running refreshes pending proposals and never touches accepted or rejected ones. Review them
    with `lesiondb review list|accept|reject`.

    \b
    Images: DICOM studies are read from their series (--images COHORT_DIR for relative references);
    DeepLesion studies from Images_png/PPPPPP_SS_RR/KKK.png (--images PATH/Images_png), only on the
    slices present there. A study whose images cannot be read is reported and skipped.

    \b
    Examples:
      lesiondb mine --images COHORT_DIR --json
      lesiondb mine --images Images_png --dl-info DL_info.csv   # DeepLesion, pseudonymised ingest
    """
    from ..mining import run as mining
    from ..mining.volumes import StudyVolumes, has_deeplesion_studies

    threshold = mining.DEFAULT_MIN_SCORE if min_score is None else min_score
    eng = app.engine()
    names = None
    if dl_info:
        from ..core.pseudonym import Pseudonymizer
        from ..embedding.stage import deeplesion_file_names

        names = deeplesion_file_names(dl_info, Pseudonymizer.from_data_dir(app.data_dir, pseudonym_key))
    loader = StudyVolumes(images, names, image_format)
    total = mining.count_patients(eng, patient)
    if total == 0:
        raise click.ClickException(
            f"no tracked patient{' ' + patient if patient else ''} in the graph: run `lesiondb match` first"
            + (" (or check the --patient id)" if patient else ""))
    first = next(iter(mining.read_cases(eng, patient, batch_size=1)), None)  # one patient: cheap
    if images is None and first is not None and has_deeplesion_studies([first], image_format):
        raise click.ClickException(
            "the graph holds DeepLesion studies: pass --images PATH/Images_png (the folder with the "
            "PPPPPP_SS_RR/KKK.png slices)" + ("" if dl_info else ", and --dl-info DL_info.csv when the ingest "
                                               "did not use --keep-source-ids"))
    embedder, model_id, note = (None, None, None)
    if embed:
        embedder, model_id, note = _embedder()
    with progress_bar(app, total, "mine", "patient") as bar:
        out = mining.mine(eng, loader, patient=patient, min_score=threshold,
                          embedder=embedder, model_id=model_id, batch_size=batch_size, progress=bar.update,
                          rank_calibration=rank_calibration)
    if note:
        out["embedNote"] = note
    emit(out, as_json, _text)


def _embedder():
    """(embedder, modelId, note): the default encoder when lesiondb.nn provides one."""
    from ..mining.run import embedder_or_note

    return embedder_or_note()


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
