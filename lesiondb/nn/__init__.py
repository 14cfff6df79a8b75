"""The lesion encoder (torch, torchvision): registry, sequential sampling, losses, training, inference.

Public API::

    from lesiondb.nn import create_encoder, embed_patches, load_default_model, load_model, save_model
"""
from __future__ import annotations

from .encoders import LesionEncoder, create_encoder, list_encoders, register_encoder
from .infer import embed_patches, load_default_model, prepare_for_inference
from .model_io import load_model, model_id, save_model

__all__ = [
    "LesionEncoder", "create_encoder", "list_encoders", "register_encoder",
    "embed_patches", "load_default_model", "prepare_for_inference",
    "load_model", "model_id", "save_model",
]
