"""Embedded engine start-up: replaying logged graph queries vs loading a snapshot, idle and loaded.

FalkorDB logs each quick write query in the append-only file (a slow one by its effects); a start
after an unclean stop, or with a log never folded into a snapshot, runs every logged query again.
This measures the start time of a data dir whose log holds N small ingest-shaped write queries
(MERGE on indexed ids + one relationship), after SIGKILL (the log is replayed) and after a clean
stop (lesiondb folds the log into an RDB snapshot when a command that wrote ends), on an idle
machine and with ``--hogs`` CPU-bound processes (``yes > /dev/null``) competing for the cores.

    python -m benchmarks.bench_engine_start [--queries 500,2000,8000] [--hogs 4] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lesiondb.graph.embedded import EmbeddedFalkorDB

from ._report import write_section


def _log_queries(data_dir: Path, n: int) -> int:
    srv = EmbeddedFalkorDB(data_dir).start()
    r = srv._redis(timeout=300)
    r.config_set("auto-aof-rewrite-percentage", "0")  # keep every query in the log
    pipe = r.pipeline(transaction=False)
    pipe.execute_command("GRAPH.QUERY", "lesiondb", "CREATE INDEX FOR (n:Lesion) ON (n.lesionId)")
    for i in range(n):
        pipe.execute_command("GRAPH.QUERY", "lesiondb",
                             f"MERGE (p:Patient {{patientId: 'P{i % 50}'}}) MERGE (l:Lesion {{lesionId: 'L{i}'}}) "
                             f"SET l.x = {i} MERGE (p)-[:HAS_LESION]->(l)")
    pipe.execute()
    info = r.info("persistence")
    r.close()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    srv.owned = False
    srv.release()
    return int(info["aof_current_size"]) - int(info["aof_base_size"])


def _start_s(data_dir: Path, clean: bool) -> float:
    """Seconds until the server answers; then stopped cleanly (clean=True: compacting) or killed."""
    t = time.perf_counter()
    srv = EmbeddedFalkorDB(data_dir).start()
    dt = time.perf_counter() - t
    if clean:
        srv.stop()
    else:
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        srv.owned = False
        srv.release()
    return dt


def _hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", default="500,2000,8000")
    ap.add_argument("--hogs", type=int, default=4, help="CPU-bound processes for the loaded runs (0: none)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.queries.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "data"
            log_bytes = _log_queries(d, n)
            replay_idle = _start_s(d, clean=False)  # killed again: the log stays
            hogs = _hogs(args.hogs) if args.hogs else []
            try:
                time.sleep(1.0)
                replay_loaded = _start_s(d, clean=True) if hogs else float("nan")  # clean: compacts
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
            if not hogs:
                _start_s(d, clean=True)
            snap_idle = _start_s(d, clean=True)
            hogs = _hogs(args.hogs) if args.hogs else []
            try:
                time.sleep(1.0)
                snap_loaded = _start_s(d, clean=True) if hogs else float("nan")
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
        rows.append((n, log_bytes, replay_idle, replay_loaded, snap_idle, snap_loaded))
        print(f"{n} queries, log {log_bytes / 1024:.0f} kB: replay {replay_idle:.2f} s idle, "
              f"{replay_loaded:.2f} s loaded; snapshot {snap_idle:.2f} s idle, {snap_loaded:.2f} s loaded",
              flush=True)
    body = [
        "## Embedded engine start-up (`benchmarks/bench_engine_start.py`)",
        "",
        "Start time (until the server answers) of a data dir whose log holds N small ingest-shaped write "
        "queries: replayed query by query (after SIGKILL, or a log never folded into a snapshot) vs "
        f"loaded from the RDB snapshot that a clean stop leaves; \"loaded\" = {args.hogs} `yes` processes "
        f"competing for the {os.cpu_count()} CPUs.",
        "",
        "| logged queries | log size | replay, idle | replay, loaded | snapshot, idle | snapshot, loaded |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    body += [f"| {n:,} | {b / 1024:,.0f} kB | {a:.2f} s | {c:.2f} s | {e:.2f} s | {f:.2f} s |"
             for n, b, a, c, e, f in rows]
    if not args.no_write:
        write_section("engine-start", "\n".join(body))
    else:
        print("\n".join(body))


if __name__ == "__main__":
    sys.exit(main())
