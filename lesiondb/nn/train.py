"""Training the lesion encoder: sequential sampling + triplet loss, with checkpoints and resume.

:func:`fit` trains on a :class:`~lesiondb.nn.data.PatchSet`. Everything random is derived from
``(seed, epoch)`` — the sampler's numpy generator, the augmentation's torch generator — so an epoch
replays identically whether it runs straight through or after a resume from the checkpoint written
at the end of the previous epoch. With ``deterministic=True`` torch's deterministic algorithms are
enforced as well: the same seed then gives bit-identical weights (on the same device and thread count).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, ModelError
from ..imaging.patches import PatchSpec
from .data import PatchSet
from .encoders import LesionEncoder, create_encoder
from .losses import SequentialTripletLoss
from .sampling import PseudoLabeler, SequentialSampler, metadata_features

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (saved with them and in the model card)."""

    encoder: str = "resnet18_ms"
    encoder_cfg: dict[str, Any] = field(default_factory=dict)
    patch: dict[str, Any] = field(default_factory=dict)  # PatchSpec fields
    epochs: int = 28
    anchors_per_epoch: int | None = None  # None: every typed lesion once per epoch
    batch_anchors: int = 32  # sequences per step (each holds n_same + 2 lesions)
    n_same: int = 4
    near_k: int = 5
    size_weight: float = 6.0  # size vs location in the same-type order (see docs/encoder.md)
    margin: float = 0.05
    type_margin: float = 0.2
    distance: str = "sqeuclidean"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    augment: bool = True
    max_shift_px: int = 3
    intensity_jitter: float = 0.03
    labels: str = "labels"  # "labels" | "pseudo" (types of unlabelled lesions from pseudo-labels)
    unlabelled_fraction: float = 0.0  # hide this fraction of the labels (exercises pseudo-labelling)
    pseudo_every: int = 2  # refresh pseudo-labels every N epochs
    pseudo_k: int = 10
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_threads: int | None = None  # torch CPU threads (None: all cores)
    eval_k: int = 5

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown training option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read training config: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: training config must be a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def patch_spec(self) -> PatchSpec:
        return PatchSpec.from_dict(self.patch)

    def build_encoder(self) -> LesionEncoder:
        cfg = dict(self.encoder_cfg)
        cfg.setdefault("input_size", self.patch_spec().size_px)
        return create_encoder(self.encoder, **cfg)


@dataclass
class TrainResult:
    model: LesionEncoder
    config: TrainConfig
    history: list[dict[str, float]]
    seconds: float
    resumed_from_epoch: int | None
    device: str


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def set_determinism(on: bool) -> None:
    """torch deterministic algorithms (and the cuBLAS workspace setting they need on CUDA)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def augment(images: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator, max_shift: int,
            jitter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Random integer translation (box moves along) and a small intensity scale/offset per patch.

    No flips or rescaling: left/right and size are part of what the embedding must keep.
    """
    b, c, h, w = images.shape
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=gen)
        padded = torch.nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
        out = torch.empty_like(images)
        for i in range(b):
            dx, dy = int(shifts[i, 0]), int(shifts[i, 1])
            out[i] = padded[i, :, max_shift - dy: max_shift - dy + h, max_shift - dx: max_shift - dx + w]
        images = out
        boxes = boxes + shifts.to(boxes.dtype).repeat(1, 2)
    if jitter > 0:
        scale = 1.0 + jitter * (2 * torch.rand((b, 1, 1, 1), generator=gen) - 1)
        offset = jitter * (2 * torch.rand((b, 1, 1, 1), generator=gen) - 1)
        images = (images * scale + offset).clamp_(0.0, 1.0)
    return images, boxes


@torch.no_grad()
def embed_set(model: LesionEncoder, data: PatchSet, batch_size: int = 512,
              device: torch.device | None = None) -> np.ndarray:
    """Embeddings (N, D) float32 of a patch set (eval mode, no augmentation)."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    for s in range(0, len(data), batch_size):
        x = torch.from_numpy(np.asarray(data.images[s: s + batch_size], dtype=np.float32)).to(device)
        bx = torch.from_numpy(np.asarray(data.boxes[s: s + batch_size], dtype=np.float32)).to(device)
        out.append(model(x, bx).float().cpu().numpy())
    model.train(was)
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def _lr_lambda(total_steps: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))
    return f


def _training_types(data: PatchSet, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Types the trainer may use (labels, minus the hidden fraction) and which were hidden."""
    types = data.types.astype(np.int64).copy()
    hidden = np.zeros(len(types), dtype=bool)
    if cfg.unlabelled_fraction > 0:
        rng = np.random.default_rng(_epoch_seed(cfg.seed, 0, 7))  # stream 7: the hidden labels
        lab = np.flatnonzero(types >= 0)
        k = int(round(cfg.unlabelled_fraction * len(lab)))
        hide = rng.choice(lab, k, replace=False) if k else np.zeros(0, dtype=np.int64)
        types[hide] = -1
        hidden[hide] = True
    return types, hidden


