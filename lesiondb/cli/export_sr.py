"""``lesiondb export sr OUT --images COHORT [--patient ID] [--include-proposals]``."""
from __future__ import annotations

from typing import Any

import click

from ..interop import export_sr
from .common import emit, handle_errors, pass_app, pseudonym_key_option


@click.command("sr")
@click.argument("out_dir", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
              help="The folder of CT DICOM series the lesions were ingested from (any layout).")
@click.option("--patient", help="Only this patient (the graph's patientId, P-…).")
@click.option("--include-proposals", is_flag=True,
              help="Also export pending mining proposals, marked not yet reviewed (accepted ones always are).")
@click.option("--overwrite", is_flag=True, help="Replace the reports of a previous export in OUT.")
@pseudonym_key_option("the pseudonyms (the graph's key)")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, out_dir, images, patient, include_proposals, overwrite, pseudonym_key, as_json) -> None:
    """Write one DICOM SR measurement report (TID 1500) per study into OUT.

    Each lesion is a measurement group: its RECIST long and short axes as polylines on its key
    slice, the diameters in mm, its type as a SNOMED CT finding site, its track's Tracking
    Unique Identifier (the same in every study of the patient) and its RECIST response at that
    visit. The patient and study identity come from the images under --images (the graph holds
    pseudonyms only); the reports reference the images, so a viewer or PACS shows them over the
    series (docs/interop.md). OUT must be empty or new; files are named by the study's pseudonym.
    """
    res = export_sr(app.engine(), out_dir, images, app.ids(pseudonym_key), patient=patient,
                    include_proposals=include_proposals, overwrite=overwrite, progress=app.progress)
    emit(res, as_json, _text)


def _text(o: dict[str, Any]) -> str:
    lines = [f"{o['reports']} report(s) of {o['patients']} patient(s): {o['lesions']} lesion(s)"
             + (f", {o['pendingProposals']} pending proposal(s)" if o["pendingProposals"] else "")]
    if o["unmatchedLesions"]:
        lines.append(f"  {o['unmatchedLesions']} lesion(s) not matched yet (run `lesiondb match` first to "
                     "track them across studies)")
    for s in o["skipped"][:20]:
        what = s.get("lesionId") or s.get("proposalId")
        lines.append(f"  skipped {what} ({s['studyId']}): {s['reason']}")
    if len(o["skipped"]) > 20:
        lines.append(f"  … and {len(o['skipped']) - 20} more (use --json for all)")
    return "\n".join(lines)
