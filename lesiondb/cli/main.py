"""``lesiondb``: the lesion graph database command line."""
from __future__ import annotations

import logging

import click

from .. import __version__
from .common import AppContext, DiscoveredGroup


@click.group(cls=DiscoveredGroup, package="lesiondb.cli", prefix="cmd_",
             context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LESIONDB"})
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="LESIONDB_DATA_DIR",
              help="Where the embedded engine keeps its graph, keys and models "
                   "[default: $LESIONDB_DATA_DIR or ~/.local/share/lesiondb].")
@click.option("--uri", envvar="LESIONDB_URI",
              help="Use Neo4j at this bolt:// or neo4j:// URI instead of the embedded engine "
                   "(credentials from LESIONDB_USER / LESIONDB_PASSWORD).")
@click.option("--user", envvar="LESIONDB_USER", help="Neo4j user [default: neo4j].")
@click.option("--database", envvar="LESIONDB_DATABASE",
              help="Neo4j database, or the embedded engine's graph name [default: lesiondb].")
@click.option("--progress/--no-progress", default=True, help="Show progress bars on stderr.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(__version__, prog_name="lesiondb")
@click.pass_context
def cli(ctx: click.Context, data_dir, uri, user, database, progress, verbose) -> None:
    """lesiondb: a lesion graph database for radiology.

    \b
    Quick start:
      lesiondb demo                      # synthetic cohort -> graph, on the embedded engine
      lesiondb stats --json              # what is in the graph
      lesiondb query patients --json     # run a named Cypher query

    By default the graph lives in an embedded FalkorDB in --data-dir; pass --uri to use Neo4j.
    """
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    app = AppContext(data_dir, uri, user, database, progress=progress)
    ctx.obj = app
    ctx.call_on_close(app.close)


def main() -> None:  # pragma: no cover
    cli()


if __name__ == "__main__":  # python -m lesiondb.cli.main
    cli()
