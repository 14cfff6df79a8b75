"""Multi-scale RoI lesion encoders and their registry (timm-style ``create_encoder(name, **cfg)``).

After Yan et al. (CVPR 2018): a CNN backbone runs on the 3-slice patch; the lesion box is
RoI-aligned (``torchvision.ops.roi_align``) on the feature maps of several stages; each pooled
feature goes through its own FC layer; the parts are concatenated → FC → L2-normalised embedding.

Backbones are torchvision's ResNet-18 and VGG-16 with random init (no weights are downloaded).
For CPU use they can be made small: ``width`` scales every channel count (64 = torchvision's own
sizes), ``depths`` / ``n_blocks`` truncate them. Two additions, both switchable in the config:
``context`` adds a globally pooled feature of the whole patch (the body context around the box),
``box_geometry`` adds the log box size in patch pixels (patches have a fixed mm/pixel, so this is
the lesion size; RoI pooling alone normalises size away).

The full constructor config is stored on the model (``model.config``) and saved with the weights.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.models.vgg import make_layers
from torchvision.ops import roi_align

_REGISTRY: dict[str, Callable[..., LesionEncoder]] = {}


def register_encoder(name: str) -> Callable:
    """Decorator: register a factory ``fn(**cfg) -> LesionEncoder`` under ``name``."""

    def deco(fn: Callable) -> Callable:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def create_encoder(name: str, **cfg: Any) -> LesionEncoder:
    """Build a registered encoder with random init. ``cfg`` overrides the factory's defaults."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown encoder {name!r}; available: {', '.join(list_encoders())}")
    model = _REGISTRY[name](**cfg)
    model.config = {"name": name, **model.config}
    return model


class LesionEncoder(nn.Module):
    """Backbone stages → RoI-aligned multi-scale features (+ context, + box size) → FC → unit vector.

    ``forward(images (B, 3, S, S), boxes (B, 4) in patch pixels) -> (B, embed_dim)``.
    """

    def __init__(self, stem: nn.Module, stages: nn.ModuleList, channels: list[int], strides: list[int],
                 feature_stages: list[int], *, embed_dim: int = 64, roi_size: int | list[int] = 2,
                 stage_dim: int = 64, context: bool = True, box_geometry: bool = True, box_dim: int = 16,
                 roi_expand: float = 0.0, input_size: int = 64, config: dict | None = None):
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.feature_stages = list(feature_stages)
        self.strides = list(strides)
        self.roi_sizes = (list(roi_size) if isinstance(roi_size, (list, tuple))
                          else [roi_size] * len(self.feature_stages))
        if len(self.roi_sizes) != len(self.feature_stages):
            raise ValueError("roi_size needs one entry per feature stage")
        self.roi_expand = float(roi_expand)
        self.input_size = int(input_size)
        self.stage_fc = nn.ModuleList(
            nn.Sequential(nn.Linear(channels[s] * r * r, stage_dim), nn.ReLU(inplace=True))
            for s, r in zip(self.feature_stages, self.roi_sizes, strict=True))
        width = stage_dim * len(self.feature_stages)
        self.context = context
        if context:
            self.context_fc = nn.Sequential(nn.Linear(channels[len(stages) - 1], stage_dim), nn.ReLU(inplace=True))
            width += stage_dim
        self.box_geometry = box_geometry
        self.box_fc = None
        if box_geometry:
            if box_dim > 0:  # a small MLP: the box includes a margin, lesion size is not simply its log
                self.box_fc = nn.Sequential(nn.Linear(4, box_dim), nn.ReLU(inplace=True))
                width += box_dim
            else:
                width += 2
        self.head = nn.Linear(width, embed_dim)
        self.embed_dim = embed_dim
        self.config = dict(config or {})

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        b = images.shape[0]
        boxes = boxes.to(images.dtype)
        if self.roi_expand:
            wh = (boxes[:, 2:] - boxes[:, :2]) * self.roi_expand
            boxes = torch.cat([boxes[:, :2] - wh, boxes[:, 2:] + wh], dim=1)
        rois = torch.cat([torch.arange(b, dtype=images.dtype, device=images.device)[:, None], boxes], dim=1)
        parts = []
        for s, r, fc in zip(self.feature_stages, self.roi_sizes, self.stage_fc, strict=True):
            pooled = roi_align(maps[s], rois, output_size=(r, r), spatial_scale=1.0 / self.strides[s],
                               sampling_ratio=2, aligned=True)
            parts.append(fc(pooled.flatten(1)))
        if self.context:
            parts.append(self.context_fc(maps[-1].mean(dim=(2, 3))))
        if self.box_geometry:
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1.0) / self.input_size
            if self.box_fc is not None:
                parts.append(self.box_fc(torch.cat([torch.log(wh), wh], dim=1)))
            else:
                parts.append(torch.log(wh))
        return F.normalize(self.head(torch.cat(parts, dim=1)), dim=1)


