"""SemiVDN's losses (paper §3.3–3.4): Eq. 8 (supervised), Eq. 9 (unsupervised), Eq. 11–12 (DCR)."""

from semivdn.losses.composite import (
    PerceptualBackbone,
    SupervisedLoss,
    UnsupervisedLoss,
    load_perceptual_backbone,
    ramp_up,
)
from semivdn.losses.dcr import DCR, SnowBank, SnowDescriptor, dcr_loss, feature_augment, fit_gmm, kl_divergences
from semivdn.losses.frequency import FocalFrequencyLoss
from semivdn.losses.perceptual import PerceptualContrastiveLoss, PerceptualLoss, VGGFeatures
from semivdn.losses.pixel import CharbonnierLoss
from semivdn.losses.priors import DarkChannelLoss, TotalVariationLoss, dark_channel

__all__ = [
    "DCR",
    "CharbonnierLoss",
    "DarkChannelLoss",
    "FocalFrequencyLoss",
    "PerceptualBackbone",
    "PerceptualContrastiveLoss",
    "PerceptualLoss",
    "SnowBank",
    "SnowDescriptor",
    "SupervisedLoss",
    "TotalVariationLoss",
    "UnsupervisedLoss",
    "VGGFeatures",
    "dark_channel",
    "dcr_loss",
    "feature_augment",
    "fit_gmm",
    "kl_divergences",
    "load_perceptual_backbone",
    "ramp_up",
]
