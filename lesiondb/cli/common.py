"""Shared CLI plumbing: the context object, JSON output, progress bars, error mapping."""
from __future__ import annotations

import functools
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import InputError, LesionDBError

log = logging.getLogger("lesiondb")


class AppContext:
    """Global options and the lazily opened engine (closed when the command ends)."""

    def __init__(self, data_dir: str | None, uri: str | None, user: str | None, database: str | None,
                 progress: bool = True):
        from ..graph.embedded import default_data_dir

        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.uri = uri
        self.user = user
        self.database = database
        self.progress = progress
        self._engine = None

    def engine(self):
        if self._engine is None:
            from ..graph import open_engine

            self._engine = open_engine(self.data_dir, uri=self.uri, user=self.user, database=self.database)
        return self._engine

    def client(self):
        from ..client import Client

        return Client(self.engine(), data_dir=self.data_dir, owns_engine=False)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


pass_app = click.make_pass_decorator(AppContext)


def reader_workers_option(when: str = ""):
    """``--workers``: processes reading and cropping images for a command that embeds and writes."""
    return click.option("--workers", type=click.IntRange(0, 256), default=None,
                        help=f"{when + 'p' if when else 'P'}rocesses reading and cropping images while this one "
                             "embeds and writes "
                             "[default: one per CPU core; 0 or 1: read in this process].")


def emit(obj: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """JSON to stdout with ``--json``, else a human rendering (``text(obj)`` or pretty JSON)."""
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))
    else:
        click.echo(text(obj) if text else json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    return str(o)


def progress_bar(app: AppContext | None, total: int | None, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (hidden when stderr is not a terminal or with --no-progress)."""
    from tqdm import tqdm

    disable = (app is not None and not app.progress) or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)


def handle_errors(fn: Callable) -> Callable:
    """Turn lesiondb errors into one clear line on stderr and exit code 1 (2 for bad input)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            raise click.ClickException(str(exc)) from exc
        except LesionDBError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


class DiscoveredGroup(click.Group):
    """A group whose subcommands are the ``command`` objects of modules ``<package>.<prefix>*``.

    New commands are added by adding a module; no registry file to edit.
    """

    def __init__(self, *args: Any, package: str, prefix: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._package = package
        self._prefix = prefix

    def _modules(self) -> dict[str, str]:
        pkg = importlib.import_module(self._package)
        out = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith(self._prefix):
                out[info.name[len(self._prefix):].replace("_", "-")] = f"{self._package}.{info.name}"
        return out

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._modules()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        mod = self._modules().get(name)
        if mod is None:
            return None
        return importlib.import_module(mod).command
