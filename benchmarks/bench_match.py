"""Time `lesiondb match` on a DeepLesion-scale graph (goal: every patient ≤ 10 s on 2 cores).

    python benchmarks/bench_match.py [DL_info.csv] [--real-only]

Ingests the real DL_info rows (10,857 lesions, 1,492 patients) into a fresh data dir (not timed),
then runs `lesiondb match --json` in a subprocess — the whole command: embedded server start,
calibration, reading, matching every pair of every patient's scans, writing, shutdown — first
on the unmatched graph, then again (a no-op re-match), then with the server kept running. Then
the same on a graph of DeepLesion's full size: a synthetic cohort like DL_info with every lesion
annotated (`lesiondb synth --like DL_info --patients 4427 --no-images --withhold 0 0`: 4,427
patients, ~32,400 lesions, as `generate_cohort(4427, like=…, images=False, withhold=(0, 0))`);
``--real-only`` skips it. Writes the figures to docs/benchmarks.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from lesiondb.graph import aof  # noqa: E402
from lesiondb.graph.embedded import AOF_DIR, binaries  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "data" / "deeplesion" / "DL_info_available_merged.csv"
LAST_CPU = 0.0


def cli(data_dir: str, *args: str) -> tuple[float, dict]:
    global LAST_CPU
    c0 = os.times()
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "lesiondb.cli.main", "--data-dir", data_dir, "--no-progress", *args],
                         capture_output=True, text=True)
    dt = time.perf_counter() - t
    c1 = os.times()
    # CPU seconds of the command and the worker processes it waited for (not the graph server):
    # on a loaded machine this tells slow code from waiting for a CPU
    LAST_CPU = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    if res.returncode != 0:
        raise SystemExit(f"lesiondb {' '.join(args)} failed:\n{res.stderr}")
    out = res.stdout.strip()
    return dt, json.loads(out) if out.startswith("{") else {}


CHECKS: list[str] = []  # the snapshot checks, one line per graph


def snapshot_check(label: str, data_dir: str, repeats: int = 3) -> None:
    """Time what each compaction adds: a scratch server loading the data dir's snapshot
    (:func:`lesiondb.graph.aof.verify_snapshot`)."""
    snap = aof.base_file(Path(data_dir) / "falkordb" / AOF_DIR)
    server, module = binaries()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        problem = aof.verify_snapshot(server, module, snap)
        times.append(time.perf_counter() - t)
        if problem:
            raise SystemExit(f"the snapshot of {label} does not load: {problem}")
    CHECKS.append(f"- {label}: {snap.stat().st_size / 1e6:.1f} MB snapshot after the matches, checked in "
                  f"{min(times):.2f}–{max(times):.2f} s ({repeats} runs)")
    print(CHECKS[-1], flush=True)


def run_case(label: str, ingest_args: list[str]) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        cli(d, *ingest_args, "--json")
        runs = [("first match", False), ("re-match (no change)", False),
                ("re-match, server kept running (`lesiondb engine start`)", True)]
        for run, daemon in runs:
            load = os.getloadavg()[0]
            if daemon:
                cli(d, "engine", "start")
            try:
                wall, rep = cli(d, "match", "--json")
                cpu = LAST_CPU
            finally:
                if daemon:
                    cli(d, "engine", "stop")
            t = rep["timings"]
            rows.append(
                f"| {label} | {run} | {wall:.2f} | {cpu:.2f} | {rep['seconds']:.2f} | {t['read']:.2f} | {t['calibrate']:.2f} | "
                f"{t['match']:.2f} | {t['write']:.2f} | {rep['patients']:,} | {rep['lesions']:,} | "
                f"{rep['scanPairs']:,} | {rep['tracks']:,} | {rep['sameLesionEdges']:,} | "
                f"{rep['written']['tracks']:,} | {load:.1f} |")
            print(rows[-1], flush=True)
        snapshot_check(label, d)
    return rows


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = Path(args[0]) if args else DEFAULT
    rows = run_case(f"{path.name}", ["ingest", "deeplesion", str(path)])
    if "--real-only" not in sys.argv:
        with tempfile.TemporaryDirectory() as c:
            subprocess.run([sys.executable, "-m", "lesiondb.cli.main", "--no-progress", "synth", c + "/cohort",
                            "--like", str(path), "--patients", "4427", "--no-images", "--seed", "2018",
                            "--withhold", "0", "0"], check=True, capture_output=True)
            rows += run_case("synthetic like DL_info, every lesion annotated (DeepLesion's size)",
                             ["ingest", "dicom", c + "/cohort"])
    body = (
        "## Lesion matching (`benchmarks/bench_match.py`)\n\n"
        "`lesiondb match --json` as a subprocess on a fresh data dir holding the ingested lesions: the whole "
        "command (embedded server start, calibration on 400 patients, reading, matching every pair of every "
        "patient's scans, writing SAME_LESION edges and tracks, shutdown). Goal ≤ 10 s for every patient of a "
        "DeepLesion-scale graph on 2 cores. `wall s` includes the interpreter and the embedded server's start "
        "and stop (loading and compacting the graph), except on the row where `lesiondb engine start` keeps the "
        "server running; `CPU s` the CPU time of the command's process and its worker processes (not the server's); "
        "`command s` is the command's own clock; read / calibrate / match / write are its "
        "phases.\n\n"
        "| graph | run | wall s | CPU s | command s | read s | calibrate s | match s | write s | patients | lesions | "
        "scan pairs | tracks | SAME_LESION | tracks written | load avg |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        "The machine is shared with other work: a load average above the CPU count means the figures are "
        "slower than on an idle machine.\n\n"
        "Each stop after writes checks the new snapshot by loading it in a scratch server before the old files "
        "go (docs/security.md); that check, alone, on the graphs above:\n\n" + "\n".join(CHECKS) + "\n")
    print(body)
    write_section("match", body)


if __name__ == "__main__":
    main()
