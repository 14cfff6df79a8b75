"""Saving/loading encoders: config with the weights, model id = weights hash, model card."""
from __future__ import annotations

import json

import pytest
import torch

from lesiondb.errors import ModelError
from lesiondb.imaging.patches import PatchSpec
from lesiondb.nn.encoders import create_encoder
from lesiondb.nn.model_io import load_model, model_id, read_model_card, save_model

from .conftest import TINY_ENCODER


def _model(seed=0):
    torch.manual_seed(seed)
    return create_encoder("resnet18_ms", input_size=32, **TINY_ENCODER).eval()


def test_round_trip_gives_the_same_embeddings_config_and_patch_spec(tmp_path):
    m = _model()
    spec = PatchSpec(size_px=32, window_hu=(-500.0, 500.0))
    mid = save_model(m, tmp_path / "m", patch=spec, card={"command": "lesiondb train X", "metrics": {}})
    m2 = load_model(tmp_path / "m")
    assert m2.model_id == mid and m2.config == m.config and m2.patch_spec == spec
    x, b = torch.rand(2, 3, 32, 32), torch.tensor([[8.0, 8, 20, 20], [4, 4, 28, 28]])
    with torch.no_grad():
        assert torch.equal(m(x, b), m2(x, b))
    card = read_model_card(tmp_path / "m")
    assert card["model_id"] == mid and card["command"] == "lesiondb train X"
    assert card["encoder"]["name"] == "resnet18_ms" and card["patch"]["size_px"] == 32
    md = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert mid in md and "lesiondb train X" in md


def test_model_id_is_a_hash_of_the_weights_only(tmp_path):
    a, b = _model(0), _model(0)
    assert model_id(a.state_dict()) == model_id(b.state_dict())
    assert save_model(a, tmp_path / "x.pt") == save_model(b, tmp_path / "y" / "model.pt")
    c = _model(1)
    assert model_id(c.state_dict()) != model_id(a.state_dict())
    with torch.no_grad():
        next(a.parameters()).view(-1)[0] += 1e-3
    assert model_id(a.state_dict()) != model_id(b.state_dict())


def test_missing_corrupt_and_tampered_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "none")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a readable lesiondb model"):
        load_model(bad)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a lesiondb encoder"):
        load_model(tmp_path / "other.pt")
    m = _model()
    save_model(m, tmp_path / "t.pt")
    blob = torch.load(tmp_path / "t.pt", weights_only=True)
    k = next(iter(blob["state_dict"]))
    blob["state_dict"][k] = blob["state_dict"][k] + 1
    torch.save(blob, tmp_path / "t.pt")
    with pytest.raises(ModelError, match="differs from the recorded model id"):
        load_model(tmp_path / "t.pt")


def test_card_json_is_valid_json_with_metrics_table(tmp_path):
    m = _model()
    metrics = {"model": {"retrieval": {"type_error_at_5": 0.05}}, "location_only": {"retrieval": {"type_error_at_5": 0.3}}}
    save_model(m, tmp_path, card={"metrics": metrics})
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["metrics"] == metrics
    md = (tmp_path / "MODEL_CARD.md").read_text()
    assert "| retrieval.type_error_at_5 | 0.0500 | 0.3000 |" in md
    ev = {"retrieval": {"type_error_at_5": 0.05}, "classification_accuracy": 0.9,
          "baselines": {"location_only": {"retrieval": {"type_error_at_5": 0.3}, "classification_accuracy": 0.8}}}
    save_model(m, tmp_path, card={"metrics": ev})
    md = (tmp_path / "MODEL_CARD.md").read_text()
    assert "| measure | model | location_only |" in md and "| classification_accuracy | 0.9000 | 0.8000 |" in md
