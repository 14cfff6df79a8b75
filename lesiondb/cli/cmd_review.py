"""``lesiondb review``: list, accept, reject and export the review items: mining proposals
(``PR-…``) and matching's possible links (``PS-…``, POSSIBLE_SAME_LESION)."""
from __future__ import annotations

import csv
import io
import json
import sys

import click

from ..mining import EXPORT_FIELDS, accept, list_proposals, reject
from ..tracking import accept_possible, list_possible, reject_possible
from .common import emit, handle_errors, pass_app

#: Review ids of matching's possible links start so (mining proposals: ``PR-``).
LINK_PREFIX = "PS-"


@click.group("review")
def command() -> None:
    """Review what lesiondb proposes: missing annotations (`lesiondb mine`, ids PR-…) and links
    matching found plausible but not sure enough to make (`lesiondb match`, ids PS-…).

    \b
      lesiondb review list --status pending
      lesiondb review list --kind links                 # POSSIBLE_SAME_LESION items
      lesiondb review accept PR-… --by "dr. smith"     # becomes an annotated lesion of its track
      lesiondb review accept PS-… --by "dr. smith"     # the candidate joins the track (re-matched)
      lesiondb review reject PR-… --by "dr. smith" --reason "vessel"
      lesiondb review export --format csv -o proposals.csv
    """


@command.command("list")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected"]), help="Only this status.")
@click.option("--patient", help="Only this patient (patientId).")
@click.option("--kind", type=click.Choice(["proposals", "links"]), default="proposals", show_default=True,
              help="proposals: missing annotations (lesiondb mine); links: possible SAME_LESION links "
                   "(lesiondb match).")
@click.option("--limit", type=click.IntRange(1), help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
@handle_errors
def list_(app, status, patient, kind, limit, as_json) -> None:
    """List review items: proposals best score first within each study, links most probable first."""
    if kind == "links":
        emit(list_possible(app.engine(), status=status, patient=patient, limit=limit), as_json, _links)
        return
    rows = list_proposals(app.engine(), status=status, patient=patient, limit=limit)
    emit(rows, as_json, _table)


@command.command("accept")
@click.argument("proposal_id")
@click.option("--by", "by", envvar="USER", help="Reviewer name recorded with the lesion [default: $USER].")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@handle_errors
def accept_(app, proposal_id, by, as_json) -> None:
    """Accept PROPOSAL_ID: a proposal becomes an annotated lesion of its track; a possible link
    (PS-…) joins its candidate to the track. Accepting again changes nothing."""
    if proposal_id.startswith(LINK_PREFIX):
        out = accept_possible(app.engine(), proposal_id, by=by)
        emit(out, as_json, lambda o: f"{o['reviewId']} accepted: {o['candidateLesionId']} joined track "
             f"{o.get('trackingUid')}" + (" (already accepted)" if o["alreadyAccepted"] else ""))
        return
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
    """Reject PROPOSAL_ID: re-mining will not propose it again, re-matching keeps a rejected link's
    lesions apart. Rejecting again changes nothing."""
    if proposal_id.startswith(LINK_PREFIX):
        out = reject_possible(app.engine(), proposal_id, by=by, reason=reason)
        emit(out, as_json, lambda o: f"{o['reviewId']} rejected" + (" (already rejected)" if o["alreadyRejected"] else ""))
        return
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


def _links(rows) -> str:
    if not rows:
        return "no possible links (run `lesiondb match`)"
    out = [f"{'reviewId':<24} {'status':<9} {'prob':>5}  {'patientId':<20} {'trackingUid':<28} candidate"]
    for r in rows:
        out.append(f"{r['reviewId']:<24} {r['status']:<9} {r['probability']:>5.2f}  {r['patientId']:<20} "
                   f"{r['trackingUid'][:28]:<28} {r['candidateLesionId']} (study {r['candidateStudyIndex']})")
    return "\n".join(out)
