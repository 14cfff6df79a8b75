"""``lesiondb eval …``: evaluations, one subcommand per module ``eval_<name>.py``."""
from __future__ import annotations

import click

from .common import DiscoveredGroup


@click.group("eval", cls=DiscoveredGroup, package="lesiondb.cli", prefix="eval_")
def command() -> None:
    """Measure embeddings, matching and mining against ground truth."""
