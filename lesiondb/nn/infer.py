"""Inference: batched embedding of lesion patches, and the default model shipped in the package.

``embed_patches(model, patches, boxes, batch_size)`` → (N, D) float32 unit vectors. ``patches`` are
(N, 3, S, S) in [0, 1] and ``boxes`` (N, 4) in patch pixels, as made by
:mod:`lesiondb.imaging.patches` with the model's own ``model.patch_spec``.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from .encoders import LesionEncoder, fold_batchnorm
from .model_io import load_model

#: The model shipped with lesiondb (trained by the command in its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


def default_model_path() -> Path:
    return DEFAULT_MODEL_DIR / "model.pt"


@functools.lru_cache(maxsize=1)
def _default_model() -> LesionEncoder:
    p = default_model_path()
    if not p.is_file():
        raise ModelError(f"the default model is missing from this installation ({p}); "
                         "reinstall lesiondb or pass --model")
    return load_model(p)


def load_default_model() -> LesionEncoder:
    """The packaged default encoder (eval mode; ``model_id`` and ``patch_spec`` set). A fresh copy."""
    return copy.deepcopy(_default_model())


def prepare_for_inference(model: LesionEncoder) -> LesionEncoder:
    """An eval-mode copy with BatchNorm folded into the convolutions (same outputs, faster on CPU)."""
    m = copy.deepcopy(model).eval()
    fold_batchnorm(m)
    for attr in ("model_id", "patch_spec"):
        if hasattr(model, attr):
            setattr(m, attr, getattr(model, attr))
    return m


@torch.inference_mode()
def embed_patches(model: LesionEncoder, patches, boxes, batch_size: int = 256, *,
                  device: str | torch.device | None = None,
                  progress: Callable[[int], None] | None = None, threads: int | None = None) -> np.ndarray:
    """Embed N patches in batches: (N, D) float32, each row L2-normalised.

    ``patches`` (N, 3, S, S) float in [0, 1] (numpy or torch; float16 accepted), ``boxes`` (N, 4).
    The model is used as given (call :func:`prepare_for_inference` once for the faster CPU path).
    ``threads``: torch CPU threads for this call (restored after); None keeps torch's setting.
    """
    if threads is not None and threads != torch.get_num_threads():
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, int(threads)))
        try:
            return embed_patches(model, patches, boxes, batch_size, device=device, progress=progress)
        finally:
            torch.set_num_threads(before)
    patches = np.asarray(patches) if not isinstance(patches, torch.Tensor) else patches
    boxes = np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor) else boxes
    n = len(patches)
    if len(boxes) != n:
        raise ValueError(f"{n} patches but {len(boxes)} boxes")
    if n and (patches.ndim != 4 or patches.shape[1] != 3):
        raise ValueError(f"patches must be (N, 3, S, S), got {tuple(patches.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be ≥ 1")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    out = np.zeros((n, model.embed_dim), dtype=np.float32)
    try:
        for s in range(0, n, batch_size):
            x = torch.as_tensor(patches[s: s + batch_size]).to(dev, torch.float32)
            b = torch.as_tensor(boxes[s: s + batch_size]).to(dev, torch.float32)
            out[s: s + len(x)] = model(x, b).float().cpu().numpy()
            if progress:
                progress(len(x))
    finally:
        model.train(was)
    return out
