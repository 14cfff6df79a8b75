"""Time to mine one candidate study (goal ≤ 200 ms on 2 cores).

Mining one candidate study = predict, detect blob candidates around the prediction, measure and
score them, pick the proposal (``lesiondb.core.mining.mine_study``), on a 512×512 CT-sized volume
already in memory (reading DICOM is timed apart, per study, when a cohort is given). Lesion
diameters span 6–40 mm, since the search window and the filter scales follow the expected size.

With the shipped default encoder installed, the same is timed with the embedding term (the 3 best
candidates embedded and scored by distance to the track's lesions, as ``lesiondb mine`` does).

    python benchmarks/bench_mining.py [--cohort DIR] [--repeats 20] [--no-embed]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import write_section  # noqa: E402
from lesiondb.core import mining as M  # noqa: E402
from lesiondb.mining.run import blas_single_thread  # noqa: E402


def _volume(seed: int, n_slices: int = 60, size: int = 512, spacing: float = 0.8, dz: float = 2.5):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    body = ((yy - size / 2) / (0.40 * size)) ** 2 + ((xx - size / 2) / (0.46 * size)) ** 2 <= 1
    hu = np.where(body, 45.0, -1000.0).astype(np.float32)[None].repeat(n_slices, 0)
    hu += rng.normal(0, 12, hu.shape).astype(np.float32)
    return hu, M.Grid(np.arange(n_slices) * dz, spacing, spacing)


def _plant(hu, grid, c, d, delta):
    k = np.arange(hu.shape[0])[:, None, None]
    r = np.arange(hu.shape[1])[None, :, None]
    cc = np.arange(hu.shape[2])[None, None, :]
    inside = ((cc * grid.col_mm - c[0]) ** 2 + (r * grid.row_mm - c[1]) ** 2
              + (np.asarray(grid.slice_z_mm)[k] - c[2]) ** 2) <= (d / 2) ** 2
    hu[inside] += delta


def bench_core(repeats: int, embedder=None) -> list[tuple[float, float, bool, float | None]]:
    """(diameter, median s, found, median s with the embedding term or None) per lesion size."""
    hu, grid = _volume(0)
    out = []
    for d in (6.0, 12.0, 20.0, 40.0):
        c = (180.0, 210.0, 75.0)
        h = hu.copy()
        _plant(h, grid, c, d, -60.0)
        pred = M.Prediction((c[0] + 3, c[1] - 2, c[2] + 2.5), 5.0, "bench", d)
        ref = {"mean_hu": -15.0, "contrast_hu": -60.0, "embedding": None}
        M.mine_study(h, grid, pred, ref)  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            best, _ = M.mine_study(h, grid, pred, ref)
            ts.append(time.perf_counter() - t0)
        ok = best is not None and M._dist(best.position_mm, c) <= d / 2
        t_emb = None
        if embedder is not None:
            # the reference embedding: the planted lesion's own box on its centre slice
            k, r, cc = grid.to_voxel(c)
            half = d / 2 / grid.row_mm
            e = embedder(h, grid, [(int(round(k)), (cc - half, r - half, cc + half, r + half))])[0]
            ref_e = dict(ref, embedding=np.asarray(e, float) / max(float(np.linalg.norm(e)), 1e-9))

            def emb_fn(cands, h=h):
                return embedder(h, grid, [(x.slice_index, x.bbox_px) for x in cands])

            M.mine_study(h, grid, pred, ref_e, embed=emb_fn)  # warm-up
            te = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                M.mine_study(h, grid, pred, ref_e, embed=emb_fn)
                te.append(time.perf_counter() - t0)
            t_emb = float(np.median(te))
        out.append((d, float(np.median(ts)), ok, t_emb))
    return out


def bench_cohort(cohort: Path, embedder=None) -> dict:
    from lesiondb.mining.evaluate import evaluate_cohort

    return evaluate_cohort(cohort, embedder=embedder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, help="a synthetic cohort folder (lesiondb synth) to time end to end")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-embed", action="store_true", help="skip the timings with the default encoder")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    a = ap.parse_args()
    import os

    embedder = note = None
    if not a.no_embed:
        from lesiondb.mining import load_embedder

        embedder, model_id, note = load_embedder()
    load0 = os.getloadavg()[0]
    with blas_single_thread():  # as `lesiondb mine` runs it
        rows = bench_core(a.repeats, embedder)
    lines = ["Time to mine one candidate study (`lesiondb.core.mining.mine_study`: detect, measure, score; "
             "with the encoder: + embed the 3 best candidates and score by embedding distance), "
             "512×512×60 volume in memory, median of "
             f"{a.repeats} runs, BLAS on one thread as `lesiondb mine` runs it. Goal ≤ 200 ms.", "",
             "| lesion diameter | ms per candidate study | with the encoder | found |", "|---:|---:|---:|:---:|"]
    for d, t, ok, te in rows:
        te_s = f"{te * 1000:.1f}" if te is not None else "n/a"
        lines.append(f"| {d:.0f} mm | {t * 1000:.1f} | {te_s} | {'yes' if ok else 'no'} |")
        print(f"diameter {d:4.0f} mm: {t * 1000:7.1f} ms, with encoder {te_s} ms  found={ok}")
    if note:
        lines += ["", f"Encoder: {note}."]
    if a.cohort:
        for emb in ((None, embedder) if embedder is not None else (None,)):
            with blas_single_thread():
                r = bench_cohort(a.cohort, emb)
            print({k: r[k] for k in ("candidateStudies", "seconds_per_candidate_study", "seconds_loading_per_study",
                                     "ranking")})
            lines += ["", f"End to end (`lesiondb eval mining{' --embed' if emb else ''}`: prediction, alignment, "
                      f"detection, measurement, scoring, anatomy check{', embedding' if emb else ''}) on the "
                      f"synthetic cohort `{a.cohort.name}` (seed {r.get('seed')}, {r['patients']} patients, "
                      f"{r['candidateStudies']} candidate studies): "
                      f"{r['seconds_per_candidate_study'] * 1000:.1f} ms per candidate study "
                      f"(+ {r['seconds_loading_per_study'] * 1000:.1f} ms reading DICOM per study); "
                      f"before it, once per run, the ranking calibration mined {r['ranking']['studies']} "
                      f"leave-one-out studies in {r['ranking']['seconds']:.1f} s (DICOM reading included: "
                      f"{r['ranking']['seconds'] / max(r['ranking']['studies'], 1) * 1000:.0f} ms per study)."]
    lines += ["", f"Load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on "
              f"{os.cpu_count()} CPUs (shared machine: above the CPU count, figures are slower than idle)."]
    if not a.no_write:
        write_section("mining", "## Missing-annotation mining\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
