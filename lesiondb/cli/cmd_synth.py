"""``lesiondb synth OUT``: write a synthetic CT cohort with full ground truth."""
from __future__ import annotations

import click

from ..synth import generate_cohort
from .common import emit, handle_errors, pass_app


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, writable=True))
@click.option("--patients", "-n", type=click.IntRange(min=1),
              help="Number of patients [default: 10, or the --like file's patient count].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed: the same seed gives identical files (and DICOM UIDs).")
@click.option("--like", "like", type=click.Path(exists=True, dir_okay=False),
              help="A DeepLesion DL_info.csv whose structure to mirror: patients, studies per patient, "
                   "lesions per study, types (unlabelled rows get a drawn type), sizes and locations.")
@click.option("--no-images", is_flag=True,
              help="Write annotations.csv, ground_truth.json and cohort.json only (no DICOM): "
                   "a DeepLesion-scale cohort takes seconds.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes rendering studies [default: the CPU count, 1 for small cohorts]. "
                   "The output does not depend on it.")
@click.option("--withhold", nargs=2, type=click.FloatRange(0.0, 0.99), default=(0.3, 0.5), show_default=True,
              metavar="LOW HIGH",
              help="Per study, the fraction of lesion instances whose annotation is withheld is drawn "
                   "from [LOW, HIGH] (at least one annotation per study is kept).")
@click.option("--max-studies", type=click.IntRange(min=1), default=6, show_default=True,
              help="Most studies per patient (without --like).")
@click.option("--image-size", type=click.IntRange(min=64, max=1024), default=256, show_default=True,
              help="Rows and columns of every slice.")
@click.option("--force", is_flag=True, help="Replace a cohort already in OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, out, patients, seed, like, no_images, workers, withhold, max_studies, image_size,
            force, as_json) -> None:
    """Generate a synthetic CT cohort in OUT: DICOM series, annotations.csv, ground_truth.json.

    \b
    Each patient has 1-6 studies months apart; each study is one axial CT series (a slab of
    slices around its lesions) of a torso phantom that shifts between studies. Lesions of the
    eight DeepLesion types evolve over follow-ups (grow, shrink, stable, new, resolve); only part
    of them is annotated (DeepLesion-like RECIST rows in annotations.csv), ground_truth.json has
    them all with their tracks. Layout: docs/architecture.md; model: docs/synthetic-cohorts.md.

    \b
    Examples:
      lesiondb synth cohort --patients 20 --seed 1
      lesiondb synth dl_like --like DL_info.csv --no-images --json
    """
    if patients is None and like is None:
        patients = 10
    summary = generate_cohort(out, patients, seed, images=not no_images, like=like, workers=workers,
                              withhold=tuple(withhold), max_studies=max_studies, image_size=image_size,
                              overwrite=force, progress=app.progress)
    emit(summary, as_json, _text)


def _text(s: dict) -> str:
    lines = [
        f"wrote {s['out']}",
        f"  patients          {s['patients']:>9,}",
        f"  studies           {s['studies']:>9,}",
        f"  lesion tracks     {s['tracks']:>9,}",
        f"  lesion instances  {s['lesion_instances']:>9,}",
        f"  annotated         {s['annotated']:>9,}",
        f"  withheld          {s['withheld']:>9,}",
        f"  DICOM slices      {s['slices']:>9,}" if s["images"] else "  images            none (--no-images)",
        f"  seconds           {s['seconds']:>9.1f}  ({s['lesions_per_second']:.0f} lesions/s)",
    ]
    if s.get("like"):
        lines.append(f"  mirrors           {s['like']}"
                     + (f" ({s['like_rows_skipped']} bad rows skipped)" if s["like_rows_skipped"] else ""))
    for e in s.get("errors") or []:
        lines.append(f"  error: {e}")
    lines.append(f"next: lesiondb ingest dicom {s['out']}")
    return "\n".join(lines)
