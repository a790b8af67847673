"""The VDN encoder: the first ConvNeXt stages (timm) fused into one h/4 feature map (paper §3.1).

ConvNeXt (Liu et al., CVPR 2022, https://github.com/facebookresearch/ConvNeXt) comes from
timm; its ImageNet weights are Apache-2.0 (see :mod:`semivdn.weights`). Stage 1 has stride 4;
deeper stages (``encoder_stages`` > 1) are projected, upsampled to h/4 and added, so the
rest of the network always sees X_k at h/4 with ``out_channels`` channels.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from semivdn.weights import CorruptWeightsError, load_state_dict, resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _source_key(feature_key: str, source: dict[str, torch.Tensor]) -> str | None:
    """The classifier's name for a ``features_only`` parameter.

    timm's feature wrapper flattens top-level Sequentials, renaming ``stages.0.x`` to
    ``stages_0.x``; the weights files use the classifier's names.
    """
    if feature_key in source:
        return feature_key
    head, _, rest = feature_key.partition(".")
    renamed = head.replace("_", ".", 1) + (f".{rest}" if rest else "")
    return renamed if renamed in source else None


def load_backbone_weights(backbone: nn.Module, path: Path, name: str) -> None:
    """Load classifier weights into a ``features_only`` backbone.

    Every parameter of the included stages must be present with the right shape; keys of
    the classifier head and of stages left out are ignored.
    """
    source = load_state_dict(path, name)
    target = backbone.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    missing, wrong_shape = [], []
    for key, tensor in target.items():
        source_key = _source_key(key, source)
        if source_key is None:
            missing.append(key)
        elif source[source_key].shape != tensor.shape:
            wrong_shape.append(f"{source_key} {tuple(source[source_key].shape)} != {tuple(tensor.shape)}")
        else:
            mapped[key] = source[source_key]
    if missing or wrong_shape:
        problems = [f"missing {key}" for key in missing[:5]] + wrong_shape[:5]
        raise CorruptWeightsError(f"{path}: not {name} weights ({len(missing)} missing, {len(wrong_shape)} "
                                  f"wrong shape): {'; '.join(problems)}")
    backbone.load_state_dict(mapped, strict=True)


class ConvNeXtEncoder(nn.Module):
    """Per-frame features X_k (N, out_channels, H/4, W/4) from ImageNet-normalized RGB frames.

    Args:
        name: a timm ConvNeXt, e.g. ``convnext_atto`` or ``convnext_tiny``.
        stages: how many stages to run (1 = stride 4 only).
        out_channels: channels of the fused map.
        weights: ``none`` (random), ``imagenet`` (the standard cache) or a file path.
        cache_dir: where ``imagenet`` weights are looked up (None: the standard caches).
    """

    def __init__(self, name: str, stages: int, out_channels: int, weights: str = "none",
                 cache_dir: str | Path | None = None) -> None:
        super().__init__()
        self.backbone = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(range(stages)))
        path = resolve_weights(name, weights, cache_dir)
        if path is not None:
            load_backbone_weights(self.backbone, path, name)
        self.projections = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.backbone.feature_info.channels())
        self.base_stride: int = self.backbone.feature_info.reduction()[0]  # of the fused map (4)
        self.stride: int = self.backbone.feature_info.reduction()[-1]  # of the deepest stage used
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.backbone((frames - self.mean) / self.std)
        fused = self.projections[0](features[0])
        for projection, deeper in zip(self.projections[1:], features[1:], strict=True):
            fused = fused + F.interpolate(projection(deeper), size=fused.shape[-2:], mode="bilinear",
                                          align_corners=False)
        return fused
