"""``lesiondb init``: create constraints and indexes (idempotent)."""
from __future__ import annotations

import click

from ..embedding.store import restore_vector_index
from .common import emit, handle_errors, pass_app


@click.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
@handle_errors
def command(app, as_json: bool) -> None:
    """Apply the graph schema (constraints, indexes); safe to run any number of times.

    Where lesions carry embeddings of the active model and the vector index is missing (a graph
    loaded by `neo4j-admin database import`, see `lesiondb export neo4j-import`), it is created
    too, and waited for until online."""
    eng = app.engine()
    applied = eng.apply_schema()
    dim = restore_vector_index(eng)
    emit({"engine": eng.describe(), "schema": applied, "vectorIndexDimension": dim}, as_json,
         lambda o: f"schema applied on {o['engine']['dialect']}: {len(o['schema'])} statements"
                   + (f"; vector index of {o['vectorIndexDimension']}-d embeddings online"
                      if o["vectorIndexDimension"] else ""))
