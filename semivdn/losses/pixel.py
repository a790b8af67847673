"""Charbonnier loss [7]: the pixel term of Eq. 8 and the teacher-student consistency of Eq. 9."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((x - y)² + eps²))``: a smooth L1 that is differentiable at zero.

    Args:
        eps: smoothing constant; the loss of identical inputs is ``eps``, not 0.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"CharbonnierLoss: eps must be > 0, got {eps}")
        self.eps = eps

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"CharbonnierLoss: shapes differ: {tuple(prediction.shape)} vs {tuple(target.shape)}")
        return torch.sqrt((prediction - target) ** 2 + self.eps**2).mean()
