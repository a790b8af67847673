"""VGG16 features [50], the perceptual loss [29] of Eq. 8 and the perceptual contrastive loss of Eq. 9.

Weights come only from the weights table (semivdn.weights): the torchvision file
``vgg16-397923af.pth`` (BSD-3-Clause) in the torch hub cache, or a file path. There is no
random-VGG mode: features of an untrained network carry no perceptual meaning, so callers
disable these terms instead (semivdn.losses.composite).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from semivdn.weights import CorruptWeightsError, load_state_dict, resolve_weights

FEATURE_LAYERS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3: the paper's 3rd, 8th and 15th layers
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AECR-Net / CSD (refs [65], [61]) weight VGG stages 1..5 by 1/32, 1/16, 1/8, 1/4, 1; our three
# layers are the ends of stages 1..3, so they take those stages' weights.
CONTRASTIVE_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8)


def _truncated_vgg16() -> nn.Sequential:
    """torchvision's ``vgg16().features[:16]`` without building the 120M-parameter classifier."""
    return make_layers(cfgs["D"], batch_norm=False)[: FEATURE_LAYERS[-1] + 1]


class VGGFeatures(nn.Module):
    """Frozen VGG16 activations after layers 3, 8 and 15 of images in [0, 1].

    Args:
        weights: ``imagenet`` (torchvision's file in the torch hub cache) or a path to a state
            dict with torchvision's keys (``features.N.weight``); ``none`` is refused.
        cache_dir: a folder to look in instead of the standard cache (``weights.cache_dir``).

    Raises:
        MissingWeightsError: the file is not there (the message names the file and folder).
        CorruptWeightsError: the file fails its hash check or lacks VGG16 feature keys.
    """

    def __init__(self, weights: str, cache_dir: str | None = None) -> None:
        super().__init__()
        path = resolve_weights("vgg16", weights, cache_dir)
        if path is None:
            raise ValueError("VGGFeatures: weights 'none' would give a random VGG whose features mean nothing; "
                             "disable the perceptual terms instead (loss.vgg_weights: none)")
        self.source = path
        self.layers = _truncated_vgg16()
        self.layers.load_state_dict(_feature_state(path))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always stays in eval mode: it is a fixed measuring instrument, never trained."""
        return super().train(False)

    def forward(self, images: Tensor) -> list[Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VGGFeatures: expected RGB images (N, 3, H, W), got shape {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in FEATURE_LAYERS:
                outputs.append(x)
        return outputs


def _feature_state(path: Path) -> dict[str, Tensor]:
    """The ``features.N.*`` entries (N <= 15) of a torchvision VGG16 state dict, prefix stripped."""
    state = load_state_dict(path, name="vgg16")
    wanted = set(_truncated_vgg16().state_dict())
    found = {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}
    missing = sorted(wanted - set(found))
    if missing:
        raise CorruptWeightsError(f"{path}: not a torchvision VGG16 state dict: missing "
                                  f"{['features.' + key for key in missing][:4]} (found keys like {sorted(state)[:4]})")
    return {key: found[key] for key in wanted}


class PerceptualLoss(nn.Module):
    """Sum over VGG layers of the L1 distance (mean absolute error) between features [29].

    The target's features are computed without gradient: the target is a fixed reference.
    """

    def __init__(self, features: VGGFeatures) -> None:
        super().__init__()
        self.features = features

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            target_features = self.features(target)
        distances = [F.l1_loss(p, t) for p, t in zip(self.features(prediction), target_features, strict=True)]
        return torch.stack(distances).sum()


class PerceptualContrastiveLoss(nn.Module):
    """Contrastive regularization in VGG space (refs [61, 65]; the λ4 term of Eq. 9).

    ``sum_l w_l · L1(φ_l(anchor), φ_l(positive)) / (L1(φ_l(anchor), φ_l(negative)) + eps)``
    pulls the anchor (student output J_stu) toward the positive (teacher output J_tea) and away
    from the negative (strongly augmented real input Î_real). As in the references, positive and
    negative are constants (no gradient), so only the anchor is trained.

    Args:
        features: the frozen VGG16 feature extractor.
        eps: keeps the ratio finite when anchor and negative coincide.
        layer_weights: w_l per layer of ``features``.
    """

    def __init__(self, features: VGGFeatures, eps: float = 1e-7,
                 layer_weights: Sequence[float] = CONTRASTIVE_LAYER_WEIGHTS) -> None:
        super().__init__()
        if len(layer_weights) != len(FEATURE_LAYERS):
            raise ValueError(f"PerceptualContrastiveLoss: need {len(FEATURE_LAYERS)} layer weights, "
                             f"got {list(layer_weights)}")
        self.features = features
        self.eps = eps
        self.layer_weights = tuple(layer_weights)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        with torch.no_grad():
            positive_features = self.features(positive)
            negative_features = self.features(negative)
        ratios = [weight * F.l1_loss(a, p) / (F.l1_loss(a, n) + self.eps)
                  for weight, a, p, n in zip(self.layer_weights, self.features(anchor), positive_features,
                                             negative_features, strict=True)]
        return torch.stack(ratios).sum()
