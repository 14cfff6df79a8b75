"""``lesiondb eval matching COHORT``: lesion matching against a synthetic cohort's ground truth."""
from __future__ import annotations

import click

from ..embedding.patches import default_workers
from ..tracking import evaluate_cohort
from .common import emit, handle_errors, pass_app, reader_workers_option
from .eval_dls import probability_lines


@click.command("matching")
@click.argument("cohort", type=click.Path(exists=True, file_okay=False))
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Calibrate the noise scales on the cohort (unsupervised), as `lesiondb match` does.")
@click.option("--keep-graph", is_flag=True,
              help="Keep the scratch graph (lesiondb_eval_matching) for inspection instead of deleting it.")
@click.option("--embed/--no-embed", default=False, show_default=True,
              help="Embed the lesions from the cohort's DICOM series first, so matching adds the appearance "
                   "term (a cohort made with --no-images has nothing to embed).")
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="With --embed: the encoder (a model folder or model.pt) [default: the packaged model].")
@reader_workers_option("With --embed: ")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@pass_app
@handle_errors
def command(app, cohort, calibrate, keep_graph, embed, model_path, workers, as_json) -> None:
    """Score lesion matching on a synthetic COHORT folder (from `lesiondb synth`).

    \b
    The cohort is ingested into a scratch graph (not yours) and matched as `lesiondb match`
    does. Reports precision and recall of SAME_LESION edges against every pair of annotated
    instances of one ground-truth track, F1, track purity (share of a track's lesions from its
    majority true track) and completeness (share of a true track's lesions in its majority
    predicted track), the calibration (ECE) of the SAME_LESION probabilities and the
    POSSIBLE_SAME_LESION edges' precision and recall.
    """
    workers = (default_workers() if workers is None else workers) if embed else 0
    out = evaluate_cohort(app.engine(), cohort, calibrate=calibrate, keep_graph=keep_graph, embed=embed,
                          model_path=model_path, workers=workers, progress=app.progress)
    emit(out, as_json, _text)


def _text(o) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    return "\n".join([
        f"cohort:        {o['cohort']} (seed {o.get('seed')}, images {o.get('images')})",
        f"lesions:       {o['lesions']} in {o['patients']} patients; {o['truePairs']} true pairs",
        f"precision:     {f(o['precision'])}",
        f"recall:        {f(o['recall'])}",
        f"f1:            {f(o['f1'])}",
        f"track purity:  {f(o['track_purity'])} (completeness {f(o['track_completeness'])})",
        *probability_lines(o),
        *([f"embedded:      {o['embedding']['lesionsWithEmbedding']} of {o['lesions']} lesions "
           f"(model {o['embedding']['modelId']})"] if o.get("embedding") else []),
    ])
