"""``lesiondb stats``: node and relationship counts."""
from __future__ import annotations

import click

from ..graph import graph_stats
from .common import emit, handle_errors, pass_app


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help='Print {"nodes": {label: n}, "relationships": {type: n}}.')
@pass_app
@handle_errors
def command(app, as_json: bool) -> None:
    """Count nodes per label and relationships per type."""
    emit(graph_stats(app.engine()), as_json, _text)


def _text(o) -> str:
    lines = ["nodes:"] + [f"  {k:<12} {v:>9,}" for k, v in o["nodes"].items()]
    lines += ["relationships:"] + [f"  {k:<12} {v:>9,}" for k, v in o["relationships"].items()]
    return "\n".join(lines)
