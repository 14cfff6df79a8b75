"""Human-readable summaries shared by the ingest commands."""
from __future__ import annotations

from typing import Any


def ingest_summary_text(o: dict[str, Any], max_errors: int = 20) -> str:
    lines = [f"{o['source']}: read {o['read']}, written {o['written']}, unchanged {o['unchanged']}, "
             f"duplicates {o['duplicates']}, rejected {o['rejected']}"]
    for k, v in o.items():
        if k not in ("source", "read", "written", "unchanged", "duplicates", "rejected", "errors"):
            lines.append(f"  {k}: {v}")
    for e in o["errors"][:max_errors]:
        where = f"{e['source']}:{e['line']}" if e.get("line") is not None else e["source"]
        lines.append(f"  rejected {where}: {e['reason']}")
    if len(o["errors"]) > max_errors:
        lines.append(f"  … and {len(o['errors']) - max_errors} more (use --json for all)")
    return "\n".join(lines)
