"""Training: determinism, resume = uninterrupted, learning on a toy set, pseudo-labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lesiondb.core.metrics import evaluate_embedding
from lesiondb.errors import ConfigError, ModelError
from lesiondb.nn.train import TrainConfig, augment, embed_set, fit

from .conftest import TINY_ENCODER, toy_patchset


def _cfg(**kw):
    base = dict(encoder_cfg=TINY_ENCODER, patch={"size_px": 32, "spacing_mm": 1.0, "context_mm": 4.0},
                epochs=2, batch_anchors=16, anchors_per_epoch=32, seed=3, deterministic=True, num_threads=1,
                warmup_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def test_same_seed_same_weights_other_seed_other_weights():
    data = toy_patchset(48, size=32)
    a = fit(data, _cfg()).model
    b = fit(data, _cfg()).model
    c = fit(data, _cfg(seed=4)).model
    assert _same(a, b)
    assert not _same(a, c)


def test_resume_gives_the_same_result_as_uninterrupted(tmp_path):
    data = toy_patchset(48, size=32)
    full = fit(data, _cfg(epochs=3), tmp_path / "full")
    # interrupted run: 1 epoch, then "crash" (the checkpoint of epoch 1 stays), resume to 3
    part = fit(data, _cfg(epochs=3), tmp_path / "part", stop_after_epoch=1)
    assert len(part.history) == 1
    resumed = fit(data, _cfg(epochs=3), tmp_path / "part", resume=True)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 3
    assert _same(full.model, resumed.model)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_resume_refuses_missing_checkpoint_and_changed_config(tmp_path):
    data = toy_patchset(24, size=32)
    with pytest.raises(ModelError, match="no checkpoint"):
        fit(data, _cfg(), tmp_path / "none", resume=True)
    fit(data, _cfg(epochs=1), tmp_path / "x")
    with pytest.raises(ConfigError, match="margin"):
        fit(data, _cfg(epochs=1, margin=0.3), tmp_path / "x", resume=True)


def test_training_learns_type_structure_on_held_out_toy_data():
    torch.set_num_threads(2)
    train, test = toy_patchset(128, size=32, seed=0), toy_patchset(96, size=32, seed=1)
    cfg = _cfg(epochs=4, anchors_per_epoch=None, deterministic=False, num_threads=2, seed=0)
    res = fit(train, cfg)
    torch.manual_seed(0)
    untrained = cfg.build_encoder()

    def score(model):
        e = embed_set(model, test)
        return evaluate_embedding(e, test.types, test.locations, test.sizes_mm, groups=test.groups)

    s, u = score(res.model), score(untrained)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert s["retrieval"]["type_error_at_5"] < u["retrieval"]["type_error_at_5"]
    assert s["retrieval"]["type_error_at_5"] < 0.15
    assert s["clustering"]["nmi"] > u["clustering"]["nmi"]


def test_pseudo_label_mode_labels_hidden_lesions():
    data = toy_patchset(96, size=32)
    cfg = _cfg(epochs=3, labels="pseudo", unlabelled_fraction=0.5, pseudo_every=1, anchors_per_epoch=48,
               deterministic=False)
    res = fit(data, cfg)
    accs = [h["pseudo_label_accuracy"] for h in res.history]
    assert len(accs) == 3 and all(0.0 <= a <= 1.0 for a in accs)
    assert accs[-1] > 0.4  # 4 balanced types: chance is 0.25


def test_augment_moves_boxes_with_the_image():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0
    boxes = torch.tensor([[6.0, 6.0, 10.0, 10.0]]).repeat(2, 1)
    g = torch.Generator().manual_seed(0)
    xa, ba = augment(x, boxes, g, max_shift=2, jitter=0.0)
    for i in range(2):
        ys, xs = np.nonzero(xa[i, 1].numpy() > 0.5)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(int(v) for v in ba[i])


def test_config_from_file_rejects_unknown_keys(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"epochs": 3, "lr_typo": 1}')
    with pytest.raises(ConfigError, match="lr_typo"):
        TrainConfig.from_file(p)
    p.write_text('{"epochs": 3, "seed": 9}')
    assert TrainConfig.from_file(p).seed == 9
