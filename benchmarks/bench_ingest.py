"""Time `lesiondb ingest deeplesion` on the real DL_info rows (goal: ≤ 10 s for 10,857 rows on 2 cores).

    python benchmarks/bench_ingest.py [DL_info.csv]

Runs the CLI in a subprocess on a fresh data dir (server start and stop included), then again
on the same data dir (a no-op re-ingest), and writes the figures to docs/benchmarks.md.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import run_cli as timed  # noqa: E402
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "data" / "deeplesion" / "DL_info_available_merged.csv"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    with tempfile.TemporaryDirectory() as d:
        first, rep = timed(["--data-dir", d, "--no-progress", "ingest", "deeplesion", str(path), "--json"])
        again, rep2 = timed(["--data-dir", d, "--no-progress", "ingest", "deeplesion", str(path), "--json"])
        _, stats = timed(["--data-dir", d, "stats", "--json"])
    rows = rep["read"]
    body = (
        "## DeepLesion metadata ingest (`benchmarks/bench_ingest.py`)\n\n"
        f"`lesiondb ingest deeplesion` on {path.name} ({rows:,} rows), embedded FalkorDB, fresh data dir, "
        "whole command (server start, schema, ingest, AOF compaction, shutdown). Goal ≤ 10 s.\n\n"
        "| run | seconds | rows/s | written | unchanged |\n|---|---:|---:|---:|---:|\n"
        f"| first ingest | {first:.2f} | {rows / first:,.0f} | {rep['written']:,} | {rep['unchanged']:,} |\n"
        f"| re-ingest (no change) | {again:.2f} | {rows / again:,.0f} | {rep2['written']:,} | {rep2['unchanged']:,} |\n\n"
        f"Graph after: {json.dumps(stats['nodes'])}\n"
    )
    print(body)
    write_section("ingest", body)


if __name__ == "__main__":
    main()
