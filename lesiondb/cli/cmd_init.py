"""``lesiondb init``: create constraints and indexes (idempotent)."""
from __future__ import annotations

import click

from .common import emit, handle_errors, pass_app


@click.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
@handle_errors
def command(app, as_json: bool) -> None:
    """Apply the graph schema (constraints, indexes); safe to run any number of times."""
    eng = app.engine()
    applied = eng.apply_schema()
    emit({"engine": eng.describe(), "schema": applied}, as_json,
         lambda o: f"schema applied on {o['engine']['dialect']}: {len(o['schema'])} statements")
