"""``lesiondb similar``: the lesions most similar to a lesion of the graph, or to a new region."""
from __future__ import annotations

import click

from ..embedding import load_encoder, similar, similar_to_region
from .common import emit, handle_errors, pass_app


def _floats(raw: str | None, n: tuple[int, ...], what: str) -> tuple[float, ...] | None:
    if raw is None:
        return None
    try:
        vals = tuple(float(v) for v in raw.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not {what}") from None
    if len(vals) not in n:
        raise click.BadParameter(f"{raw!r} is not {what}")
    return vals


@click.command("similar")
@click.argument("lesion_id", required=False)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 10000), help="How many lesions.")
@click.option("--type", "type_name", help="Only lesions of this coarse type (name or code: liver or 4).")
@click.option("--exclude-same-patient", is_flag=True, help="Leave out the query lesion's patient.")
@click.option("--image", "image", type=click.Path(exists=True),
              help="Query by a new region instead: a DeepLesion 16-bit PNG, a DICOM file, or a series folder.")
@click.option("--box", help="The region on --image: x1,y1,x2,y2 in pixels.")
@click.option("--slice", "slice_index", type=int, help="Slice of the DICOM series (0-based, head first) "
              "[default: the --image file's].")
@click.option("--spacing", help="Pixel spacing of a PNG in mm: SX or SX,SY (DL_info Spacing_mm_px_).")
@click.option("--slice-interval", type=float, help="Slice interval in mm (a PNG's neighbours KKK±n.png are "
              "then used for the 3-slice context).")
@click.option("--model", "model_path", type=click.Path(exists=True),
              help="Encoder for --image [default: the shipped model]; must be the graph's model.")
@click.option("--exact", is_flag=True, help="With --image: scan every embedding instead of the vector index.")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
@pass_app
@handle_errors
def command(app, lesion_id, k, type_name, exclude_same_patient, image, box, slice_index, spacing,
            slice_interval, model_path, exact, as_json) -> None:
    """The K lesions most similar to LESION_ID (from its precomputed SIMILAR_TO edges), nearest first.

    \b
    Examples:
      lesiondb similar L-3f9c… -k 10 --type liver --exclude-same-patient
      lesiondb similar --image 000001_01_01/109.png --box 220,260,268,301 --spacing 0.82
      lesiondb similar --image cohort/dicom/P1/1.2…/1.2…/0031.dcm --box 100,90,130,118 --json
    """
    if (lesion_id is None) == (image is None):
        raise click.UsageError("give a LESION_ID, or --image FILE --box x1,y1,x2,y2 (not both)")
    if image is None and (box or spacing or slice_index is not None or slice_interval or exact):
        raise click.UsageError("--box, --slice, --spacing, --slice-interval and --exact go with --image")
    eng = app.engine()
    if lesion_id is not None:
        rows = similar(eng, lesion_id, k=k, type_name=type_name, exclude_same_patient=exclude_same_patient)
        emit(rows, as_json, lambda rs: _table(rs, f"lesions most similar to {lesion_id}"))
        return
    if exclude_same_patient:
        raise click.UsageError("--exclude-same-patient needs a LESION_ID (a new image has no patient in the graph)")
    if box is None:
        raise click.UsageError("--image needs --box x1,y1,x2,y2")
    bx = _floats(box, (4,), "x1,y1,x2,y2")
    sp = _floats(spacing, (1, 2), "SX or SX,SY")
    res = similar_to_region(eng, load_encoder(model_path), image, bx, k=k, type_name=type_name, exact=exact,
                            slice_index=slice_index, spacing_mm=None if sp is None else (sp[0], sp[-1]),
                            slice_interval_mm=slice_interval)
    if as_json:
        emit(res, True)
    else:
        click.echo(_table(res.results, f"lesions most similar to the region {box} of {image}"
                          + (f" ({res.query['note']})" if res.query.get("note") else "")))


def _table(rows, title: str) -> str:
    if not rows:
        return f"{title}: none"
    out = [title + ":", f"{'rank':>4}  {'distance':>8}  {'lesionId':<24} {'type':<12} {'patientId':<20} long mm"]
    for r in rows:
        t = r.get("typeName") or (f"({r['predictedTypeName']}?)" if r.get("predictedTypeName") else "-")
        d = r.get("longDiameterMm")
        out.append(f"{r['rank']:>4}  {r['distance']:>8.4f}  {r['lesionId']:<24} {t:<12} {r.get('patientId') or '-':<20} "
                   f"{'' if d is None else f'{d:.1f}'}")
    out.append(f"({'precomputed SIMILAR_TO edges' if rows[0]['source'] == 'edges' else rows[0]['source']})")
    return "\n".join(out)
