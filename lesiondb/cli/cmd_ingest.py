"""``lesiondb ingest SOURCE …``: one subcommand per source, in ``ingest_<source>.py`` modules."""
from __future__ import annotations

import click

from .common import DiscoveredGroup


@click.group("ingest", cls=DiscoveredGroup, package="lesiondb.cli", prefix="ingest_")
def command() -> None:
    """Load lesion annotations (and images) into the graph. Idempotent: re-running changes nothing."""
