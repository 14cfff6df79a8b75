"""Encoder registry and the multi-scale RoI encoders."""
from __future__ import annotations

import pytest
import torch

from lesiondb.nn.encoders import count_parameters, create_encoder, fold_batchnorm, list_encoders

from .conftest import TINY_ENCODER


def _inputs(b=4, s=64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, s, s, generator=g)
    boxes = torch.tensor([[20.0, 22.0, 40.0, 44.0]]).repeat(b, 1)
    return x, boxes


def test_registry_lists_both_backbones_and_rejects_unknown_names():
    assert {"resnet18_ms", "vgg16_ms"} <= set(list_encoders())
    with pytest.raises(KeyError, match="unknown encoder 'nope'.*resnet18_ms"):
        create_encoder("nope")


@pytest.mark.parametrize("name", ["resnet18_ms", "vgg16_ms"])
def test_output_is_unit_norm_with_configured_dimension(name):
    torch.manual_seed(0)
    m = create_encoder(name, embed_dim=24).eval()
    x, b = _inputs()
    with torch.no_grad():
        z = m(x, b)
    assert z.shape == (4, 24)
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    assert m.config["name"] == name and m.config["embed_dim"] == 24


def test_full_size_resnet18_is_torchvisions_own():
    m = create_encoder("resnet18_ms", width=64, depths=[2, 2, 2, 2], stem="imagenet", feature_stages=[1, 2, 3],
                         roi_size=[4, 2, 2])
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    backbone = sum(p.numel() for p in m.stem.parameters()) + sum(p.numel() for p in m.stages.parameters())
    assert backbone == count_parameters(ref) - count_parameters(ref.fc)


def test_config_rebuilds_the_same_architecture():
    torch.manual_seed(0)
    m = create_encoder("resnet18_ms", **TINY_ENCODER)
    cfg = dict(m.config)
    name = cfg.pop("name")
    m2 = create_encoder(name, **cfg)
    m2.load_state_dict(m.state_dict())  # same shapes everywhere
    x, b = _inputs(2, 32)
    m.eval(), m2.eval()
    with torch.no_grad():
        assert torch.allclose(m(x, b), m2(x, b))


def test_embedding_depends_on_the_box_and_on_what_is_inside_it():
    torch.manual_seed(0)
    m = create_encoder("resnet18_ms", context=False, box_geometry=False).eval()
    x, b = _inputs(1)
    with torch.no_grad():
        z = m(x, b)
        moved = m(x, b + 8)
        x2 = x.clone()
        x2[:, :, 22:44, 20:40] = 1.0 - x2[:, :, 22:44, 20:40]
        changed = m(x2, b)
    assert not torch.allclose(z, moved, atol=1e-4)
    assert not torch.allclose(z, changed, atol=1e-4)


def test_box_geometry_feature_sees_lesion_size():
    torch.manual_seed(0)
    m = create_encoder("resnet18_ms", box_geometry=True).eval()
    x = torch.full((2, 3, 64, 64), 0.5)  # flat patch: only the box differs
    boxes = torch.tensor([[28.0, 28.0, 36.0, 36.0], [16.0, 16.0, 48.0, 48.0]])
    with torch.no_grad():
        z = m(x, boxes)
    assert (z[0] - z[1]).norm() > 1e-3


@pytest.mark.parametrize("name", ["resnet18_ms", "vgg16_ms"])
def test_fold_batchnorm_keeps_outputs(name):
    torch.manual_seed(1)
    m = create_encoder(name)
    x, b = _inputs(3)
    m.train()
    with torch.no_grad():
        for _ in range(3):  # give BN non-trivial running statistics
            m(x * 2 - 0.3, b)
    m.eval()
    with torch.no_grad():
        ref = m(x, b)
        n_bn = sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
        fold_batchnorm(m)
        assert n_bn > 0 and not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
        assert torch.allclose(m(x, b), ref, atol=1e-5)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="feature_stages"):
        create_encoder("resnet18_ms", depths=[1, 1], feature_stages=[2])
    with pytest.raises(ValueError, match="stem"):
        create_encoder("resnet18_ms", stem="huge")
    with pytest.raises(ValueError, match="n_blocks"):
        create_encoder("vgg16_ms", n_blocks=6)
