"""``lesiondb eval embedding COHORT``: the paper's embedding measures, model vs baselines."""
from __future__ import annotations

import click

from ..core.metrics import flatten
from ..embedding.baseline import metadata_type_accuracy
from ..embedding.training import evaluate_encoder
from .common import emit, handle_errors, pass_app


@click.command("embedding")
@click.argument("cohort", type=click.Path(exists=True))
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="Model folder or .pt file from `lesiondb train` [default: the packaged default model].")
@click.option("--k", default=5, show_default=True, type=click.IntRange(1), help="Neighbours for retrieval and kNN.")
@click.option("--include-same-patient", is_flag=True,
              help="Let a lesion's neighbours come from its own patient (by default they are excluded: a "
                   "follow-up of the same lesion is a trivial match).")
@click.option("--metadata-only", is_flag=True,
              help="COHORT is a DeepLesion DL_info.csv: report kNN type accuracy from the normalised location "
                   "(and size) alone on its val/test rows, no images (the paper's location-only baseline).")
@click.option("--seed", default=0, show_default=True, help="Seed of k-means and of the untrained baseline.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
@handle_errors
def command(app, cohort, model_path, k, include_same_patient, metadata_only, seed, as_json) -> None:
    """Retrieval errors@K (type, location, size), kNN type accuracy, k-means purity and NMI.

    The model is compared with two baselines on the same lesions: `location_only` (normalised
    location as the feature) and `untrained` (the same encoder, random init). JSON keys:
    retrieval.type_error_at_5, retrieval.location_error_at_5, retrieval.size_error_at_5,
    classification_accuracy, clustering.purity, clustering.nmi, and the same under baselines.<name>.
    """
    if metadata_only:
        emit(metadata_type_accuracy(cohort, k=k), as_json, _metadata_text)
        return
    res = evaluate_encoder(cohort, model_path, k=k, exclude_same_patient=not include_same_patient, seed=seed,
                           cache_dir=app.patch_cache, progress=app.progress)
    for p in res.metrics.get("problems", []):
        click.echo(f"skipped: {p}", err=True)
    emit(res, as_json, _text)


def _text(r: dict) -> str:
    names = ["model", *r["baselines"]]
    rows = {"model": flatten({k: r[k] for k in ("retrieval", "classification_accuracy", "clustering")})}
    rows.update({n: flatten(b) for n, b in r["baselines"].items()})
    lines = [f"model {r['model']['model_id']} on {r['cohort']}: {r['lesions']} lesions, k={r['k']}",
             f"{'measure':34s}" + "".join(f"{n:>15s}" for n in names)]
    for m in rows["model"]:
        lines.append(f"{m:34s}" + "".join(f"{rows[n].get(m, float('nan')):15.4f}" for n in names))
    return "\n".join(lines)


def _metadata_text(r: dict) -> str:
    lines = [f"{r['source']}: {r['labelled_rows']} labelled val/test rows, k={r['k']}"]
    for setting, accs in r["accuracy"].items():
        lines.append(f"  {setting}: " + ", ".join(f"{f} {v:.3f}" for f, v in accs.items()))
    return "\n".join(lines)
