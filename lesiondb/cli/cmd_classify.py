"""``lesiondb classify``: predict the coarse type of unlabelled lesions by a k-NN vote."""
from __future__ import annotations

import click

from ..embedding import predict_types
from .common import emit, handle_errors, pass_app


@click.command("classify")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000), help="Neighbours that vote.")
@click.option("--method", type=click.Choice(["embeddings", "edges"]), default="embeddings", show_default=True,
              help="embeddings: the k nearest labelled lesions (exact); edges: the labelled lesions among each "
                   "lesion's SIMILAR_TO neighbours (faster, fewer votes).")
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (and every prediction) as JSON.")
@pass_app
@handle_errors
def command(app, k, method, dry_run, as_json) -> None:
    """Predict the type of every embedded lesion without a label.

    Each prediction is the majority type of the lesion's k nearest labelled lesions, with the
    share of votes as confidence, written as predictedTypeCode / predictedTypeName /
    predictedTypeConfidence: a label (typeCode, typeName) is never overwritten. Also reports the
    accuracy of the same vote on labelled lesions, each predicted from other patients' lesions.
    """
    emit(predict_types(app.engine(), k=k, method=method, write=not dry_run, cache_dir=app.embedding_cache),
         as_json, _text)


def _text(o: dict) -> str:
    lines = [f"model {o['modelId']}, {o['method']}, k={o['k']}: {o['predicted']} unlabelled lesions predicted"
             f" (mean confidence {o['meanConfidence']}), {o['written']} written"]
    if o.get("heldOutAccuracy"):
        h = o["heldOutAccuracy"]
        lines.append(f"  accuracy on {h['lesions']} labelled lesions (other patients' votes): {h['accuracy']}")
    for name, n in o["distribution"].items():
        lines.append(f"  {name:<12} {n:>7}")
    return "\n".join(lines)
