"""``lesiondb engine start|stop|status``: keep the embedded engine up for a working session."""
from __future__ import annotations

import click

from ..graph.embedded import EmbeddedFalkorDB
from .common import emit, handle_errors, pass_app


@click.group("engine")
def command() -> None:
    """Manage the embedded FalkorDB server of the data dir."""


@command.command("start")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@handle_errors
def start(app, as_json) -> None:
    """Start the server and keep it running after this command (shared by later commands)."""
    srv = EmbeddedFalkorDB(app.data_dir)
    srv.start(daemon=True)
    emit(srv.status(), as_json, _text)


@command.command("stop")
@click.option("--force", is_flag=True, help="Stop the server even while other commands use it.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@handle_errors
def stop(app, force, as_json) -> None:
    """Stop a server started with `engine start` (cleanly: every write is already on disk).
    Refused, naming them, while other commands use it (unless --force)."""
    srv = EmbeddedFalkorDB(app.data_dir)
    done = srv.stop_shared(force=force)
    emit({**srv.status(), "stopped": done["stopped"], "stoppedClients": done["clients"]}, as_json,
         lambda o: "stopped" if o["stopped"] else "no server was running")


@command.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@handle_errors
def status(app, as_json) -> None:
    """Say whether the server runs and how to connect to it."""
    emit(EmbeddedFalkorDB(app.data_dir).status(), as_json, _text)


def _text(o) -> str:
    if not o["running"]:
        return f"not running (data dir {o['dataDir']}); commands start it on demand"
    return (f"running (pid {o['pid']}{', shared' if o['daemon'] else ''}) on {o['socket']}\n"
            f"data dir: {o['dataDir']}\nconnect: {o['connect']}")
