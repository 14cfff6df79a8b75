"""``lesiondb eval dls PAIRS.json --dl-info DL_info.csv``: the DLS lesion-tracking benchmark."""
from __future__ import annotations

import click

from ..embedding.patches import default_workers
from ..tracking import evaluate_dls
from .common import emit, handle_errors, pass_app, reader_workers_option


@click.command("dls")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--dl-info", required=True, type=click.Path(exists=True, dir_okay=False),
              help="DeepLesion DL_info.csv holding every lesion of the pairs' patients.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Calibrate the noise scales on the benchmark's lesions (unsupervised), as `lesiondb match` does.")
@click.option("--cv-folds", type=click.IntRange(0), default=5, show_default=True,
              help="Folds of the leave-patients-out figure (0 or 1: skip it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patient folds.")
@click.option("--keep-graph", is_flag=True,
              help="Keep the scratch graph (lesiondb_eval_dls) for inspection instead of deleting it.")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="DeepLesion Images_png folder: the lesions whose slices are there are embedded first, so "
                   "matching adds their appearance term (lesions without images are matched on metadata).")
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="With --images: the encoder (a model folder or model.pt) [default: the packaged model].")
@reader_workers_option("With --images: ")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@pass_app
@handle_errors
def command(app, pairs, dl_info, calibrate, cv_folds, seed, keep_graph, images, model_path, workers, as_json) -> None:
    """Score lesion matching on DLS pairs (Deep Lesion Tracker's benchmark on DeepLesion).

    \b
    The pairs' patients are ingested from DL_info into a scratch graph (not yours), matched
    exactly as `lesiondb match` does, and each directed pair is scored: pair_accuracy (the
    source's track holds the true target in the target scan), the same over non-trivial pairs
    (more than one candidate), DLT's cpm_radius / cpm_10mm and the mean centre distance, the
    nearest-normalised-location baseline, and a leave-patients-out figure; the failures by cause
    (gate, track building, assignment), the calibration (ECE) of the SAME_LESION probabilities
    and the POSSIBLE_SAME_LESION edges' precision and recall. The JSON lists the keys of the
    failing pairs (failed_pairs; tools/dls_bound.py --failures reads them).

    \b
    Examples:
      lesiondb eval dls ../shared/data/deeplesion_dls_tracking/valid.json \\
          --dl-info ../shared/data/deeplesion/DL_info_available_merged.csv --json
      lesiondb eval dls valid.json --dl-info DL_info.csv --images Images_png   # + appearance
    """
    workers = (default_workers() if workers is None else workers) if images else 0
    out = evaluate_dls(app.engine(), pairs, dl_info, calibrate=calibrate, cv_folds=cv_folds, seed=seed,
                       keep_graph=keep_graph, images=images, model_path=model_path, workers=workers,
                       progress=app.progress)
    emit(out, as_json, _text)


def probability_lines(o) -> list[str]:
    """The calibration of the SAME_LESION probabilities and the POSSIBLE edges' precision / recall."""
    def f(v, fmt="{:.4f}"):
        return "n/a" if v is None else fmt.format(v)

    pr, po = o.get("probability") or {}, o.get("possible") or {}
    return [
        f"SAME_LESION probability: ECE {f(pr.get('ece'))} over {pr.get('n', 0)} scored edges "
        f"(mean probability {f(pr.get('meanProbability'))}, observed {f(pr.get('frequency'))})",
        f"POSSIBLE_SAME_LESION:  {po.get('edges', 0)} edges; precision {f(po.get('precision'))} "
        f"({po.get('labelled', 0)} with known truth), recall {f(po.get('recall'))} "
        f"({po.get('missedPairsPointedAt', 0)} of {po.get('missedPairs', 0)} missed pairs), ECE {f(po.get('ece'))}",
    ]


def _text(o) -> str:
    def f(v, fmt="{:.4f}"):
        return "n/a" if v is None else fmt.format(v)

    cv = o.get("cross_validated") or {}
    lines = [
        f"pairs:                 {o['mapped']} of {o['pairs']} mapped to DL_info ({o['patients']} patients, "
        f"{o['lesions']} lesions)",
        f"pair_accuracy:         {f(o['pair_accuracy'])}",
        f"non-trivial pairs:     {o['non_trivial']} (accuracy {f(o['non_trivial_accuracy'])})",
        f"cpm_radius / cpm_10mm: {f(o['cpm_radius'])} / {f(o['cpm_10mm'])}",
        f"mean distance:         {f(o['mean_distance_mm'], '{:.2f}')} mm ({o['unmatched']} sources unmatched)",
        f"held-out (CV by patient, {cv.get('folds', 0)} folds): {f(cv.get('pair_accuracy'))}",
        f"directed (no one-to-one): {f(o['directed_accuracy'])}",
        f"baseline (nearest normalised location): {f(o['baseline_nearest_location'])}",
        "failures by cause:     " + ", ".join(f"{k} {v}" for k, v in (o.get("failure_causes") or {}).items()),
        *probability_lines(o),
    ]
    if o.get("embedding"):
        e = o["embedding"]
        lines.append(f"embedded:              {e['lesionsWithEmbedding']} of {o['lesions']} lesions "
                     f"(model {e['modelId']}; {e['notEmbedded']} without usable images)")
    return "\n".join(lines)
