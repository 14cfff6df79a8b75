"""Time synthetic cohort generation (goals: ≥ 50 lesions/s with images on 2 cores; a
DeepLesion-scale cohort — 4,427 patients, ~32,700 lesions — without images in seconds).

    python benchmarks/bench_synth.py [N_PATIENTS_WITH_IMAGES] [DL_info.csv]

Calls :func:`lesiondb.synth.generate.generate_cohort` (planning, rendering, DICOM and metadata
writing, everything) into temporary folders and writes the figures to docs/benchmarks.md.
The machine's load average is reported too: the development machines are shared.
"""
from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_LIKE = REPO.parent / "shared" / "data" / "deeplesion" / "DL_info_available_merged.csv"


def _cpu() -> float:
    """CPU seconds of this process and its (finished) worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(label: str, **kw) -> dict:
    from lesiondb.synth.generate import generate_cohort

    d = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        load0 = os.getloadavg()[0]
        cpu0 = _cpu()
        t = time.perf_counter()
        s = generate_cohort(d / "cohort", **kw)
        wall = time.perf_counter() - t
        cpu = _cpu() - cpu0
        size = sum(f.stat().st_size for f in (d / "cohort").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    row = {"label": label, "wall": wall, "patients": s.patients, "studies": s.studies,
           "lesions": s.instances, "annotated": s.annotated, "slices": s.slices, "mb": size / 1e6,
           "load": load0, "workers": kw.get("workers"), "cpu": cpu}
    print(f"{label}: {wall:.2f} s, {s.instances / wall:,.0f} lesions/s, {s.slices} slices, "
          f"load {load0:.1f}", flush=True)
    return row


def main() -> None:
    n_img = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    like = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_LIKE
    rows = [
        run("images, 2 workers", n_patients=n_img, seed=1, images=True, workers=2),
        run("images, 1 worker", n_patients=n_img, seed=1, images=True, workers=1),
        run("no images, 4,427 patients", n_patients=4427, seed=1, images=False, workers=2),
    ]
    if like.is_file():
        rows.append(run(f"no images, --like {like.name}, 4,427 patients", n_patients=4427, seed=1,
                        images=False, like=like, workers=2))
    lines = [
        "## Synthetic cohorts (`benchmarks/bench_synth.py`)",
        "",
        "`generate_cohort` end to end (plan, render the phantom, write DICOM, annotations.csv, "
        "ground_truth.json). Images are 256×256 axial slabs around each study's lesions. "
        "Goals: ≥ 50 lesions/s with images on 2 cores; a DeepLesion-scale cohort without images in seconds.",
        "",
        "| run | workers | wall s | lesions | lesions/s (wall) | CPU s | lesions per CPU-s | studies | slices | "
        "MB written | load avg at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['workers']} | {r['wall']:.2f} | {r['lesions']:,} | "
                     f"{r['lesions'] / r['wall']:,.0f} | {r['cpu']:.1f} | {r['lesions'] / r['cpu']:,.0f} | "
                     f"{r['studies']:,} | {r['slices']:,} | {r['mb']:,.1f} | {r['load']:.1f} |")
    lines += ["", f"Machine: {os.cpu_count()} CPUs, shared with other work while measured: with a load average "
              "above the CPU count the wall-clock rates are lower than on an idle machine. "
              "\"Lesions per CPU-s\" counts the CPU time of the process and its workers; "
              "two idle cores give at most twice that per second."]
    body = "\n".join(lines) + "\n"
    print(body)
    write_section("synth", body)


if __name__ == "__main__":
    main()
