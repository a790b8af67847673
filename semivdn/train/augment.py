"""Strong photometric augmentation of unlabelled clips (the student's view, Î_real in Eq. 9).

Photometric only — brightness, contrast, saturation and noise — so the student's
and teacher's outputs stay pixel-aligned for the consistency loss.
"""

from __future__ import annotations

import torch


def strong_augment(clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Jitter a (B, N_f, 3, H, W) clip per sample (the same for all its frames) and add noise."""
    batch = clip.shape[0]
    shape = (batch, 1, 1, 1, 1)

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * (high - low) + low).to(clip.device)

    gray = clip.mean(dim=2, keepdim=True)
    out = gray + (clip - gray) * uniform(0.6, 1.4)  # saturation
    mean = out.mean(dim=(1, 2, 3, 4), keepdim=True)
    out = mean + (out - mean) * uniform(0.7, 1.3)  # contrast
    out = out + uniform(-0.1, 0.1)  # brightness
    noise = torch.randn(clip.shape, generator=generator).to(clip.device) * uniform(0.0, 0.03)
    return (out + noise).clamp(0.0, 1.0)
