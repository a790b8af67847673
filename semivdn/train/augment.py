"""Strong photometric augmentation of unlabelled clips (the student's view, Î_real in Eq. 9).

Photometric only — saturation, contrast, brightness and noise — so the student's and teacher's
outputs stay pixel-aligned for the consistency loss. The tone change is an affine map of colours
(:class:`ToneJitter`), and the consistency target is the teacher's output under the *same* map:
the clean version of a brightened snowy clip is the brightened clean clip. Comparing with the
teacher's untouched output instead trains the student to undo the jitter, i.e. to move the
brightness and contrast of whatever it is given. At release scale (M3, 4000 steps from the shipped
model, val) the mapped target gave +1.1 dB paired and +0.65 dB proxy-real PSNR over the untouched one,
and darkened snow-free clips by 21 % instead of 28 % (README, the release model). The noise is not
mapped: removing it is the student's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToneJitter:
    """Per-clip saturation ``s``, contrast ``c`` about a fixed ``pivot``, and brightness ``b``, each (B, 1, 1, 1, 1).

    ``x ↦ pivot + c·(g + s·(x − g) − pivot) + b`` with ``g`` the pixel's grey (channel mean): one
    linear map of each pixel's colour, so applying it to a clip and to that clip's clean version
    keeps them a (snowy, clean) pair. The pivot is the snowy clip's mean after the saturation
    change, fixed when drawn, so the map does not depend on what it is applied to.
    """

    saturation: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor
    pivot: torch.Tensor

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """The jittered (B, N_f, 3, H, W) clip, unclamped."""
        return self.contrast_and_brightness(_saturate(clip, self.saturation))

    def contrast_and_brightness(self, saturated: torch.Tensor) -> torch.Tensor:
        """The map's second half, for a clip whose saturation it has already changed."""
        return self.pivot + (saturated - self.pivot) * self.contrast + self.brightness


def _saturate(clip: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    gray = clip.mean(dim=2, keepdim=True)
    return gray + (clip - gray) * saturation


def strong_augment(clip: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ToneJitter]:
    """Jitter a (B, N_f, 3, H, W) clip per sample (the same for all its frames) and add noise.

    Returns the augmented clip in [0, 1] and its :class:`ToneJitter`, to map the teacher's target.
    """
    batch = clip.shape[0]
    shape = (batch, 1, 1, 1, 1)

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * (high - low) + low).to(clip.device)

    saturation, contrast, brightness = uniform(0.6, 1.4), uniform(0.7, 1.3), uniform(-0.1, 0.1)
    saturated = _saturate(clip, saturation)
    tone = ToneJitter(saturation, contrast, brightness, pivot=saturated.mean(dim=(1, 2, 3, 4), keepdim=True))
    noise = torch.randn(clip.shape, generator=generator).to(clip.device) * uniform(0.0, 0.03)
    return (tone.contrast_and_brightness(saturated) + noise).clamp(0.0, 1.0), tone
