"""``lesiondb match``: link every patient's lesions across follow-up studies into tracks."""
from __future__ import annotations

import click

from ..tracking import match_graph
from .common import emit, handle_errors, pass_app


@click.command("match")
@click.option("--patient", help="Match one patient (its patientId) instead of every patient.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Fit the noise scales to this graph first (unsupervised, on a fixed sample of patients); "
                   "--no-calibrate uses the physical defaults.")
@click.option("--batch-size", type=click.IntRange(1), default=200, show_default=True,
              help="Patients read and written per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, patient, calibrate, batch_size, as_json) -> None:
    """Match lesions across each patient's studies: SAME_LESION edges, tracks, RECIST status.

    \b
    Every pair of a patient's scans is aligned (the shift between two scans is estimated from
    the lesions they share) and matched one-to-one by position, size, type and, where lesions
    are embedded, appearance; matches become tracks, never holding two lesions of one scan
    (two annotations whose centres lie inside each other are bookmarks of one lesion: matched as one).
    Each track gets a DICOM-style trackingUid and a RECIST 1.1 status (new, disappeared,
    progressing, responding, stable, baseline). Re-running changes nothing; re-matching after
    new annotations replaces the patient's stale edges and tracks.

    \b
    Examples:
      lesiondb match                       # every patient
      lesiondb match --patient P-… --json
      lesiondb query progressing_lesions --param limit=20
    """
    report = match_graph(app.engine(), patient, calibrate=calibrate, batch_size=batch_size, progress=app.progress)
    out = report.to_json()
    if not out["patients"] and not out["skipped"]:
        out["note"] = "no lesions in the graph: ingest annotations first (lesiondb ingest …)"
    emit(out, as_json, _text)


def _text(o) -> str:
    st = ", ".join(f"{k} {v}" for k, v in o["statuses"].items()) or "none"
    lines = [
        f"patients:        {o['patients']} ({o['lesions']} lesions, {o['scanPairs']} scan pairs)",
        f"tracks:          {o['tracks']} ({st})",
        f"SAME_LESION:     {o['sameLesionEdges']}",
        f"POSSIBLE:        {o['possibleSameLesionEdges']} (plausible lesions a track may be missing; for review)",
        f"written:         {o['written']['edges']} edges, {o['written']['possibleEdges']} possible edges, "
        f"{o['written']['tracks']} tracks "
        f"({o['unchangedTracks']} tracks unchanged)",
        f"deleted:         {o['deleted']['edges']} stale edges, {o['deleted']['possibleEdges']} stale possible edges, "
        f"{o['deleted']['trackLinks']} stale track links, "
        f"{o['deleted']['tracks']} empty tracks",
        f"seconds:         {o['seconds']:.2f}",
    ]
    if o.get("calibration"):
        c = o["calibration"]
        lines.append(f"calibration:     {c['pairs']} pairs, {c['scanPairs']} scan pairs; gate "
                     f"{c['params']['gate_cost']:.2f} nats, temperature {c['params']['temperature']:.2f}")
    for s in o["skipped"]:
        lines.append(f"skipped:         {s['patientId']}: {s['reason']}")
    if o.get("note"):
        lines.append(o["note"])
    return "\n".join(lines)