def fit(data: PatchSet, cfg: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False,
        progress: bool | Callable[[int], None] = False, on_epoch: Callable[[dict], None] | None = None,
        stop_after_epoch: int | None = None) -> TrainResult:
    """Train an encoder on ``data``. Writes ``out_dir/checkpoint.pt`` after every epoch when
    ``out_dir`` is given; ``resume=True`` continues from it (same config required).
    ``progress``: True for a tqdm bar on stderr, or a callable taking the number of steps done.
    ``stop_after_epoch``: stop early after that epoch (as an interrupted run would; for tests).
    """
    t0 = time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_determinism(cfg.deterministic)
    device = pick_device(cfg.device)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT if out else None

    torch.manual_seed(cfg.seed)
    model = cfg.build_encoder().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_types, hidden = _training_types(data, cfg)
    use_pseudo = cfg.labels == "pseudo" or (base_types < 0).any()
    if cfg.labels not in ("labels", "pseudo"):
        raise ConfigError(f"labels must be 'labels' or 'pseudo', got {cfg.labels!r}")
    n_anchor = cfg.anchors_per_epoch or int(len(data))
    steps_per_epoch = max(1, math.ceil(n_anchor / cfg.batch_anchors))
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, cfg.warmup_steps))
    sampler = SequentialSampler(n_same=cfg.n_same, size_weight=cfg.size_weight, near_k=cfg.near_k)
    loss_fn = SequentialTripletLoss(cfg.margin, cfg.type_margin, cfg.distance)
    labeler = PseudoLabeler(k=cfg.pseudo_k, n_clusters=8, random_state=cfg.seed)

    start_epoch, history, types = 0, [], base_types
    resumed = None
    if use_pseudo:
        types = labeler.fit(metadata_features(data.locations, data.sizes_mm, cfg.size_weight), base_types).labels_
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise ModelError(f"--resume: no checkpoint at {ckpt_path} (train once with --out DIR first)")
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        saved = state["config"]
        mine = cfg.to_dict()
        diff = [k for k in mine if k not in ("epochs", "device", "num_threads") and saved.get(k) != mine[k]]
        if diff:
            raise ConfigError(f"--resume: checkpoint {ckpt_path} was trained with other settings "
                              f"({', '.join(diff)}); use the same config or another --out")
        if saved.get("epochs") != cfg.epochs:
            raise ConfigError(f"--resume: checkpoint planned {saved.get('epochs')} epochs, now {cfg.epochs}; "
                              "the learning-rate schedule depends on it, so keep --epochs the same")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"])
        history = list(json.loads(state["history"]))
        types = state["types"].numpy().astype(np.int64)
        resumed = start_epoch
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    bar = None
    if progress is True:
        bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, desc="train", unit="step",
                   file=sys.stderr, dynamic_ncols=True, disable=not sys.stderr.isatty())
    images_np, boxes_np = data.images, data.boxes
    for epoch in range(start_epoch, cfg.epochs):
        if use_pseudo and epoch > 0 and epoch % cfg.pseudo_every == 0:
            types = labeler.fit(embed_set(model, data, device=device), base_types).labels_
        rng = np.random.default_rng(_epoch_seed(cfg.seed, epoch, 0))
        gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, 1))
        eligible = np.flatnonzero(types >= 0)
        anchors = rng.permutation(eligible)
        if cfg.anchors_per_epoch:
            reps = math.ceil(cfg.anchors_per_epoch / max(1, len(anchors)))
            anchors = np.concatenate([anchors] + [rng.permutation(eligible) for _ in range(reps - 1)])
            anchors = anchors[: cfg.anchors_per_epoch]
        model.train()
        losses, active = [], []
        for s in range(steps_per_epoch):
            batch = anchors[s * cfg.batch_anchors: (s + 1) * cfg.batch_anchors]
            if not len(batch):
                break
            seqs, valid = sampler.sample(types, data.locations, data.sizes_mm, batch, rng)
            uniq, inv = np.unique(np.where(seqs >= 0, seqs, seqs[:, :1]), return_inverse=True)
            local = np.where(seqs >= 0, inv.reshape(seqs.shape), -1)
            x = torch.from_numpy(np.asarray(images_np[uniq], dtype=np.float32))
            bx = torch.from_numpy(np.asarray(boxes_np[uniq], dtype=np.float32))
            if cfg.augment:
                x, bx = augment(x, bx, gen, cfg.max_shift_px, cfg.intensity_jitter)
            emb = model(x.to(device), bx.to(device))
            loss = loss_fn(emb, torch.from_numpy(local).to(device), torch.from_numpy(valid).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            active.append(loss_fn.last_stats["active"] / max(1.0, loss_fn.last_stats["triplets"]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
            elif callable(progress):
                progress(1)
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
               "active_triplets": float(np.mean(active)) if active else float("nan"),
               "lr": float(sched.get_last_lr()[0]), "seconds": round(time.time() - t0, 2)}
        if use_pseudo and hidden.any():
            rec["pseudo_label_accuracy"] = float((types[hidden] == data.types[hidden]).mean())
        history.append(rec)
        log.info("epoch %d: %s", epoch + 1, rec)
        if on_epoch:
            on_epoch(rec)
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, model, opt, sched, epoch + 1, history, types, cfg)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    if bar is not None:
        bar.close()
    model.eval()
    return TrainResult(model, cfg, history, time.time() - t0, resumed, str(device))


def _save_checkpoint(path: Path, model, opt, sched, epoch: int, history, types: np.ndarray,
                     cfg: TrainConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch, "history": json.dumps(history), "types": torch.from_numpy(types.astype(np.int64)),
                "config": cfg.to_dict()}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint
