"""Options and summaries shared by the ingest commands."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .common import pseudonym_key_option, reader_workers_option


def embed_options(fn: Callable) -> Callable:
    """``--embed/--no-embed``, ``--model``, ``-k``: the embedding step every ingest runs."""
    fn = click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000),
                      help="SIMILAR_TO edges per embedded lesion.")(fn)
    fn = click.option("--model", "model_path", type=click.Path(exists=True),
                      help="Encoder for the embedding (model folder or model.pt) [default: the shipped model].")(fn)
    return click.option("--embed/--no-embed", default=True, show_default=True,
                        help="Embed the lesions that have images and link each to its nearest lesions.")(fn)


def ingest_options(keep_source_ids: str, key_for: str, batch_unit: str, workers_when: str = "") -> Callable:
    """The options every ``lesiondb ingest`` shares, in --help order: the embedding step,
    ``--keep-source-ids`` (``keep_source_ids``: what it also stores), ``--pseudonym-key``,
    ``--batch-size``, ``--workers``, ``--json``."""
    def apply(fn: Callable) -> Callable:
        for option in reversed([
            embed_options,
            click.option("--keep-source-ids", is_flag=True, help=keep_source_ids),
            pseudonym_key_option(key_for),
            click.option("--batch-size", default=2000, show_default=True,
                         help=f"{batch_unit} per write transaction."),
            reader_workers_option(workers_when),
            click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        ]):
            fn = option(fn)
        return fn
    return apply


def ingest_summary_text(o: dict[str, Any], max_errors: int = 20) -> str:
    lines = [f"{o['source']}: read {o['read']}, written {o['written']}, unchanged {o['unchanged']}, "
             f"duplicates {o['duplicates']}, rejected {o['rejected']}"]
    for k, v in o.items():
        if k not in ("source", "read", "written", "unchanged", "duplicates", "rejected", "errors", "embedProblems"):
            lines.append(f"  {k}: {v}")
    for e in o["errors"][:max_errors]:
        where = f"{e['source']}:{e['line']}" if e.get("line") is not None else e["source"]
        lines.append(f"  rejected {where}: {e['reason']}")
    if len(o["errors"]) > max_errors:
        lines.append(f"  … and {len(o['errors']) - max_errors} more (use --json for all)")
    for p in (o.get("embedProblems") or [])[:10]:
        lines.append(f"  not embedded {p['lesionId']}: {p['reason']}")
    return "\n".join(lines)
