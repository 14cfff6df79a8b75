"""Time `lesiondb demo` (goal: well under 3 minutes on 2 cores) and DICOM cohort ingest.

    python benchmarks/bench_demo.py [--patients N]

Runs the CLI in a subprocess on a fresh data dir (server start and stop included), then again on
the same data dir (a regenerated cohort, an unchanged graph), then `lesiondb ingest dicom` alone
on the demo cohort in a second fresh data dir. Writes the figures to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import run_cli as timed  # noqa: E402
from _report import write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=6, help="demo patients (the command's default is 6)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as d2:
        demo = ["--data-dir", d, "--no-progress", "demo", "--patients", str(opts.patients), "--json"]
        first, out = timed(demo)
        again, out2 = timed(demo)
        ing, rep = timed(["--data-dir", d2, "--no-progress", "ingest", "dicom", str(Path(d) / "demo"), "--json"])
    steps = {s["name"]: s for s in out["steps"]}
    syn = steps["synth"]
    body = (
        "## Demo and DICOM cohort ingest (`benchmarks/bench_demo.py`)\n\n"
        f"`lesiondb demo --patients {opts.patients}` on a fresh data dir, whole command (embedded server start, "
        "synthetic cohort with images, DICOM ingest, shutdown). Goal: well under 180 s on 2 cores.\n\n"
        "| run | wall s | synth s | ingest s | lesions written | unchanged |\n|---|---:|---:|---:|---:|---:|\n"
        f"| first demo | {first:.1f} | {syn['seconds']:.1f} | {steps['ingest']['seconds']:.1f} | "
        f"{steps['ingest']['written']} | {steps['ingest']['unchanged']} |\n"
        f"| demo again (same data dir) | {again:.1f} | {out2['steps'][0]['seconds']:.1f} | "
        f"{out2['steps'][1]['seconds']:.1f} | {out2['steps'][1]['written']} | {out2['steps'][1]['unchanged']} |\n\n"
        f"Cohort: {syn['patients']} patients, {syn['studies']} studies, {syn['slices']} CT slices (256×256), "
        f"{syn['lesion_instances']} lesions of which {syn['annotated']} annotated.\n\n"
        f"`lesiondb ingest dicom` alone on that cohort (fresh data dir, whole command): {ing:.1f} s for "
        f"{rep['seriesRead']} series / {rep['written']} lesions ({rep['rejected']} rejected).\n"
    )
    print(body)
    write_section("demo", body)


if __name__ == "__main__":
    main()
