"""Training an encoder on a cohort (``lesiondb train``): patches → triplet training → a model
folder whose weights carry their config, with a model card saying how to reproduce them.

torch is imported when a training runs, not when this module is: the CLI stays fast.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.progress import Progress, stage
from ..core.results import Result
from ..datasets.cohort import read_cohort_meta
from ..errors import InputError


@dataclass
class TrainResult(Result):
    """The model written by :func:`train_encoder`."""

    model_id: str
    out: str
    lesions: int
    skipped: int
    epochs: int
    seconds: float
    device: str
    final_loss: float | None
    resumed_from_epoch: int | None
    metrics: dict[str, Any] | None
    command: str
    problems: list[str]

    def to_json(self) -> dict[str, Any]:  # the model card's snake_case keys
        return {"model_id": self.model_id, "out": self.out, "lesions": self.lesions, "skipped": self.skipped,
                "epochs": self.epochs, "seconds": self.seconds, "device": self.device,
                "final_loss": self.final_loss, "resumed_from_epoch": self.resumed_from_epoch,
                "metrics": self.metrics, "command": self.command}


def train_encoder(cohort: str | Path, out_dir: str | Path, config: dict[str, Any] | None = None, *,
                  config_file: str | Path | None = None, val_cohort: str | Path | None = None, resume: bool = False, cache_dir: str | Path | None = None,
                  command: str | None = None, progress: Progress | None = None, show_epochs: bool = True
                  ) -> TrainResult:
    """Train the multi-scale triplet encoder (sequential sampling, Yan et al. 2018) on ``cohort``
    with ``config_file`` (a JSON training config) and ``config`` over it (keys of
    :class:`lesiondb.nn.train.TrainConfig`); write ``out_dir/model.pt``,
    the model card and a checkpoint per epoch. ``val_cohort``: a held-out cohort whose metrics go
    into the card. ``command``: the command line recorded in the card."""
    # torch (1–2 s to import) only when training
    from ..nn.data import patchset_from_cohort
    from ..nn.evaluate import evaluate_model_on
    from ..nn.model_io import save_model
    from ..nn.train import TrainConfig, fit

    base = TrainConfig.from_file(config_file).to_dict() if config_file else TrainConfig().to_dict()
    cfg = TrainConfig.from_dict({**base, **(config or {})})
    spec = cfg.patch_spec()
    with stage(progress, "patches") as b:
        data = patchset_from_cohort(cohort, spec, cache_dir=cache_dir, progress=b.update)
    res = fit(data, cfg, out_dir, resume=resume, progress=show_epochs)
    metrics = val_info = None
    if val_cohort:
        with stage(progress, "val patches") as b:
            val = patchset_from_cohort(val_cohort, spec, cache_dir=cache_dir, progress=b.update)
        metrics = evaluate_model_on(res.model, val, cfg.eval_k, seed=cfg.seed)
        val_info = _cohort_info(val_cohort, len(val))
    command = command or shlex.join(["lesiondb", "train", str(cohort), "--out", str(out_dir)])
    final_loss = res.history[-1]["loss"] if res.history else None
    card = {
        "command": command,
        "data": {"train": _cohort_info(cohort, len(data)), "validation": val_info,
                 "skipped_rows": len(data.problems)},
        "config": cfg.to_dict(),
        "metrics": metrics,
        "training": {"epochs_run": len(res.history), "seconds": round(res.seconds, 1), "device": res.device,
                     "threads": _threads(), "final_loss": final_loss,
                     "resumed_from_epoch": res.resumed_from_epoch, "history": res.history},
    }
    mid = save_model(res.model, out_dir, patch=spec, card=card)
    return TrainResult(model_id=mid, out=str(Path(out_dir)), lesions=len(data), skipped=len(data.problems),
                       epochs=len(res.history), seconds=round(res.seconds, 1), device=res.device,
                       final_loss=final_loss, resumed_from_epoch=res.resumed_from_epoch, metrics=metrics,
                       command=command, problems=list(data.problems))


def _threads() -> int:
    import torch  # already imported by the training

    return torch.get_num_threads()


def _cohort_info(path: str | Path, n: int) -> dict[str, Any]:
    meta = read_cohort_meta(path)
    return {"path": str(path), "lesions": n, "generator": meta.get("generator"), "seed": meta.get("seed"),
            "patients": meta.get("patients")}


@dataclass
class EncoderEvaluation(Result):
    """The paper's embedding measures for a model and its baselines on one cohort (snake_case keys,
    as the model card's)."""

    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.metrics)


def evaluate_encoder(cohort: str | Path, model: str | Path | None = None, *, k: int = 5,
                     exclude_same_patient: bool = True, seed: int = 0, cache_dir: str | Path | None = None,
                     progress: Progress | None = None) -> EncoderEvaluation:
    """Retrieval errors@K (type, location, size), kNN type accuracy, k-means purity and NMI of the
    encoder at ``model`` (default: the shipped one) on a cohort folder, beside two baselines
    (``location_only``, ``untrained``) on the same lesions."""
    from ..nn.data import patchset_from_cohort  # torch: only when evaluating
    from ..nn.evaluate import evaluate_model_on
    from ..nn.infer import load_default_model
    from ..nn.model_io import load_model

    if Path(cohort).is_file():
        raise InputError("expected a cohort folder (with annotations.csv and dicom/); "
                         "for a DL_info.csv add --metadata-only", str(cohort))
    net = load_model(model) if model else load_default_model()
    with stage(progress, "patches") as b:
        data = patchset_from_cohort(cohort, net.patch_spec, cache_dir=cache_dir, progress=b.update)
    res = evaluate_model_on(net, data, k, seed=seed, exclude_same_patient=exclude_same_patient)
    return EncoderEvaluation({"model": {"path": str(model) if model else "default", "model_id": net.model_id,
                                        "encoder": net.config.get("name")},
                              "cohort": str(cohort), "skipped": len(data.problems), "problems": data.problems,
                              **res})
