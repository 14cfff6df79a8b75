"""``lesiondb demo``: a synthetic cohort through the whole pipeline, then how to query it."""
from __future__ import annotations

from typing import Any

import click

from ..demo import run_demo
from .common import emit, handle_errors, pass_app


@click.command("demo")
@click.option("--patients", default=6, show_default=True, type=click.IntRange(1, 200),
              help="Synthetic patients to generate (1–6 studies each).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the cohort.")
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
@pass_app
@handle_errors
def command(app, patients: int, seed: int, as_json: bool) -> None:
    """Run the whole pipeline on a synthetic CT cohort and show how to query the result.

    The cohort is written to DATA_DIR/demo and goes through every step (synth → ingest, which
    embeds every lesion → match → mine); then the graph's contents and example queries are
    printed. Re-running with the same options changes nothing in the graph; the cohort folder is
    regenerated.
    """
    emit(run_demo(app, patients, seed, progress=app.progress), as_json, _text)


def _text(o: dict[str, Any]) -> str:
    lines = [f"lesiondb demo: done in {o['seconds']:.1f} s (data dir {o['dataDir']})"]
    for s in o["steps"]:
        if s["status"] == "skipped":
            lines.append(f"  {s['name']:<7} skipped: {s['reason']}")
        elif s["name"] == "synth":
            lines.append(f"  {s['name']:<7} {s.get('patients')} patients, {s.get('studies')} studies, "
                         f"{s.get('lesion_instances')} lesions ({s.get('annotated')} annotated, "
                         f"{s.get('withheld')} withheld), {s.get('slices')} CT slices in {o['cohort']} "
                         f"({s['seconds']:.1f} s)")
        elif s["name"] == "ingest":
            emb = (f"; {s['embedNote']}" if s.get("embedNote") else
                   f", {s.get('embedded', 0)} embedded ({s.get('similarEdgesWritten', 0)} SIMILAR_TO edges)")
            lines.append(f"  {s['name']:<7} {s.get('written')} lesions written, {s.get('unchanged')} unchanged, "
                         f"{s.get('rejected')} rejected, {s.get('studies')} studies{emb} ({s['seconds']:.1f} s)")
            lines += [f"          rejected {e['source']}: {e['reason']}" for e in s.get("errors", [])]
        else:
            extra = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("name", "status", "seconds", "about"))
            lines.append(f"  {s['name']:<7} {extra} ({s['seconds']:.1f} s)")
    nodes = ", ".join(f"{k} {v}" for k, v in o["stats"]["nodes"].items())
    rels = ", ".join(f"{k} {v}" for k, v in o["stats"]["relationships"].items())
    lines.append(f"graph: {nodes}; {rels}")
    if o["nodesBefore"] and o["nodesAdded"]:
        lines.append(f"note: the graph already held {o['nodesBefore']} nodes; the demo cohort was added beside "
                     "them (use a fresh --data-dir for a demo on its own)")
    lines.append("try:")
    lines += [f"  {c}" for c in o["try"]]
    return "\n".join(lines)
