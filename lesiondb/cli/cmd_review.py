"""``lesiondb review``: list, accept, reject and export mining proposals."""
from __future__ import annotations

import csv
import io
import json
import sys

import click

from ..mining import EXPORT_FIELDS, accept, list_proposals, reject
from .common import emit, handle_errors, pass_app


@click.group("review")
def command() -> None:
    """Review missing-annotation proposals made by `lesiondb mine`.

    \b
      lesiondb review list --status pending
      lesiondb review accept PR-… --by "dr. smith"     # becomes an annotated lesion of its track
      lesiondb review reject PR-… --by "dr. smith" --reason "vessel"
      lesiondb review export --format csv -o proposals.csv
    """


@command.command("list")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected"]), help="Only this status.")
@click.option("--patient", help="Only this patient (patientId).")
@click.option("--limit", type=click.IntRange(1), help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
@handle_errors
def list_(app, status, patient, limit, as_json) -> None:
    """List proposals, best score first within each study."""
    rows = list_proposals(app.engine(), status=status, patient=patient, limit=limit)
    emit(rows, as_json, _table)


@command.command("accept")
@click.argument("proposal_id")
@click.option("--by", "by", envvar="USER", help="Reviewer name recorded with the lesion [default: $USER].")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@handle_errors
def accept_(app, proposal_id, by, as_json) -> None:
    """Accept PROPOSAL_ID: it becomes an annotated lesion of its track (accepting again changes nothing)."""
    out = accept(app.engine(), proposal_id, by=by)
    emit(out, as_json, lambda o: f"{o['proposalId']} accepted → lesion {o['lesionId']}"
         + (" (already accepted)" if o["alreadyAccepted"] else ""))


@command.command("reject")
@click.argument("proposal_id")
@click.option("--by", "by", envvar="USER", help="Reviewer name [default: $USER].")
@click.option("--reason", help="Why (free text, kept on the proposal).")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@handle_errors
def reject_(app, proposal_id, by, reason, as_json) -> None:
    """Reject PROPOSAL_ID (re-mining will not propose it again; rejecting again changes nothing)."""
    out = reject(app.engine(), proposal_id, by=by, reason=reason)
    emit(out, as_json, lambda o: f"{o['proposalId']} rejected" + (" (already rejected)" if o["alreadyRejected"] else ""))


@command.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File [default: stdout].")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected"]), help="Only this status.")
@click.option("--patient", help="Only this patient (patientId).")
@pass_app
@handle_errors
def export(app, fmt, output, status, patient) -> None:
    """Export proposals (every field a reviewer or a downstream tool needs) as CSV or JSON."""
    rows = list_proposals(app.engine(), status=status, patient=patient)
    if fmt == "json":
        text = json.dumps(rows, indent=2, default=str) + "\n"
    else:
        buf = io.StringIO()
        extra = sorted({k for r in rows for k in r} - set(EXPORT_FIELDS))
        w = csv.DictWriter(buf, fieldnames=list(EXPORT_FIELDS) + extra, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (" ".join(f"{x:g}" for x in v) if isinstance(v, list) else v) for k, v in r.items()})
        text = buf.getvalue()
    if output:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        click.echo(f"wrote {len(rows)} proposals to {output}", err=True)
    else:
        sys.stdout.write(text)


def _table(rows) -> str:
    if not rows:
        return "no proposals (run `lesiondb mine`)"
    head = f"{'proposalId':<25} {'status':<9} {'score':>5}  {'patientId':<20} {'study':<20} {'slice':>5} {'long mm':>7}"
    out = [head]
    for r in rows:
        out.append(f"{r['proposalId']:<25} {r['status']:<9} {r.get('score', 0):>5.2f}  {r['patientId']:<20} "
                   f"{r['studyId']:<20} {r.get('sliceIndex', ''):>5} {r.get('longDiameterMm', 0):>7.1f}")
    return "\n".join(out)
