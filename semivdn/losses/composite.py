"""The supervised (Eq. 8) and unsupervised (Eq. 9) objectives, and the ramp-up weight μ(r) of Eq. 10.

Terms that need pretrained VGG16 weights are disabled, never faked, when the weights are not
there: ``loss.vgg_weights: none`` disables them; ``imagenet`` or a path whose file is missing
raises :class:`~semivdn.weights.MissingWeightsError` unless ``weights.allow_missing`` is true.
A disabled term is absent from the returned parts and listed in ``.unavailable`` with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from semivdn.config import Config
from semivdn.losses.frequency import FocalFrequencyLoss
from semivdn.losses.perceptual import PerceptualContrastiveLoss, PerceptualLoss, VGGFeatures
from semivdn.losses.pixel import CharbonnierLoss
from semivdn.losses.priors import DarkChannelLoss, TotalVariationLoss
from semivdn.weights import MissingWeightsError


@dataclass(frozen=True)
class PerceptualBackbone:
    """The VGG16 features shared by the perceptual terms, or why there are none."""

    features: VGGFeatures | None
    reason: str | None = None


def load_perceptual_backbone(cfg: Config) -> PerceptualBackbone:
    """Apply the missing-weights policy for ``loss.vgg_weights`` (see the module docstring)."""
    if cfg.loss.vgg_weights == "none":
        return PerceptualBackbone(None, "loss.vgg_weights is none")
    try:
        return PerceptualBackbone(VGGFeatures(cfg.loss.vgg_weights, cfg.weights.cache_dir))
    except MissingWeightsError as exc:
        if not cfg.weights.allow_missing:
            raise
        return PerceptualBackbone(None, str(exc))


def _as_images(x: Tensor, name: str) -> Tensor:
    """(N, 3, H, W) frames, or (B, N_f, 3, H, W) clips flattened to frames."""
    if x.dim() == 5:
        x = x.flatten(0, 1)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3, H, W) or (B, N_f, 3, H, W), got shape {tuple(x.shape)}")
    return x


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"loss inputs must share one shape, got {shapes}")


class SupervisedLoss(nn.Module):
    """Eq. 8: L_sup = Charbonnier + λ1·perceptual + λ2·focal frequency, on labelled synthetic clips.

    Not in the paper, ``loss.snow_stream`` > 0 adds its weight times the Charbonnier loss of the
    frames restored by the snow stream alone (Eq. 6 with F_T' = 1, F_A' = 0, ``VDNOutput.snow_only``):
    without it the network can remove flakes through the haze terms only, whose airlight is one
    value per frame, so it desnows only frames it reads as hazy (README, the release model).

    Args:
        cfg: ``loss.charbonnier_eps``, ``loss.perceptual`` (λ1), ``loss.frequency`` (λ2),
            ``loss.snow_stream``, ``loss.vgg_weights`` and ``weights``.
        backbone: VGG features to share with :class:`UnsupervisedLoss`; loaded from ``cfg`` if None.
    """

    def __init__(self, cfg: Config, backbone: PerceptualBackbone | None = None) -> None:
        super().__init__()
        backbone = backbone or load_perceptual_backbone(cfg)
        self.pixel = CharbonnierLoss(cfg.loss.charbonnier_eps)
        self.frequency = FocalFrequencyLoss()
        self.perceptual = PerceptualLoss(backbone.features) if backbone.features is not None else None
        self.unavailable: dict[str, str] = {} if backbone.reason is None else {"perceptual": backbone.reason}
        self.weights = {"pixel": 1.0, "perceptual": cfg.loss.perceptual, "frequency": cfg.loss.frequency,
                        "snow_stream": cfg.loss.snow_stream}

    @property
    def wants_snow_only(self) -> bool:
        """Whether :meth:`forward` needs the snow stream's own restoration."""
        return self.weights["snow_stream"] > 0

    def forward(self, prediction: Tensor, target: Tensor,
                snow_only: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Return the total and the unweighted value of each available term (plus ``total``)."""
        _check_same_shape(prediction=prediction, target=target)
        prediction, target = _as_images(prediction, "prediction"), _as_images(target, "target")
        terms = {"pixel": self.pixel(prediction, target), "frequency": self.frequency(prediction, target)}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(prediction, target)
        if self.wants_snow_only:
            if snow_only is None:
                raise ValueError("loss.snow_stream > 0 needs the snow stream's frames (VDN(..., snow_only=True))")
            snow_frames = _as_images(snow_only, "snow_only")
            _check_same_shape(snow_only=snow_frames, target=target)
            terms["snow_stream"] = self.pixel(snow_frames, target)
        return _weighted_sum(terms, self.weights)


class UnsupervisedLoss(nn.Module):
    """Eq. 9: L_un = λ3·Charbonnier(J_stu, J_tea) + λ4·L_cl + λ5·L_DCP + λ6·L_TV, on unlabelled real clips.

    The teacher output is a target (the teacher learns by EMA, Eq. 7), so it is detached.

    Args:
        cfg: ``loss.consistency`` (λ3), ``loss.contrastive`` (λ4), ``loss.dcp`` (λ5), ``loss.tv`` (λ6),
            ``loss.charbonnier_eps``, ``loss.vgg_weights`` and ``weights``.
        backbone: VGG features shared with :class:`SupervisedLoss`; loaded from ``cfg`` if None.
    """

    def __init__(self, cfg: Config, backbone: PerceptualBackbone | None = None) -> None:
        super().__init__()
        backbone = backbone or load_perceptual_backbone(cfg)
        self.consistency = CharbonnierLoss(cfg.loss.charbonnier_eps)
        self.contrastive = PerceptualContrastiveLoss(backbone.features) if backbone.features is not None else None
        self.dcp = DarkChannelLoss()
        self.tv = TotalVariationLoss()
        self.unavailable: dict[str, str] = {} if backbone.reason is None else {"contrastive": backbone.reason}
        self.weights = {"consistency": cfg.loss.consistency, "contrastive": cfg.loss.contrastive,
                        "dcp": cfg.loss.dcp, "tv": cfg.loss.tv}

    def forward(self, j_stu: Tensor, j_tea: Tensor, real_aug: Tensor) -> tuple[Tensor, dict[str, float]]:
        """``j_stu``/``j_tea``: student/teacher outputs; ``real_aug``: the strongly augmented real input Î_real."""
        _check_same_shape(j_stu=j_stu, j_tea=j_tea, real_aug=real_aug)
        j_stu, j_tea = _as_images(j_stu, "j_stu"), _as_images(j_tea, "j_tea").detach()
        terms = {"consistency": self.consistency(j_stu, j_tea), "dcp": self.dcp(j_stu), "tv": self.tv(j_stu)}
        if self.contrastive is not None:
            terms["contrastive"] = self.contrastive(j_stu, j_tea, _as_images(real_aug, "real_aug"))
        return _weighted_sum(terms, self.weights)


def _weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> tuple[Tensor, dict[str, float]]:
    total = sum(weights[name] * value for name, value in terms.items())
    parts = {name: float(value.detach()) for name, value in terms.items()}
    parts["total"] = float(total.detach())
    return total, parts


def ramp_up(r: float, r_max: float, mu_max: float) -> float:
    """Gaussian warm-up of the unsupervised weight (§3.3, Eq. 10): μ(r) = μ_max·exp(−5(1 − r/r_max)²).

    ``r`` is clamped to [0, r_max]: μ(0) = μ_max·e⁻⁵ ≈ 0.0067·μ_max and μ(r_max) = μ_max.
    """
    if r_max <= 0:
        raise ValueError(f"ramp_up: r_max must be > 0, got {r_max}")
    phase = 1.0 - min(max(r, 0.0), r_max) / r_max
    return mu_max * math.exp(-5.0 * phase * phase)