def _init_weights(module: nn.Module) -> None:
    """torchvision's ResNet init for convs/BN; small normal init for the FC layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# ResNet-18


def _resnet_stages(width: int, depths: list[int], stem: str) -> tuple[nn.Module, nn.ModuleList, list, list]:
    if width == 64 and list(depths) == [2, 2, 2, 2] and stem == "imagenet":
        m = resnet18(weights=None)  # torchvision's own network, randomly initialised
        stem_mod = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        stages = nn.ModuleList([m.layer1, m.layer2, m.layer3, m.layer4])
        return stem_mod, stages, [64, 128, 256, 512], [4, 8, 16, 32]
    if stem == "imagenet":  # 7×7/2 conv + 3×3/2 max pool: stride 4
        stem_mod = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stride = 4
    elif stem == "light":  # 3×3/2 conv + 3×3/2 max pool: stride 4 at a fifth of the 7×7 stem's cost
        stem_mod = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stride = 4
    elif stem == "small":  # 3×3/2 conv: stride 2, for small patches
        stem_mod = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                 nn.ReLU(inplace=True))
        stride = 2
    else:
        raise ValueError(f"stem must be 'imagenet', 'light' or 'small', got {stem!r}")
    stages, channels, strides = [], [], []
    inplanes = width
    for i, depth in enumerate(depths):
        planes = width * 2 ** i
        s = 1 if i == 0 else 2
        stride *= s
        blocks = []
        for j in range(depth):
            down = None
            if j == 0 and (s != 1 or inplanes != planes):
                down = nn.Sequential(conv1x1(inplanes, planes, s), nn.BatchNorm2d(planes))
            blocks.append(BasicBlock(inplanes, planes, s if j == 0 else 1, down))
            inplanes = planes
        stages.append(nn.Sequential(*blocks))
        channels.append(planes)
        strides.append(stride)
    return stem_mod, nn.ModuleList(stages), channels, strides


@register_encoder("resnet18_ms")
def resnet18_ms(width: int = 16, depths: list[int] | tuple = (1, 1, 1, 1), stem: str = "light",
                feature_stages: list[int] | tuple = (0, 1, 2, 3), embed_dim: int = 64,
                roi_size: int | list[int] = (4, 4, 2, 2), stage_dim: int = 64, context: bool = True,
                box_geometry: bool = True, box_dim: int = 16, roi_expand: float = 0.0,
                input_size: int = 64) -> LesionEncoder:
    """ResNet-18 (torchvision BasicBlocks) with RoI features from several stages.

    Defaults are CPU-sized (width 16, one block per stage, the 3×3 "light" stem: the 7×7 stem's
    backward pass alone is ~6× slower on CPU); ``width=64, depths=(2, 2, 2, 2), stem="imagenet"``
    is torchvision's ``resnet18`` itself. ``feature_stages`` index ``layer1..layer4`` from 0.
    """
    depths = list(depths)
    if not 1 <= len(depths) <= 4:
        raise ValueError("depths: 1 to 4 stages")
    fs = list(feature_stages)
    if not fs or max(fs) >= len(depths) or min(fs) < 0:
        raise ValueError(f"feature_stages {fs} must index the {len(depths)} stages")
    cfg = dict(width=width, depths=depths, stem=stem, feature_stages=fs, embed_dim=embed_dim,
               roi_size=list(roi_size) if isinstance(roi_size, (list, tuple)) else roi_size,
               stage_dim=stage_dim, context=context, box_geometry=box_geometry, box_dim=box_dim,
               roi_expand=roi_expand, input_size=input_size)
    stem_mod, stages, channels, strides = _resnet_stages(width, depths, stem)
    model = LesionEncoder(stem_mod, stages, channels, strides, fs, embed_dim=embed_dim, roi_size=roi_size,
                          stage_dim=stage_dim, context=context, box_geometry=box_geometry, box_dim=box_dim,
                          roi_expand=roi_expand, input_size=input_size, config=cfg)
    _init_weights(model)
    return model


# ---------------------------------------------------------------------------------------------
# VGG-16

_VGG16_BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


@register_encoder("vgg16_ms")
def vgg16_ms(width: int = 8, n_blocks: int = 5, batch_norm: bool = True,
             feature_stages: list[int] | tuple = (2, 3, 4), embed_dim: int = 64,
             roi_size: int | list[int] = (4, 2, 2), stage_dim: int = 64, context: bool = True,
             box_geometry: bool = True, box_dim: int = 16, roi_expand: float = 0.0,
             input_size: int = 64) -> LesionEncoder:
    """VGG-16 (torchvision ``make_layers``) with RoI features from conv3_3, conv4_3, conv5_3.

    As in the paper, features are taken before each block's max pool. ``width`` scales the channel
    counts (64 = torchvision's VGG-16); ``n_blocks`` truncates the network.
    """

    if not 1 <= n_blocks <= 5:
        raise ValueError("n_blocks: 1 to 5")
    fs = list(feature_stages)
    if not fs or max(fs) >= n_blocks or min(fs) < 0:
        raise ValueError(f"feature_stages {fs} must index the {n_blocks} blocks")
    cfg = dict(width=width, n_blocks=n_blocks, batch_norm=batch_norm, feature_stages=fs, embed_dim=embed_dim,
               roi_size=list(roi_size) if isinstance(roi_size, (list, tuple)) else roi_size,
               stage_dim=stage_dim, context=context, box_geometry=box_geometry, box_dim=box_dim,
               roi_expand=roi_expand, input_size=input_size)
    stages, channels, strides = [], [], []
    in_ch, stride = 3, 1
    for i in range(n_blocks):
        chans = [max(1, c * width // 64) for c in _VGG16_BLOCKS[i]]
        layers = list(make_layers(chans, batch_norm=batch_norm).children())
        first = layers[0]
        # make_layers assumes 3 input channels: rebuild the first conv for the block's real input
        layers[0] = nn.Conv2d(in_ch, first.out_channels, 3, padding=1)
        body = nn.Sequential(*layers)
        # pool before the block (after the previous block's output) keeps conv{i}_3 unpooled
        stages.append(nn.Sequential(nn.MaxPool2d(2, 2), body) if i > 0 else body)
        if i > 0:
            stride *= 2
        channels.append(chans[-1])
        strides.append(stride)
        in_ch = chans[-1]
    model = LesionEncoder(nn.Identity(), nn.ModuleList(stages), channels, strides, fs, embed_dim=embed_dim,
                          roi_size=roi_size, stage_dim=stage_dim, context=context, box_geometry=box_geometry,
                          box_dim=box_dim, roi_expand=roi_expand, input_size=input_size, config=cfg)
    _init_weights(model)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it (in place; inference only).

    Same outputs up to float rounding, ~15 % faster on CPU. Handles torchvision's BasicBlock
    (conv1/bn1, conv2/bn2) and Sequential conv → BN pairs (stems, downsample, VGG blocks).
    """

    model.eval()
    for mod in list(model.modules()):
        if isinstance(mod, BasicBlock):
            for c, b in (("conv1", "bn1"), ("conv2", "bn2")):
                if isinstance(getattr(mod, b), nn.BatchNorm2d):
                    setattr(mod, c, fuse_conv_bn_eval(getattr(mod, c), getattr(mod, b)))
                    setattr(mod, b, nn.Identity())
        if isinstance(mod, nn.Sequential):
            names = list(mod._modules)
            for a, b in zip(names, names[1:], strict=False):
                conv, bn = mod._modules[a], mod._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                    mod._modules[b] = nn.Identity()
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
