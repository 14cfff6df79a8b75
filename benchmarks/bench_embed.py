"""Lesion encoder speed: embedding throughput (goal ≥ 500 lesions/s on 2 cores) and training time.

    python benchmarks/bench_embed.py [--threads 2] [--n 2048] [--model PATH]
    python benchmarks/bench_embed.py --train        # also re-run the default model's training recipe

Embedding: the network alone on N patches (``--batch``, BatchNorm folded), on ``--threads``
torch threads and on 1 (what the ingest uses while its reader processes run: OpenMP threads that
wait for each other spin, which on shared cores costs more than the second thread gives), and
patch extraction from a 512×512 CT-sized volume (numpy, one thread), per lesion. Training:
the default model's recorded training time (its model card), and with ``--train`` a fresh run of
the exact recipe in ``lesiondb/models/default/train_default.sh`` timed here.
Writes the figures to docs/benchmarks.md (section ``embed``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def embed_rate(model, n: int, batch: int, repeats: int = 3) -> float:
    from lesiondb.nn.infer import embed_patches, prepare_for_inference

    s = model.patch_spec.size_px
    rng = np.random.default_rng(0)
    patches = rng.random((n, 3, s, s), dtype=np.float32)
    side = rng.uniform(6, s - 8, n)
    boxes = np.stack([s / 2 - side / 2, s / 2 - side / 2, s / 2 + side / 2, s / 2 + side / 2], 1).astype(np.float32)
    m = prepare_for_inference(model)
    embed_patches(m, patches[:batch], boxes[:batch], batch)  # warm-up
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        embed_patches(m, patches, boxes, batch)
        best = max(best, n / (time.perf_counter() - t))
    return best


def patch_rate(spec, n: int = 300) -> float:
    from lesiondb.imaging.patches import extract_patch_from_volume

    rng = np.random.default_rng(1)
    vol = rng.normal(0, 200, (40, 512, 512)).astype(np.float32)
    t = time.perf_counter()
    for _ in range(n):
        cx, cy = rng.uniform(100, 400, 2)
        r = rng.uniform(3, 40)
        extract_patch_from_volume(vol, int(rng.integers(2, 38)), (cx - r, cy - r, cx + r, cy + r), (0.7, 0.7),
                                  2.5, spec)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", help="model folder/.pt [default: the packaged default model]")
    ap.add_argument("--train", action="store_true", help="re-run and time the default model's training recipe")
    opts = ap.parse_args()
    import torch

    from lesiondb.nn.infer import default_model_path, load_default_model
    from lesiondb.nn.model_io import load_model, read_model_card

    torch.set_num_threads(opts.threads)
    model = load_model(opts.model) if opts.model else load_default_model()
    path = Path(opts.model) if opts.model else default_model_path()
    load0 = os.getloadavg()[0]
    rate = embed_rate(model, opts.n, opts.batch)
    torch.set_num_threads(1)
    rate1 = embed_rate(model, opts.n, opts.batch)
    torch.set_num_threads(opts.threads)
    prate = patch_rate(model.patch_spec)
    both = 1.0 / (1.0 / rate + 1.0 / prate)
    card = read_model_card(path)
    rows = [f"| embedding, network only ({opts.threads} threads, batch {opts.batch}) | {rate:.0f} lesions/s |",
            f"| embedding, network only (1 thread, batch {opts.batch}; the ingest's setting) | {rate1:.0f} lesions/s |",
            f"| patch extraction (numpy, 1 thread, 512×512 volume) | {prate:.0f} lesions/s |",
            f"| patch + embedding, one after the other | {both:.0f} lesions/s |"]
    train_s = (card.get("training") or {}).get("seconds")
    if train_s is not None:
        rows.append(f"| default model training, as recorded in its model card ({card['training'].get('threads')} "
                    f"threads) | {train_s / 60:.1f} min |")
    if opts.train:
        script = REPO / "lesiondb" / "models" / "default" / "train_default.sh"
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, WORK=d, OUT=str(Path(d) / "model"), THREADS=str(opts.threads))
            t = time.perf_counter()
            subprocess.run(["bash", str(script)], check=True, env=env)
            total = time.perf_counter() - t
            fresh = json.loads((Path(d) / "model" / "model_card.json").read_text())
        rows.append(f"| default recipe re-run: cohorts + patches + training (wall) | {total / 60:.1f} min |")
        rows.append(f"| default recipe re-run: training alone | {fresh['training']['seconds'] / 60:.1f} min |")
        rows.append(f"| re-run model id = shipped model id | {fresh['model_id'] == card.get('model_id')} |")
    body = ("## Lesion encoder (`benchmarks/bench_embed.py`)\n\n"
            f"Model `{model.model_id}` ({model.config['name']}, {model.patch_spec.size_px} px patches, "
            f"{model.embed_dim}-d). Goal: embedding ≥ 500 lesions/s and default-model training ≤ 15 min on 2 "
            f"cores. The machine's cores may be shared with other work while this runs (load average {load0:.1f} "
            "at the start, on 2 CPUs).\n\n"
            "| measure | value |\n|---|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    write_section("embed", body)


if __name__ == "__main__":
    main()
