"""Do no harm: snow-free footage must come out of the model essentially unchanged.

A desnowing network that learned "snowy input → clean output" on hazy, snowy pairs can
also learn to always remove haze and brighten, darkening or tinting footage that had no
snow to begin with. This measures that directly: feed clean clips (the held-out truth
frames of test clips, or painted night and low-contrast scenes) and compare the output
with the input itself. Reported per clip: PSNR of output against input (dB; higher is
less change) and the relative change of mean luminance (Rec. 601 luma; 0 is none).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from semivdn.inference import desnow_clip
from semivdn.models.vdn import VDN

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def harm_on_clip(model: VDN, clean: torch.Tensor, n_frames: int) -> dict[str, float]:
    """Desnow a snow-free clip (T, 3, H, W) in [0, 1]; how much did the model change it?"""
    restored = desnow_clip(model, clean, n_frames)
    mse = float(torch.mean((restored - clean) ** 2))
    luma_in, luma_out = float((clean * LUMA).sum(1).mean()), float((restored * LUMA).sum(1).mean())
    return {"psnr_vs_input_db": 10.0 * np.log10(1.0 / max(mse, 1e-12)),
            "luminance_change": (luma_out - luma_in) / max(luma_in, 1e-6)}


def harm(model: VDN, clips: Iterable[torch.Tensor], n_frames: int) -> dict[str, float]:
    """Over snow-free clips: the lowest and mean PSNR against the input, the largest luminance change."""
    scores = [harm_on_clip(model, clip, n_frames) for clip in clips]
    if not scores:
        raise ValueError("harm: no clips given")
    psnr = [s["psnr_vs_input_db"] for s in scores]
    change = [abs(s["luminance_change"]) for s in scores]
    return {"clips": len(scores), "min_psnr_vs_input_db": min(psnr), "mean_psnr_vs_input_db": float(np.mean(psnr)),
            "max_abs_luminance_change": max(change)}
