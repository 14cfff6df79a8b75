"""Batched inference, the BN-folded fast path, the default model and real DeepLesion slices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lesiondb.nn.encoders import create_encoder
from lesiondb.nn.infer import default_model_path, embed_patches, load_default_model, prepare_for_inference

from .conftest import toy_patchset


def test_batch_size_does_not_change_embeddings():
    torch.manual_seed(0)
    m = create_encoder("resnet18_ms", input_size=32, embed_dim=16).eval()
    ps = toy_patchset(23, size=32)
    a = embed_patches(m, ps.images, ps.boxes, batch_size=23)
    b = embed_patches(m, ps.images, ps.boxes, batch_size=4)
    assert a.shape == (23, 16) and a.dtype == np.float32
    assert np.allclose(a, b, atol=1e-5)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    fast = embed_patches(prepare_for_inference(m), ps.images, ps.boxes, batch_size=8)
    assert np.allclose(a, fast, atol=1e-4)


def test_input_checks():
    m = create_encoder("resnet18_ms").eval()
    with pytest.raises(ValueError, match="boxes"):
        embed_patches(m, np.zeros((2, 3, 64, 64)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        embed_patches(m, np.zeros((2, 1, 64, 64)), np.zeros((2, 4)))
    assert embed_patches(m, np.zeros((0, 3, 64, 64)), np.zeros((0, 4))).shape == (0, m.embed_dim)


@pytest.mark.skipif(not default_model_path().is_file(), reason="default model not built in this checkout")
def test_default_model_loads_with_its_patch_spec_and_card():
    from lesiondb.nn.model_io import read_model_card

    m = load_default_model()
    assert len(m.model_id) == 16 and m.patch_spec.size_px == m.config["input_size"]
    card = read_model_card(default_model_path())
    assert card["model_id"] == m.model_id and card["command"].startswith("lesiondb train")
    assert default_model_path().stat().st_size <= 20 * 1024 * 1024
    m2 = load_default_model()
    assert m2 is not m  # a fresh copy each time: callers may modify it


def test_encoder_runs_on_real_deeplesion_key_slices(shared_data):
    """The default (or an untrained) encoder embeds the real DeepLesion key slices (PNG stacks)."""
    from lesiondb.nn.data import patchset_from_deeplesion

    root = shared_data / "deeplesion_images" / "key_slices"
    dl = shared_data / "deeplesion" / "DL_info_available_merged.csv"
    if not root.is_dir() or not dl.is_file():
        pytest.skip("DeepLesion key slices or DL_info missing")
    if default_model_path().is_file():
        m = load_default_model()
        spec = m.patch_spec
    else:
        m = create_encoder("resnet18_ms").eval()
        from lesiondb.imaging.patches import PatchSpec

        spec = PatchSpec()
    ps = patchset_from_deeplesion(dl, root, spec)
    assert len(ps) >= 47  # every key slice has its DL_info row (several lesions per slice possible)
    emb = embed_patches(prepare_for_inference(m), ps.images, ps.boxes)
    assert np.isfinite(emb).all() and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert len(np.unique(np.round(emb, 4), axis=0)) > 0.9 * len(emb)  # not collapsed
