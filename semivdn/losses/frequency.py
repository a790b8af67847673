"""Focal Frequency Loss (Jiang et al., ICCV 2021, paper ref [27]): the λ2 term of Eq. 8.

Matches the official implementation (github.com/EndlessSora/focal-frequency-loss) with its
defaults: patch_factor=1, ave_spectrum=False, log_matrix=False, batch_matrix=False.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FocalFrequencyLoss(nn.Module):
    """Squared spectrum distance, weighted toward the frequencies that are hardest right now.

    For ``F = fft2(x, norm="ortho")`` of prediction and target, per (image, channel):
    ``d = |F_pred - F_tgt|²`` and ``w = |F_pred - F_tgt|^alpha / max(...)`` over all frequencies,
    clamped to [0, 1] and detached (NaN from an all-zero difference becomes 0); the loss is
    ``mean(w · d)`` over images, channels and frequencies.

    Args:
        alpha: exponent of the spectrum weight matrix (focusing strength).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.shape != target.shape or prediction.dim() != 4:
            raise ValueError(f"FocalFrequencyLoss: expected two (N, C, H, W) tensors of one shape, "
                             f"got {tuple(prediction.shape)} and {tuple(target.shape)}")
        # float32: the FFT is not defined for half precision at arbitrary sizes (autocast)
        difference = torch.fft.fft2(prediction.float(), norm="ortho") - torch.fft.fft2(target.float(), norm="ortho")
        distance = difference.real**2 + difference.imag**2
        with torch.no_grad():
            weight = distance.sqrt() ** self.alpha
            weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
            weight = torch.nan_to_num(weight, nan=0.0).clamp(0.0, 1.0)
        return (weight * distance).mean()
