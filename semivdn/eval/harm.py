"""Do no harm: snow-free footage must come out of the model essentially unchanged.

A desnowing network that learned "snowy input → clean output" on hazy, snowy pairs can
also learn to always remove haze and brighten, darkening or tinting footage that had no
snow to begin with. This measures that directly: feed clean clips (the held-out truth
frames of test clips, or painted night and low-contrast scenes) and compare the output
with the input itself. Reported per clip: PSNR of output against input (dB; higher is
less change) and the relative change of mean luminance (Rec. 601 luma; 0 is none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from semivdn.data.procedural import KINDS, procedural_names
from semivdn.data.scenes import SPLIT_SCENES, render_clean_clip
from semivdn.eval.baselines import Method
from semivdn.snow_gate import luma

BAR = {"min_psnr_vs_input_db": 32.0, "max_abs_luminance_change": 0.02}  # issue 11: essentially unchanged
# first numbers of each split's painted snow-free scenes: apart from every range the data paints
# (semivdn.data.make.PROCEDURAL_START), so no model trained on them
UNSEEN_PROCEDURAL_START = {"train": 70_000, "val": 88_000, "test": 90_000}


def snow_free_clips(frames: int = 5, size: int = 96, split: str = "test") -> dict[str, torch.Tensor]:
    """Clean clips (T, 3, H, W) of ``split``: its photographs of both sets and painted scenes of its own.

    Two painted scenes of every kind (night and low-contrast variants among them), with the
    same slow camera moves the data uses, seeded by position so every call gives the same clips.
    ``val`` is for choosing a model; ``test`` for reporting it (never tune on those).
    """
    if split not in UNSEEN_PROCEDURAL_START:
        raise ValueError(f"snow_free_clips: split must be one of {list(UNSEEN_PROCEDURAL_START)}, got {split!r}")
    scenes = [*SPLIT_SCENES["paired"][split], *SPLIT_SCENES["real"][split],
              *procedural_names(KINDS, UNSEEN_PROCEDURAL_START[split], 2 * len(KINDS))]
    clips = {}
    for index, scene in enumerate(scenes):
        rendered = render_clean_clip(scene, frames, size, size, np.random.default_rng(index))
        clips[scene] = torch.from_numpy(rendered).permute(0, 3, 1, 2).contiguous()
    return clips


def meets_bar(summary: dict[str, float]) -> bool:
    """Does a :func:`harm` summary meet :data:`BAR`?"""
    return bool(summary["min_psnr_vs_input_db"] >= BAR["min_psnr_vs_input_db"]
                and summary["max_abs_luminance_change"] <= BAR["max_abs_luminance_change"])


def harm_on_clip(method: Method, clean: torch.Tensor) -> dict[str, float]:
    """Desnow a snow-free clip (T, 3, H, W) in [0, 1] with ``method``; how much did it change the clip?"""
    restored = method(clean)
    mse = float(torch.mean((restored - clean) ** 2))
    luma_in, luma_out = float(luma(clean).mean()), float(luma(restored).mean())
    return {"psnr_vs_input_db": float(10.0 * np.log10(1.0 / max(mse, 1e-12))),
            "luminance_change": (luma_out - luma_in) / max(luma_in, 1e-6)}


def harm(method: Method, clips: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Over named snow-free clips: the lowest PSNR against the input, the largest luminance change,
    whether they meet :data:`BAR`, and every clip's scores."""
    if not clips:
        raise ValueError("harm: no clips given")
    with torch.no_grad():
        per_clip = {name: harm_on_clip(method, clip) for name, clip in clips.items()}
    summary = {"clips": len(per_clip),
               "min_psnr_vs_input_db": min(s["psnr_vs_input_db"] for s in per_clip.values()),
               "mean_psnr_vs_input_db": float(np.mean([s["psnr_vs_input_db"] for s in per_clip.values()])),
               "max_abs_luminance_change": max(abs(s["luminance_change"]) for s in per_clip.values())}
    return {**summary, "bar": BAR, "meets_bar": meets_bar(summary), "per_clip": per_clip}
