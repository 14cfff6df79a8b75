"""The lesion encoder as the rest of lesiondb sees it: weights plus what travels with them.

:func:`load_encoder` is the one way to load an encoder (a model folder, a ``model.pt``, or the
model shipped with lesiondb); every failure is a :class:`~lesiondb.errors.ModelError` naming the
file and the fix. The returned :class:`Encoder` carries the model's id (hash of the weights),
registry name, config and patch settings as saved with the weights — nothing is guessed.

torch is imported only when an encoder is loaded: importing this module (and the CLI) stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..imaging.patches import PatchSpec

#: Patches embedded per encoder call. 128 was fastest of 64–512 for the default encoder, on 1
#: thread (3,500 lesions/s) and on 2 idle cores (6,300/s; 512: 5,000/s), measured 2026-11-26.
EMBED_BATCH = 128


@dataclass(frozen=True)
class Encoder:
    """A loaded encoder, ready for CPU inference."""

    model_id: str
    name: str
    dim: int
    config: dict[str, Any]
    patch_spec: PatchSpec
    module: Any = field(repr=False, compare=False)  # the torch module (BatchNorm folded, eval mode)

    def embed(self, images: np.ndarray, boxes: np.ndarray, *, batch_size: int = EMBED_BATCH,
              threads: int | None = None) -> np.ndarray:
        """(N, D) float32 unit vectors of patches (N, 3, S, S) in [0, 1] with boxes (N, 4) in patch
        pixels. ``threads``: torch CPU threads for this call (None: torch's setting)."""
        from ..nn.infer import embed_patches  # torch: only when embedding

        return embed_patches(self.module, images, boxes, batch_size=batch_size, threads=threads)

    def model_config(self) -> dict[str, Any]:
        """The config stored on the graph's (:Model) node: the encoder's and its patch settings."""
        return {**self.config, "patch": self.patch_spec.to_dict()}


def load_encoder(path: str | Path | None = None) -> Encoder:
    """The encoder at ``path`` (a model folder or ``model.pt``), else the packaged default model.

    Raises :class:`ModelError` when the file is missing, unreadable, not a lesiondb encoder, or
    when torch is not installed."""
    try:  # torch (1–2 s to import) only for the commands that embed
        from ..nn.infer import load_default_model, prepare_for_inference
        from ..nn.model_io import load_model
    except ImportError as exc:
        raise ModelError(f"the encoder needs torch, which is not importable here ({exc}); "
                         "install torch and torchvision (see the README)") from exc
    try:
        model = load_model(path) if path else load_default_model()
    except OSError as exc:
        raise ModelError(f"{path or 'the default model'}: cannot be read ({exc})") from exc
    module = prepare_for_inference(model)
    config = dict(model.config)
    return Encoder(model_id=str(model.model_id), name=str(config.get("name", type(model).__name__)),
                   dim=int(model.embed_dim), config=config, patch_spec=model.patch_spec, module=module)
