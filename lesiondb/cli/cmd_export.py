"""``lesiondb export FORMAT …``: one subcommand per format, in ``export_<format>.py`` modules."""
from __future__ import annotations

import click

from .common import DiscoveredGroup


@click.group("export", cls=DiscoveredGroup, package="lesiondb.cli", prefix="export_")
def command() -> None:
    """Write the graph out for other systems: DICOM SR reports (`sr`), neo4j-admin import files (`neo4j-import`)."""
