"""Component decoders and the prior-guided recovery module (paper §3.2, Eq. 6).

Each physics component (snow S, transmission T, atmospheric light A) has its own decoder:
three 3×3 convolutions with a 2× upsampling that undoes the patch embedding's stride, fed
with concat(P̂^j, X̂). Their outputs are shaped into physically meaningful features:

- F_T' = t0 + (1 - t0)·sigmoid(·), a transmission in (t0, 1); the floor t0 keeps the
  division of Eq. 6 bounded (β = 1e-8 alone would let 1/F_T' reach 1e8) while keeping a
  gradient everywhere, unlike a hard clamp.
- F_A' = sigmoid(spatial mean), one global airlight value per frame and channel 1,
  broadcast over the map as the paper's N_f×1×h×w feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TRANSMISSION_FLOOR = 0.1
RESIDUAL_INIT_SCALE = 0.1


def prior_guided_recovery(f_i: torch.Tensor, f_s: torch.Tensor, f_t: torch.Tensor, f_a: torch.Tensor,
                          beta: float) -> torch.Tensor:
    """Eq. 6: F_B' = (F_I' − F_S' − (1 − F_T')·F_A') / (F_T' + β), the inverse of Eq. 1 in feature space."""
    return (f_i - f_s - (1.0 - f_t) * f_a) / (f_t + beta)


def to_transmission(raw: torch.Tensor) -> torch.Tensor:
    """Map a decoder output to F_T' in (TRANSMISSION_FLOOR, 1)."""
    return TRANSMISSION_FLOOR + (1.0 - TRANSMISSION_FLOOR) * torch.sigmoid(raw)


def to_airlight(raw: torch.Tensor) -> torch.Tensor:
    """Map a 1-channel decoder output to the global F_A' in (0, 1), expanded over the map."""
    return torch.sigmoid(raw.mean(dim=(2, 3), keepdim=True)).expand_as(raw)


class ComponentDecoder(nn.Module):
    """concat(P̂^j, X̂) on the token grid -> one component feature at ``upscale`` times that resolution (h/4).

    Two convolutions on the token grid, upsampling, one at h/4: the paper's three layers,
    with most of the work at the cheaper resolution.
    """

    def __init__(self, dim: int, channels: int, out_channels: int, upscale: int) -> None:
        super().__init__()
        self.upscale = upscale
        self.conv1 = nn.Conv2d(2 * dim, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, component: torch.Tensor, combined: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.conv2(F.gelu(self.conv1(torch.cat([component, combined], dim=1)))))
        hidden = F.interpolate(hidden, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return self.conv3(hidden)


class RGBDecoder(nn.Module):
    """F_B' at h/4 -> an RGB residual at full resolution: one 3×3 convolution, then pixel shuffle (§3.2)."""

    def __init__(self, channels: int, upscale: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 3 * upscale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(upscale)
        with torch.no_grad():  # a small initial residual: training starts near J = I, with gradients everywhere
            self.conv.weight.mul_(RESIDUAL_INIT_SCALE)
            self.conv.bias.zero_()

    def forward(self, background: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(background))
