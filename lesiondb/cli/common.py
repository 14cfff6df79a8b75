"""Shared CLI plumbing: the context object, JSON output, progress bars, error mapping, lazy commands."""
from __future__ import annotations

import ast
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
from tqdm import tqdm

from ..core.results import jsonable
from ..errors import LesionDBError
from ..workspace import Workspace

log = logging.getLogger("lesiondb")


class TqdmBar:
    """A :class:`lesiondb.core.progress.Bar` drawn by tqdm on stderr."""

    def __init__(self, total: int | None, desc: str, unit: str, disable: bool):
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_total(self, total: int | None) -> None:
        self._bar.total = total
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    @property
    def n(self) -> int:
        return int(self._bar.n)


class AppContext(Workspace):
    """The global options: a :class:`Workspace` (data dir, engine opened on first use, closed when
    the command ends) and whether to draw progress bars."""

    def __init__(self, data_dir: str | None, uri: str | None, user: str | None, database: str | None,
                 progress: bool = True):
        super().__init__(Path(data_dir).expanduser() if data_dir else Workspace().data_dir, uri, user, None, database)
        self.show_progress = progress

    def progress(self, stage: str, total: int | None = None, unit: str = "it") -> TqdmBar:
        """The :data:`lesiondb.core.progress.Progress` of the command: bars on a terminal's stderr
        (none when stderr is not a terminal, or with --no-progress)."""
        return TqdmBar(total, stage, unit, disable=not self.show_progress or not sys.stderr.isatty())


pass_app = click.make_pass_decorator(AppContext)


def reader_workers_option(when: str = ""):
    """``--workers``: processes reading and cropping images for a command that embeds and writes."""
    return click.option("--workers", type=click.IntRange(0, 256), default=None,
                        help=f"{when + 'p' if when else 'P'}rocesses reading and cropping images while this one "
                             "embeds and writes "
                             "[default: one per CPU core; 0 or 1: read in this process].")


def pseudonym_key_option(what: str = "the pseudonyms"):
    return click.option("--pseudonym-key", envvar="LESIONDB_PSEUDONYM_KEY",
                        help=f"Key for {what} [default: the data dir's pseudonym.key, created on first use].")


def emit(obj: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """JSON to stdout with ``--json``, else a human rendering (``text(obj)`` or pretty JSON).
    Results (``to_json()``) print as their JSON object; ``text`` gets that object too."""
    data = obj.to_json() if hasattr(obj, "to_json") else jsonable(obj)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        click.echo(text(data) if text else json.dumps(data, indent=2, default=str))


def handle_errors(fn: Callable) -> Callable:
    """Turn lesiondb errors into one clear line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LesionDBError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


class DiscoveredGroup(click.Group):
    """A group whose subcommands are the ``command`` objects of modules ``<package>.<prefix>*``.

    New commands are added by adding a module; no registry file to edit. A module is imported only
    when its command runs (or shows its own help): the group's ``--help`` reads each command's
    one-line help from the module's source, so listing commands imports none of them.
    """

    def __init__(self, *args: Any, package: str, prefix: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._package = package
        self._prefix = prefix

    def _modules(self) -> dict[str, tuple[str, Path]]:
        pkg = importlib.import_module(self._package)
        out = {}
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith(self._prefix):
                path = Path(pkg.__path__[0]) / f"{info.name}.py"
                out[info.name[len(self._prefix):].replace("_", "-")] = (f"{self._package}.{info.name}", path)
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
        return importlib.import_module(mod[0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        mods = self._modules()
        rows = []
        for name in self.list_commands(ctx):
            if name in mods:
                help_ = _short_help(mods[name][1])
            else:
                cmd = super().get_command(ctx, name)
                if cmd is None or cmd.hidden:
                    continue
                help_ = cmd.get_short_help_str()
            rows.append((name, help_))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@functools.cache
def _short_help(path: Path) -> str:
    """The first sentence of the docstring of a command module's ``command`` function (its help),
    read from the source without importing the module."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "command":
            doc = ast.get_docstring(node) or ""
            return click.utils.make_default_short_help(doc.split("\n\n")[0].replace("\n", " "), 45)
    return ""
