"""``lesiondb eval mining COHORT``: missing-annotation mining against a synthetic cohort's ground truth."""
from __future__ import annotations

import click

from ..mining import DEFAULT_MIN_SCORE, evaluate_cohort, load_embedder
from .common import emit, handle_errors, pass_app


@click.command("mining")
@click.argument("cohort", type=click.Path(exists=True, file_okay=False))
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), default=None,
              help="Proposal threshold [default: lesiondb mine's, 0.04].")
@click.option("--patients", "max_patients", type=click.IntRange(1), help="Evaluate the first N patients only.")
@click.option("--embed/--no-embed", default=False, show_default=True,
              help="Also score by embedding distance with the encoder (when one is available).")
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="With --embed: the encoder [default: the shipped model].")
@click.option("--tracks", type=click.Choice(["truth", "matched"]), default="truth", show_default=True,
              help="truth: mine on the ground-truth tracks (measures mining alone); matched: match the "
                   "annotated lesions first as `lesiondb match` does, in a scratch graph, and mine on "
                   "those tracks (what a user gets end to end).")
@click.option("--rank-calibration/--no-rank-calibration", default=True, show_default=True,
              help="Rank candidates as `lesiondb mine` does, by weights learned from the cohort's own "
                   "annotated tracks first (the withheld lesions play no part); off: rank by score.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@pass_app
@handle_errors
def command(app, cohort, min_score, max_patients, embed, model_path, tracks, rank_calibration, as_json) -> None:
    """Mine a synthetic COHORT (from `lesiondb synth`) whose withheld annotations are known.

    By default tracks are the ground-truth tracks of the annotated lesions (so the figures
    measure mining, not matching); positions come from the annotations and the DICOM geometry,
    as ingest computes them. With --tracks matched the annotated lesions are ingested into a
    scratch graph (not yours) and matched as `lesiondb match` does, and mining runs on those
    tracks; a proposal then counts for the ground-truth track most of its track's lesions belong to.
    A proposal is right when its centre lies on the withheld lesion: within its radius (half its
    long diameter) of its centre, or inside its extent (the ground truth's ellipsoid);
    recall_radius_only / precision_radius_only use the radius alone. Reports recall (over withheld lesions whose track is annotated in another
    study), precision, median error (mm, proposals for a track and study that hold a withheld
    lesion), time per candidate study (detection + scoring; DICOM reading reported apart), and
    precision/recall over a range of thresholds.
    """
    embedder, model_id, _ = load_embedder(model_path) if embed else (None, None, None)
    out = evaluate_cohort(cohort, min_score=DEFAULT_MIN_SCORE if min_score is None else min_score,
                          max_patients=max_patients, embedder=embedder, model_id=model_id, progress=app.progress,
                          tracks=tracks, rank_calibration=rank_calibration,
                          app_engine=app.engine() if tracks == "matched" else None)
    emit(out, as_json, _text)


def _text(o) -> str:
    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = [f"cohort:              {o['cohort']} (seed {o.get('seed')})",
             f"tracks:              {o.get('tracks')}",
             f"withheld lesions:    {o['withheld']} ({o['withheldMinable']} minable: their track is annotated elsewhere)",
             f"proposals ≥ {o['minScore']:.2f}:    {o['proposals']} ({o['correct']} right)",
             f"recall:              {f(o['recall'])}",
             f"precision:           {f(o['precision'])}",
             f"  radius alone:      recall {f(o.get('recall_radius_only'))}, precision "
             f"{f(o.get('precision_radius_only'))}",
             f"median error:        {f(o['median_error_mm'], '{:.2f}')} mm",
             f"per candidate study: {f(o['seconds_per_candidate_study'], '{:.4f}')} s "
             f"(+ {f(o['seconds_loading_per_study'], '{:.4f}')} s reading DICOM per study)"]
    rk = o.get("ranking") or {}
    if rk.get("rankWeights"):
        w = ", ".join(f"{k} {v:.2f}" for k, v in rk["rankWeights"].items())
        lines.append(f"ranking weights:     {w} ({rk['choiceSets']} leave-one-out studies, {rk['seconds']:.0f} s)")
    else:
        lines.append("ranking weights:     none (ranked by score)")
    return "\n".join(lines)
