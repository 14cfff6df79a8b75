"""Saving and loading encoders: the config travels with the weights; the model id is their hash.

A model folder holds

- ``model.pt``: ``{"format", "name", "config", "patch", "state_dict", "model_id"}`` (loadable with
  ``torch.load(weights_only=True)``: no pickled code);
- ``model_card.json`` and ``MODEL_CARD.md`` beside it: data, training config and seed, metrics,
  the exact command that trained it.

``model_id`` = first 16 hex digits of SHA-256 over the state dict (names, dtypes, shapes, bytes in
name order): identical weights ⇔ identical id, whatever file they were saved to.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..core.metrics import flatten
from ..errors import ModelError
from ..imaging.patches import PatchSpec
from .encoders import LesionEncoder, create_encoder

FORMAT = "lesiondb-encoder/1"
WEIGHTS = "model.pt"
CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"


def model_id(state_dict: dict[str, torch.Tensor]) -> str:
    """Hash of the weights (16 hex digits)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def weights_path(path: str | Path) -> Path:
    """``path`` itself for a file, ``path/model.pt`` for a model folder."""
    p = Path(path)
    return p / WEIGHTS if p.is_dir() or p.suffix != ".pt" else p


def save_model(model: LesionEncoder, path: str | Path, *, patch: PatchSpec | dict | None = None,
               card: dict[str, Any] | None = None) -> str:
    """Save weights + config to ``path`` (a folder, or a ``.pt`` file) and write the model card
    beside them when ``card`` is given. Returns the model id."""
    wp = weights_path(path)
    wp.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    mid = model_id(sd)
    patch_d = patch.to_dict() if isinstance(patch, PatchSpec) else dict(patch or {})
    blob = {"format": FORMAT, "name": model.config["name"], "config": model.config, "patch": patch_d,
            "state_dict": sd, "model_id": mid}
    tmp = wp.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(wp)
    if card is not None:
        write_model_card(wp.parent, {**card, "model_id": mid, "encoder": model.config,
                                     "patch": patch_d, "weights": wp.name,
                                     "weights_bytes": wp.stat().st_size})
    return mid


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LesionEncoder:
    """Rebuild the encoder from its saved config and load the weights (eval mode).

    The result carries ``model.model_id`` and ``model.patch_spec`` (the patch settings it was trained with).
    """
    wp = weights_path(path)
    if not wp.is_file():
        raise ModelError(f"{wp}: model file not found (train one with `lesiondb train`, or omit --model "
                         "to use the default model)")
    try:
        blob = torch.load(wp, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ModelError(f"{wp}: not a readable lesiondb model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{wp}: not a lesiondb encoder file (format {blob.get('format') if isinstance(blob, dict) else '?'}; "
                         f"expected {FORMAT})")
    cfg = dict(blob["config"])
    name = cfg.pop("name")
    try:
        model = create_encoder(name, **cfg)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"{wp}: weights do not fit encoder {name!r} with its saved config ({exc})") from exc
    mid = model_id(model.state_dict())
    if blob.get("model_id") and blob["model_id"] != mid:
        raise ModelError(f"{wp}: weights hash {mid} differs from the recorded model id {blob['model_id']} "
                         "(file corrupted or edited)")
    model.model_id = mid
    model.patch_spec = PatchSpec.from_dict(blob.get("patch") or {})
    return model.eval()


def read_model_card(path: str | Path) -> dict[str, Any]:
    p = weights_path(path).parent / CARD_JSON
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def write_model_card(folder: str | Path, card: dict[str, Any]) -> None:
    """``model_card.json`` (everything) and ``MODEL_CARD.md`` (the same, for people)."""
    folder = Path(folder)
    card = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **card}
    (folder / CARD_JSON).write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    (folder / CARD_MD).write_text(_card_markdown(card))


def _card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Lesion encoder `{card.get('model_id')}`", "",
             f"Encoder **{card.get('encoder', {}).get('name')}**, embedding dimension "
             f"{card.get('encoder', {}).get('embed_dim')}, weights `{card.get('weights')}` "
             f"({card.get('weights_bytes', 0) / 1e6:.2f} MB). Created {card.get('created')}.", ""]
    if card.get("command"):
        lines += ["## Exact command", "", "```", str(card["command"]), "```", ""]
    if card.get("recipe"):
        lines += [str(card["recipe"]), ""]
    if card.get("data"):
        lines += ["## Data", "", "```json", json.dumps(card["data"], indent=2, default=str), "```", ""]
    if card.get("metrics"):
        lines += ["## Metrics", ""]
        lines += _metrics_table(card["metrics"])
        lines.append("")
    if card.get("training"):
        t = card["training"]
        lines += ["## Training", "",
                  f"{t.get('epochs_run')} epochs in {t.get('seconds', 0):.0f} s on {t.get('device')} "
                  f"({t.get('threads')} threads), final loss {t.get('final_loss')}.", ""]
    lines += ["## Config", "", "```json",
              json.dumps({"train": card.get("config"), "encoder": card.get("encoder"), "patch": card.get("patch")},
                         indent=2, default=str), "```", ""]
    lines += ["## Intended use and limits", "",
              "Trained from scratch on synthetic CT phantoms (no pretrained weights): it organises lesions "
              "by type, body location and size for retrieval in lesiondb. It is not a diagnostic device; "
              "accuracy on real CT is not established by these metrics.", ""]
    return "\n".join(lines)


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    """A measure × (model, baselines…) table from an evaluation result (or {name: result})."""
    if "baselines" in metrics:  # lesiondb.nn.evaluate.evaluate_model_on output
        rows = {"model": flatten({k: v for k, v in metrics.items()
                                  if k in ("retrieval", "classification_accuracy", "clustering")})}
        rows.update({name: flatten(b) for name, b in metrics["baselines"].items()})
    else:
        rows = {name: flatten(m) for name, m in metrics.items() if isinstance(m, dict)}
    if not rows:
        return ["```json", json.dumps(metrics, indent=2, default=str), "```"]
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    out = ["| measure | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for k in keys:
        out.append(f"| {k} | " + " | ".join(_fmt(rows[n].get(k)) for n in rows) + " |")
    extra = {k: metrics[k] for k in ("lesions", "k", "exclude_same_patient") if k in metrics}
    if extra:
        out += ["", ", ".join(f"{k}: {v}" for k, v in extra.items())]
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))
