"""Full DeepLesion-scale ingest with image reading, measured end to end (no projection).

    python benchmarks/bench_ingest_png.py [--lesions 32735] [--workdir DIR] [--keep] [--no-write]

Goal (issue #5): the whole ``lesiondb ingest deeplesion DL_info.csv --images Images_png`` of a
DeepLesion-size archive (32,735 lesions) ≤ 120 s on 2 cores, peak RSS ≤ 3 GB.

The archive: DeepLesion's real DL_info rows (../shared/data, 10,857 rows) repeated with other
patient numbers until there are ``--lesions`` rows (each copy a new set of patients, with the real
studies, series, key slices, boxes and slice intervals), laid out as DeepLesion's
``Images_png/PPPPPP_SS_RR/KKK.png`` with exactly the files their 3-slice stacks need (key ± 2 mm,
interpolated). Each file is a byte copy of one of the 80 real DeepLesion PNGs, so decoding costs
what DeepLesion's own files cost (real 16-bit PNG encoding and CT content); about 20 GB.

What is timed: ``lesiondb ingest deeplesion … --json`` as a subprocess on a fresh data dir, the
whole command (interpreter, embedded server start, records, reading + cropping in worker
processes, embedding, writes, kNN, SIMILAR_TO edges, vector index, AOF compaction, shutdown), once
with the files evicted from the page cache (``posix_fadvise``; what a first ingest from disk
meets) and once right after with them cached. CPU: the command and its children (server
included), from ``RUSAGE_CHILDREN``; peak RSS: of the whole process tree (command, embedded
server, reader processes; sampled twice a second) and of its largest process.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402
from bench_scale import DEFAULT_DL, PNG_DIR, drop_cache, write_png_archive  # noqa: E402

DEEPLESION_LESIONS = 32735
OFFSET_MM = 2.0  # the default model's stack: key slice ± 2 mm


def build_archive(root: Path, dl_info: Path, n_lesions: int) -> dict:
    """``root/DL_info.csv`` with ``n_lesions`` rows and ``root/Images_png`` with their files."""
    with open(dl_info, newline="") as fh:
        real = list(csv.DictReader(fh))
    pids = sorted({int(r["Patient_index"]) for r in real})
    stride = 10 ** (len(str(max(pids))))  # copy c: patient p becomes c * stride + p
    rows: list[dict] = []
    copy = 0
    while len(rows) < n_lesions:
        by_series: dict[str, list[dict]] = {}
        for r in real:
            by_series.setdefault(r["File_name"][:12], []).append(r)
        for series_rows in by_series.values():  # whole series, so a series is never split
            if len(rows) >= n_lesions:
                break
            for r in series_rows:
                q = dict(r)
                p = copy * stride + int(r["Patient_index"])
                q["Patient_index"] = str(p)
                q["File_name"] = f"{p:06d}" + r["File_name"][6:]
                rows.append(q)
        copy += 1
    info = write_png_archive(root, rows, list(real[0]), OFFSET_MM)
    return {"lesions": len(rows), "patients": len({r["Patient_index"] for r in rows}),
            "studies": len({(r["Patient_index"], r["Study_index"]) for r in rows}),
            "series": len({r["File_name"][:12] for r in rows}), "copies": copy, **info}


def children_usage() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants (the server and reader processes), MB."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root_pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= more
        grew = bool(more)
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total / 1024.0


def run_ingest(archive: Path, data: Path, workers: int | None) -> dict:
    shutil.rmtree(data, ignore_errors=True)
    cmd = [sys.executable, "-m", "lesiondb.cli.main", "--data-dir", str(data), "--no-progress",
           "ingest", "deeplesion", str(archive / "DL_info.csv"), "--images", str(archive / "Images_png"), "--json"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    cpu0, _ = children_usage()
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:  # the whole process tree's RSS, twice a second
        while not stop.wait(0.5):
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    sampler.join()
    res = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    cpu1, rss = children_usage()
    if res.returncode != 0:
        raise SystemExit(f"ingest failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return {"wall": wall, "cpu": cpu1 - cpu0, "rss_mb": rss, "tree_rss_mb": peak[0], "load_start": load0,
            "load_end": os.getloadavg()[0],
            "out": json.loads(res.stdout)}


def profile_read(archive: Path, data: Path, n_lesions: int) -> dict:
    """Read + crop of the first ``n_lesions`` lesions (whole tasks) in this process, warm cache,
    under cProfile: CPU seconds by component (the compiled calls are timed exactly; Python-level
    parts carry cProfile's overhead)."""
    import cProfile
    import pstats

    from lesiondb.core.pseudonym import Pseudonymizer
    from lesiondb.datasets.deeplesion import file_names
    from lesiondb.embedding import load_encoder
    from lesiondb.embedding.patches import DeepLesionImages, iter_patches, read_targets
    from lesiondb.graph.falkor_engine import FalkorEngine

    eng = FalkorEngine.embedded(str(data))
    try:
        targets = read_targets(eng)[:n_lesions]
    finally:
        eng.close()
    ids = Pseudonymizer.from_data_dir(data, None)
    names = file_names(archive / "DL_info.csv", ids)
    spec = load_encoder().patch_spec
    src = DeepLesionImages(archive / "Images_png", spec, ids, names)
    list(iter_patches(src, targets[:50], 0))  # imports and compiled-code cache loads, not timed
    src = DeepLesionImages(archive / "Images_png", spec, ids, names)
    prof = cProfile.Profile()
    c0 = time.process_time()
    prof.enable()
    n = sum(r.image is not None for r in iter_patches(src, targets, 0))
    prof.disable()
    cpu = time.process_time() - c0
    st = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}

    def tot(pred) -> float:
        return sum(v[2] for k, v in st.items() if pred(k))

    def cum(name: str, file_part: str) -> float:
        return max((v[3] for k, v in st.items() if k[2] == name and file_part in k[0]), default=0.0)

    inflate = tot(lambda k: "decompress" in k[2] and ("Decompress" in k[2] or "zlib" in k[2]))
    if inflate == 0.0:  # Pillow: inflate and unfilter are one C call
        inflate = tot(lambda k: k[2] == "<method 'decode' of 'ImagingDecoder' objects>")
    unfilter = tot(lambda k: k[2] == "_unfilter")
    file_io = tot(lambda k: k[2] in ("<method 'read' of '_io.BufferedReader' objects>", "<built-in method io.open>"))
    crop = cum("extract_patch_from_window", "patches.py") + cum("window", "png.py")
    return {"lesions": n, "cpu": cpu, "inflate": inflate, "unfilter": unfilter,
            "file_io": file_io, "crop": crop, "other": cpu - inflate - unfilter - file_io - crop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dl-info", default=str(DEFAULT_DL))
    ap.add_argument("--lesions", type=int, default=DEEPLESION_LESIONS)
    ap.add_argument("--workers", type=int, default=None, help="reader processes [default: the command's]")
    ap.add_argument("--workdir", help="build the archive and data dirs here [default: a temp dir]")
    ap.add_argument("--profile-lesions", type=int, default=2000, help="lesions read under the profiler")
    ap.add_argument("--keep", action="store_true", help="keep the archive (reused by a later run with --workdir)")
    ap.add_argument("--report-only", action="store_true", help="report the last run kept in --workdir again")
    ap.add_argument("--no-write", action="store_true", help="print the figures, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    if not PNG_DIR.is_dir() or not Path(args.dl_info).is_file():
        raise SystemExit(f"needs the shared data: {PNG_DIR} and {args.dl_info}")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lesiondb-bench-png-"))
    if args.report_only:  # the figures of the last run in --workdir, reported again
        saved = json.loads((work / "results.json").read_text())
        report(saved["info"], saved["runs"], saved["prof"], write=not args.no_write)
        return
    work.mkdir(parents=True, exist_ok=True)
    archive = work / "archive"
    t = time.perf_counter()
    meta_file = archive / "archive.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()).get("lesions") == args.lesions:
        info = json.loads(meta_file.read_text())
        info["paths"] = sorted((archive / "Images_png").rglob("*.png"))
        info["build_s"] = None
    else:
        info = build_archive(archive, Path(args.dl_info), args.lesions)
        info["build_s"] = time.perf_counter() - t
        meta_file.write_text(json.dumps({k: v for k, v in info.items() if k != "paths"}))
    print(f"archive: {info['lesions']:,} lesions, {info['files']:,} files, {info['bytes'] / 1e9:.1f} GB",
          file=sys.stderr)
    runs = {}
    try:
        drop_cache(info["paths"])
        runs["cold"] = run_ingest(archive, work / "data-cold", args.workers)
        print(f"cold: {runs['cold']['wall']:.1f} s", file=sys.stderr)
        runs["warm"] = run_ingest(archive, work / "data-warm", args.workers)
        print(f"warm: {runs['warm']['wall']:.1f} s", file=sys.stderr)
        prof = profile_read(archive, work / "data-warm", args.profile_lesions)
    finally:
        for d in ("data-cold", "data-warm"):
            shutil.rmtree(work / d, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(archive, ignore_errors=True)
    info.pop("paths")
    (work / "results.json").write_text(json.dumps({"info": info, "runs": runs, "prof": prof}))
    report(info, runs, prof, write=not args.no_write)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def report(info: dict, runs: dict, prof: dict, write: bool = True) -> None:
    from lesiondb.imaging.png import png_decoder_name

    o = runs["cold"]["out"]
    ing = o.get("seconds") or {}
    lines = [
        "## Full DeepLesion-scale ingest with images, measured (`benchmarks/bench_ingest_png.py`)",
        "",
        "`lesiondb ingest deeplesion DL_info.csv --images Images_png --json` as a subprocess on a fresh data dir: "
        "the whole command (interpreter, embedded server start, records, reading + cropping in worker processes, "
        "embedding, writes, kNN, SIMILAR_TO edges, vector index, shutdown). Goal ≤ 120 s on 2 cores, peak RSS ≤ 3 GB.",
        "",
        f"Archive: DeepLesion's real DL_info rows repeated with new patient numbers ({info['copies']} copies, the last "
        f"partial): **{info['lesions']:,} lesions**, {info['patients']:,} patients, {info['studies']:,} studies, "
        f"{info['series']:,} series; {info['files']:,} slice files ({info['files'] / info['lesions']:.2f} per lesion, "
        f"the key slice ± 2 mm), {info['bytes'] / 1e9:.1f} GB, each a byte copy of one of the {info['real_files']} real "
        f"DeepLesion PNGs. PNG decoder: **{png_decoder_name()}**.",
        "",
        "| run | wall s | lesions/s | CPU s (command + children) | peak RSS MB, all processes | peak RSS MB, "
        "largest process | embedded | load avg start → end |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in runs.items():
        out = r["out"]
        what = {"cold": "files evicted from the page cache first", "warm": "right after, files cached"}[name]
        lines.append(f"| {name} ({what}) | {r['wall']:.1f} | {info['lesions'] / r['wall']:,.0f} | {r['cpu']:.0f} | "
                     f"{r['tree_rss_mb']:,.0f} | {r['rss_mb']:,.0f} | {out.get('embedded', '?'):,} | {r['load_start']:.1f} → {r['load_end']:.1f} |")
    stages = o.get("stages") or o.get("seconds") or {}
    if stages:
        lines += ["", "Stages of the cold run (the command's own figures; read, crop and readCpu are summed over "
                      "the reader processes, readWait is the embedding process waiting for patches):", "",
                  ", ".join(f"{k} {v:.1f} s" for k, v in stages.items() if isinstance(v, (int, float)))]
    del ing
    n = max(1, prof["lesions"])
    cold = runs["cold"]
    read_cpu = float(stages.get("readCpu") or 0.0)
    rest = cold["cpu"] - read_cpu
    lines += ["", "**Profile** (cold run). CPU of the whole command and its children "
                  f"{cold['cpu']:.0f} s = reader processes (read + crop) {read_cpu:.0f} s "
                  f"({read_cpu / info['lesions'] * 1e3:.2f} ms per lesion) + everything else {rest:.0f} s (interpreter and "
                  "imports, embedded server, records, targets, embedding, writes, kNN, edges, index, patches passed "
                  f"between processes). On 2 cores that CPU alone takes at least {cold['cpu'] / 2:.0f} s even with "
                  f"perfect overlap; the run took {cold['wall']:.0f} s ({cold['cpu'] / (2 * cold['wall']):.0%} of both "
                  "cores busy: records and targets run before the readers start, kNN, edges and index after they end).",
              "", f"Where reading + cropping spends its CPU (`cProfile`, {prof['lesions']:,} lesions in one process, warm "
                  f"cache; the profiler's overhead makes this {prof['cpu'] / n * 1e3:.2f} ms per lesion, so the shares "
                  "count, not the absolute figures):", "",
              "| part | ms CPU per lesion (profiled) | share |", "|---|---:|---:|"]
    for key, what in (("inflate", "inflate (ISA-L, or Pillow's whole decoder)"), ("unfilter", "row unfiltering (numba)"),
                      ("file_io", "file open + read"), ("crop", "stack window + resample + window level"),
                      ("other", "the rest (chunk parsing, planning, Python)")):
        lines.append(f"| {what} | {prof[key] / n * 1e3:.2f} | {prof[key] / max(prof['cpu'], 1e-9):.0%} |")
    lines += ["", f"Archive built in {info['build_s']:.0f} s (not counted)." if info.get("build_s") else ""]
    body = "\n".join(lines)
    print(body)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "out"} for k, v in runs.items()}), file=sys.stderr)
    if write:
        write_section("ingest-png", body)


if __name__ == "__main__":
    main()
