"""``lesiondb export neo4j-import DIR``."""
from __future__ import annotations

import click

from ..graph.neo4j_import import ARGS_FILE, export_neo4j_import
from .common import emit, handle_errors, pass_app


def _text(o: dict) -> str:
    nodes = ", ".join(f"{v:,} {k}" for k, v in o["nodes"].items())
    rels = ", ".join(f"{v:,} {k}" for k, v in o["relationships"].items())
    lines = [f"wrote {len(o['files'])} files ({o['bytes'] / 1e6:.1f} MB) to {o['outDir']} in {o['seconds']:.1f} s",
             f"  nodes: {nodes or 'none'}", f"  relationships: {rels or 'none'}"]
    if o["coerced"]:
        lines.append(f"  written as JSON strings (values of mixed types): {', '.join(o['coerced'])}")
    lines += ["import them into a stopped Neo4j 5 server (the database must not exist yet, or add "
              "--overwrite-destination), then start it and run `lesiondb init`:",
              f"  neo4j-admin $(cat {o['outDir']}/{ARGS_FILE})"]
    return "\n".join(lines)


@click.command("neo4j-import")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--database", default="neo4j", show_default=True, help="Database name in the import arguments.")
@click.option("--overwrite", is_flag=True, help="Replace what DIR holds.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
@handle_errors
def command(app, out_dir, database, overwrite, as_json) -> None:
    """Write the graph as CSV files for `neo4j-admin database import full`.

    Every node (embeddings included) and relationship, every property typed (string, long,
    double, boolean, arrays; float[] for the embeddings), one header and one data file per label
    and per relationship type. DIR/neo4j-admin-import.args holds the import's arguments. The
    bulk path for large archives: an import writes millions of nodes a minute, offline; then
    `lesiondb init` creates the constraints and the vector index on the imported graph.
    """
    res = export_neo4j_import(app.engine(), out_dir, database=database, overwrite=overwrite,
                              progress=app.progress)
    emit(res, as_json, _text)
